"""kerasmtl.scalarization against torchjd 0.18.0's scalarizers: the same loss and the same
gradient with respect to the task losses (float64, within 1e-6 relative), on random losses
of 2 to 40 tasks, call after call for DWA and FAMO (the ``dwa`` and ``famo`` methods)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import torch
import torchjd.scalarization as tjs

from kerasmtl import methods, scalarization
from kerasmtl.aggregation import loss_level
from kerasmtl.weighting import TaskWeighting

TOL = 1e-6


def rel(value, reference):
    value, reference = np.asarray(value, np.float64), np.asarray(reference, np.float64)
    return np.linalg.norm(value - reference) / max(np.linalg.norm(reference), 1e-30)


def ours(name, losses, **kwargs):
    """``(loss, d loss / d losses)``."""
    values = tf.constant(losses, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(values)
        result = scalarization.scalarize(name, values, **kwargs)
    return result.numpy(), tape.gradient(result, values).numpy()


def theirs(scalarizer, losses):
    values = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
    loss = scalarizer(values)
    loss.backward()
    return loss.detach().numpy(), values.grad.numpy()


def check(name, losses, scalarizer, **kwargs):
    loss, grad = ours(name, losses, **kwargs)
    expected_loss, expected_grad = theirs(scalarizer, losses)
    assert rel(loss, expected_loss) < TOL and rel(grad, expected_grad) < TOL, name


def stateless(m, seed):
    rng = np.random.default_rng(seed)
    w, z = rng.dirichlet(np.ones(m)), rng.uniform(0.0, 0.1, m)
    tw, tz = torch.tensor(w), torch.tensor(z)
    return {
        "mean": ({}, tjs.Mean()),
        "sum": ({}, tjs.Sum()),
        "constant": ({"weights": w}, tjs.Constant(tw)),
        "geometric_mean": ({}, tjs.GeometricMean()),
        "stch": ({"mu": 0.1}, tjs.STCH(0.1)),
        "stch_weights_reference": ({"mu": 0.5, "weights": w, "reference": z}, tjs.STCH(0.5, tw, tz)),
        "pbi": ({"theta": 5.0, "weights": w}, tjs.PBI(5.0, tw)),
        "pbi_reference": ({"theta": 0.5, "weights": w, "reference": z}, tjs.PBI(0.5, tw, tz)),
        "cosmos": ({"lambda_": 2.0, "weights": w}, tjs.COSMOS(2.0, tw)),
    }


LABELS = sorted(stateless(2, 0))


@pytest.mark.parametrize("tasks", [2, 3, 5, 12, 40])
@pytest.mark.parametrize("label", LABELS)
def test_stateless_scalarizations_match_torchjd_in_value_and_gradient(label, tasks):
    rng = np.random.default_rng(tasks)
    for losses in (rng.uniform(0.2, 5.0, tasks), np.full(tasks, 1.3), np.linspace(0.1, 40.0, tasks)):
        options, reference = stateless(tasks, tasks)[label]
        check(label.split("_weights")[0].split("_reference")[0], losses, reference, **options)


def test_random_weights_are_a_softmax_of_normals():
    losses = np.array([1.0, 2.0, 4.0])
    draws = [scalarization.scalarize("random", losses, seed=s) for s in range(400)]
    # E[sum softmax(z)_i L_i] = mean(L) by symmetry; torchjd's draws give the same mean
    torch.manual_seed(0)
    reference = [float(tjs.Random()(torch.tensor(losses))) for _ in range(400)]
    assert abs(np.mean(draws) - 7 / 3) < 0.1 and abs(np.mean(draws) - np.mean(reference)) < 0.15
    assert scalarization.scalarize("random", losses, seed=3) == scalarization.scalarize("random", losses, seed=3)
    assert all(1.0 < d < 4.0 for d in draws)


@pytest.mark.parametrize("name, parameter", [("imtl_l", "log_scale"), ("uw", "log_var")])
def test_learned_scalarizations_match_torchjd_with_their_parameters(name, parameter):
    rng = np.random.default_rng(4)
    for tasks in (2, 7, 40):
        losses, s = rng.uniform(0.1, 3.0, tasks), rng.normal(size=tasks)
        reference = tjs.IMTLL(tasks) if name == "imtl_l" else tjs.UW(tasks)
        with torch.no_grad():
            getattr(reference, parameter).copy_(torch.tensor(s))
        variable = tf.Variable(s)
        values = tf.constant(losses)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(values)
            loss = scalarization.scalarize(name, values, state={parameter: variable})
        expected_loss, expected_grad = theirs(reference, losses)
        assert rel(loss, expected_loss) < TOL and rel(tape.gradient(loss, values), expected_grad) < TOL
        # the parameters' gradient too: what the optimizer trains them with
        assert rel(tape.gradient(loss, variable), getattr(reference, parameter).grad.numpy()) < TOL
    assert scalarization.scalarize(name, np.array([1.0, 2.0])) == 3.0 / (1 if name == "imtl_l" else 2)


@pytest.mark.parametrize("tasks", [2, 5, 40])
def test_dwa_matches_torchjd_over_four_epochs(tasks):
    """The ``dwa`` loss weighting: each batch's loss is ``sum_t w_t L_t`` with the epoch's
    weights (its gradient with respect to the losses is ``w``), and the epoch's mean task
    losses are what Keras logs as ``<task>_loss`` at its end."""
    rng = np.random.default_rng(tasks)
    reference, method = tjs.DWA(temperature=1.5), methods.DWA(temperature=1.5)
    names = [f"t{i}" for i in range(tasks)]
    weighting = TaskWeighting(names)
    for epoch in range(4):
        weights = np.array([method.weights_for_epoch(weighting, epoch)[n] for n in names], np.float64)
        seen = []
        for _ in range(3):
            losses = rng.uniform(0.5, 2.0, tasks) / (epoch + 1)
            expected_loss, expected_grad = theirs(reference, losses)
            assert rel(weights @ losses, expected_loss) < TOL and rel(weights, expected_grad) < TOL, epoch
            seen.append(losses)
        reference.step()
        method.end_epoch(weighting, epoch, dict(zip([f"{n}_loss" for n in names], np.mean(seen, axis=0))))
    assert weighting.dwa_epochs.numpy().tolist() == [2, 3]


@pytest.mark.parametrize("tasks", [2, 5, 40])
def test_famo_matches_torchjd_over_ten_steps(tasks):
    """The ``famo`` gradient method (`kerasmtl.aggregation.loss_level`): its factors of the
    task losses are the gradient of torchjd's FAMO loss with respect to them, and its update
    of the logits is torchjd's; torchjd's lower bounds ``min_losses`` are subtracted from
    the losses given to ours."""
    rng = np.random.default_rng(tasks)
    bounds = rng.uniform(0.0, 0.05, tasks)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torchjd's logits in float64, as ours (float32 by default)
    try:
        reference = tjs.FAMO(tasks, min_losses=torch.tensor(bounds), lr=0.1, weight_decay=1e-2)
    finally:
        torch.set_default_dtype(default)
    state, present = loss_level.initial_state("famo", tasks), np.ones(tasks, bool)
    for step in range(10):
        losses = rng.uniform(0.5, 2.0, tasks)
        _, expected_grad = theirs(reference, losses)
        grad = loss_level.famo_weights(losses - bounds, present, state["logits"])
        assert rel(grad, expected_grad) < TOL, step
        after = losses * rng.uniform(0.5, 1.1, tasks)
        reference.update(torch.tensor(after))
        state = loss_level.famo_update(losses - bounds, after - bounds, present, state, lr=0.1, weight_decay=1e-2)
        if step == 5:  # through NumPy, as a checkpoint keeps it
            state = {k: np.asarray(v) for k, v in state.items()}
        assert rel(state["logits"], reference._w.detach().numpy()) < TOL, step


def test_absent_tasks_are_left_out():
    losses = np.array([1.0, 50.0, 2.0, 3.0])
    present = np.array([True, False, True, True])
    for label, (options, reference) in stateless(3, 0).items():
        # the absent task's entries of the vectors hold junk: they do not count either
        options = {k: np.insert(np.asarray(v), 1, 9.0) if k in ("weights", "reference") else v for k, v in options.items()}
        loss, grad = ours(label.split("_weights")[0].split("_reference")[0], losses, present=present, **options)
        expected_loss, expected_grad = theirs(reference, losses[present])
        assert rel(loss, expected_loss) < TOL and rel(grad[present], expected_grad) < TOL and grad[1] == 0.0, label
    w = np.array([0.1, 0.5, 0.2, 0.2])
    assert scalarization.scalarize("constant", losses, present=present, weights=w) == pytest.approx(0.1 + 0.4 + 0.6)


def test_bad_input_names_the_rule_and_the_value():
    with pytest.raises(ValueError, match=r"Known: mean, sum, .*uw\. Received: name='avg'"):
        scalarization.scalarize("avg", [1.0, 2.0])
    with pytest.raises(ValueError, match=r"stch needs mu\. Received: mu=None"):
        scalarization.scalarize("stch", [1.0, 2.0])
    with pytest.raises(ValueError, match=r"weights must be a vector with one entry per task \(2\)\. Received: shape=\(3,\)"):
        scalarization.scalarize("pbi", [1.0, 2.0], theta=1.0, weights=[1.0, 1.0, 1.0])
    with pytest.raises(TypeError, match=r"mean has the options none\. Received: mu"):
        scalarization.scalarize("mean", [1.0, 2.0], mu=1.0)
    with pytest.raises(ValueError, match=r"losses must be a \(tasks,\) vector\. Received: shape=\(2, 2\)"):
        scalarization.scalarize("sum", np.ones((2, 2)))


def test_geometric_mean_is_libmtls_gls():
    # LibMTL's GLS: loss = prod(L) ** (1 / m); its gradient, written out: loss / (m L_i)
    losses = np.array([0.3, 1.7, 2.5, 0.9])
    expected = np.prod(losses) ** (1 / 4)
    loss, grad = ours("geometric_mean", losses)
    assert rel(loss, expected) < 1e-12 and rel(grad, expected / (4 * losses)) < 1e-12
