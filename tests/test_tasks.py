import numpy as np
import pytest

from kerasmtl.tasks import MISSING_CLASS, Task


def test_binary_encoding_accepts_names_numbers_and_plus_minus_one():
    task = Task("smiling", "binary", ("no", "yes"))
    encoded = task.encode(["yes", "no", 1, 0, -1, True, None, ""])
    assert encoded.shape == (8, 1)
    assert encoded.reshape(-1).tolist() == [1, 0, 1, 0, 0, 1, MISSING_CLASS, MISSING_CLASS]


def test_multiclass_encoding_follows_class_order_and_marks_missing():
    task = Task("age", "multiclass", ("young", "middle", "old"))
    encoded = task.encode(["old", "young", float("nan"), "middle"])
    assert encoded.dtype == np.int32
    assert encoded.tolist() == [2, 0, MISSING_CLASS, 1]


def test_unknown_label_names_row_column_and_classes():
    task = Task("age", "multiclass", ("young", "old"))
    with pytest.raises(ValueError, match=r"data.csv row 1: label 'ancient' in column 'age'.*\['young', 'old'\]"):
        task.encode(["young", "ancient"], where="data.csv")


def test_regression_shape_is_checked():
    task = Task("landmarks", "regression", columns=[f"c{i}" for i in range(4)])
    assert task.encode(np.zeros((3, 4))).shape == (3, 4)
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        task.encode(np.zeros((3, 5)))


def test_decode_inverts_encode_for_classification():
    task = Task("age", "multiclass", ("young", "middle", "old"))
    one_hot = np.eye(3)[[2, 0, 1]]
    assert task.decode(one_hot) == ["old", "young", "middle"]
    binary = Task("smiling", "binary", ("no", "yes"), from_logits=True)
    assert binary.decode(np.array([[-2.0], [0.5]])) == ["no", "yes"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="x", kind="ternary"), "kind must be one of"),
        (dict(name="x", kind="binary", classes=("a", "b", "c")), "exactly 2 class names"),
        (dict(name="x", kind="multiclass", classes=("a",)), "at least 2 class names"),
        (dict(name="x", kind="multiclass", classes=("a", "a")), "unique"),
        (dict(name="x", kind="multiclass", classes=("a", "b"), loss="mse"), "binary tasks only"),
    ],
)
def test_inconsistent_descriptions_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Task(**kwargs)


def test_to_dict_round_trip(mixed_tasks):
    for task in mixed_tasks:
        assert Task.from_dict(task.to_dict()) == task


def test_mse_binary_task_has_a_linear_output_read_at_zero():
    task = Task("smiling", "binary", ("no", "yes"), loss="mse")
    assert task.activation == "linear" and task.threshold == 0.0
    assert task.decode(np.array([[-0.9], [0.2]])) == ["no", "yes"]


def test_regression_empty_cells_are_missing_and_text_is_refused():
    task = Task("landmarks", "regression", columns=["x", "y"])
    encoded = task.encode([[0.5, ""], [None, 0.25]])
    assert np.isnan(encoded[0, 1]) and np.isnan(encoded[1, 0]) and encoded[0, 0] == 0.5
    with pytest.raises(ValueError, match="expects numbers"):
        task.encode([["left", 0.1]])
