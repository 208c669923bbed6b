"""The aggregators and weightings added in torchjd 0.18.0 (TrimmedMean, Krum, Constant,
PCD, MoDo, SDMGrad, ExcessMTL, CR-MOGM) against torchjd itself, run in float64 on the same
matrices: deterministic ones within 1e-6 relative on random Jacobians of 2 to 40 tasks and
on parallel, opposite and zero rows; stateful ones call after call, over 10 calls, the
state going through NumPy (as a checkpoint keeps it) half way.

The file runs on every Keras backend: ``make test-backends`` runs it with
``KERAS_BACKEND=jax`` (``JAX_ENABLE_X64=1``: float64) and ``KERAS_BACKEND=torch``."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
import torchjd.aggregation as tja

from kerasmtl import aggregation

TOL = 1e-6


def rel(value, reference):
    value, reference = np.asarray(value, np.float64), np.asarray(reference, np.float64)
    return np.linalg.norm(value - reference) / max(np.linalg.norm(reference), 1e-30)


def random_jacobian(tasks, dims, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(tasks, dims)) * rng.uniform(0.1, 10.0, size=(tasks, 1))


def special(kind):
    g, h, k, l_ = np.random.default_rng(7).normal(size=(4, 12))
    return {
        "parallel": np.stack([g, 2.0 * g, 0.5 * g, 3.0 * g, 1.5 * g]),
        "opposite": np.stack([g, -g, h, -h, k]),
        "zero_rows": np.stack([g, np.zeros_like(g), h, k, np.zeros_like(g)]),
        "conflicting": np.stack([g, -0.6 * g + 0.5 * h, -0.4 * g - 0.7 * h + 0.2 * k, l_, -l_ + 0.1 * g]),
    }[kind]


SIZES = [(2, 5), (3, 10), (5, 3), (8, 50), (20, 100), (40, 300)]
CASES = {f"random_{m}x{n}": random_jacobian(m, n, m) for m, n in SIZES}
CASES |= {kind: special(kind) for kind in ("parallel", "opposite", "zero_rows", "conflicting")}


def t(array):
    return torch.tensor(np.asarray(array, np.float64))


# ------------------------------------------------------------------ stateless
def stateless(name, m):
    """``(options, torchjd aggregator)`` of a stateless method for ``m`` tasks, or None
    where torchjd refuses that many tasks."""
    weights = np.linspace(0.2, 1.4, m)
    if name == "constant":
        return {"weights": weights}, tja.Constant(t(weights))
    if name == "trimmed_mean":
        trim = min(2, (m - 1) // 2)
        return {"trim_number": trim}, tja.TrimmedMean(trim)
    if name == "krum":
        if m < 3:
            return None
        byzantine, selected = min(1, m - 3), min(2, m)
        return {"n_byzantine": byzantine, "n_selected": selected}, tja.Krum(byzantine, selected)
    raise ValueError(name)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", ["constant", "trimmed_mean", "krum"])
def test_stateless_aggregators_match_torchjd(name, case):
    jacobian = CASES[case]
    made = stateless(name, len(jacobian))
    if made is None:
        pytest.skip("torchjd's Krum needs at least 3 tasks")
    options, reference = made
    expected = reference(t(jacobian)).numpy()
    assert rel(aggregation.aggregate(name, jacobian, **options), expected) < TOL
    assert rel(aggregation.aggregate(name, jacobian.astype(np.float32), **options), expected) < 1e-5


def test_krum_and_constant_weights_match_torchjd_weightings():
    jacobian = CASES["random_8x50"]
    gramian = jacobian @ jacobian.T
    expected = tja.KrumWeighting(2, 3)(t(gramian)).numpy()
    assert np.array_equal(aggregation.weights("krum", gramian, n_byzantine=2, n_selected=3), expected)
    weights = np.arange(8.0)
    assert np.array_equal(aggregation.weights("constant", gramian, weights=weights), weights)


# ------------------------------------------------------------------- stateful
STATEFUL = {
    "pcd": lambda m: ({}, tja.PCDWeighting()),
    "pcd_tau_vector": lambda m: ({"tau": np.linspace(0.0, 0.5, m - 1)}, tja.PCDWeighting(tau=t(np.linspace(0.0, 0.5, m - 1)))),
    "modo": lambda m: ({"gamma": 0.05, "rho": 0.2}, tja.MoDoWeighting(gamma=0.05, rho=0.2)),
    "sdmgrad": lambda m: ({}, tja.SDMGradWeighting()),
    "sdmgrad_pref": lambda m: ({"lr": 1.0, "lambda_": 0.5, "pref_vector": np.linspace(1, 2, m) / m},
                               tja.SDMGradWeighting(lr=1.0, lambda_=0.5, pref_vector=t(np.linspace(1, 2, m) / m))),
    "excess_mtl": lambda m: ({}, tja.ExcessMTLWeighting()),
    "excess_mtl_warmup": lambda m: ({"robust_step_size": 0.3, "n_warmup_steps": 3}, tja.ExcessMTLWeighting(0.3, 3)),
    "cr_mogm_upgrad": lambda m: ({"weighting": "upgrad"}, tja.CRMOGMWeighting(tja.UPGradWeighting())),
    "cr_mogm_mgda_initial": lambda m: ({"weighting": "mgda", "alpha": 0.7, "initial_weights": np.full(m, 1 / m)},
                                       tja.CRMOGMWeighting(tja.MGDAWeighting(), 0.7, t(np.full(m, 1 / m)))),
    "cr_mogm_modo": lambda m: ({"weighting": ["modo", {"gamma": 0.2}]}, tja.CRMOGMWeighting(tja.MoDoWeighting(gamma=0.2))),
}


def torchjd_is_stable(make, matrices):
    """Whether torchjd's own outputs move by less than 1e-9 when the inputs are perturbed
    by 1e-15 relative: SDMGrad's inner solver (lr 10, momentum) is chaotic on many tasks,
    and no implementation can match another there."""
    a, b = make(), make()
    return all(rel(a(t(x)).numpy(), b(t(x * (1 + 1e-15))).numpy()) < 1e-9 for x in matrices)


SLOW = pytest.mark.slow  # eager TensorFlow loops: about 2 s for each ten calls


@pytest.mark.parametrize("size", [pytest.param((2, 5), marks=SLOW), (5, 20), pytest.param((12, 40), marks=SLOW),
                                  pytest.param((40, 300), marks=SLOW)])
@pytest.mark.parametrize("label", sorted(STATEFUL))
def test_stateful_weightings_match_torchjd_over_ten_calls(label, size):
    m, n = size
    name = label.split("_")[0] if not label.startswith("excess") else "excess_mtl"
    name = "cr_mogm" if label.startswith("cr_mogm") else name
    options, reference = STATEFUL[label](m)
    jacobians = [random_jacobian(m, n, 100 * m + step) for step in range(10)]
    jacobians[4][m // 2] = -jacobians[4][0]  # an opposite pair
    jacobians[6][-1] = 0.0  # a zero row
    uses_jacobian = name == "excess_mtl"
    matrices = [j if uses_jacobian else j @ j.T for j in jacobians]
    if name == "sdmgrad" and not torchjd_is_stable(lambda: STATEFUL[label](m)[1], matrices):
        pytest.skip("torchjd's SDMGrad is chaotic here (1e-15 input changes move it by more than 1e-9)")
    state = None
    for step, matrix in enumerate(matrices):
        if step == 5:
            state = {key: np.array(value) for key, value in state.items()}
        got, state = aggregation.weights(name, matrix, state=state, **options)
        expected = reference(t(matrix)).numpy()
        assert rel(got, expected) < TOL, step


def test_stateful_aggregators_give_torchjds_directions():
    jacobians = [random_jacobian(4, 9, seed) for seed in range(10)]
    for name, reference in [("pcd", tja.PCD()), ("excess_mtl", tja.ExcessMTL())]:
        state = None
        for jacobian in jacobians:
            got, state = aggregation.aggregate(name, jacobian, state=state)
            assert rel(got, reference(t(jacobian)).numpy()) < TOL, name


def test_pcd_special_cases_follow_torchjd():
    g, h = np.random.default_rng(3).normal(size=(2, 6))
    infeasible = np.stack([g, h, -h])  # opposite secondaries with tau = 1: g_1 itself
    got, _ = aggregation.aggregate("pcd", infeasible, tau=1.0)
    assert rel(got, tja.PCD(tau=1.0)(t(infeasible)).numpy()) < TOL and rel(got, g) < TOL
    zero_primary = np.stack([np.zeros(6), g, h])
    got, _ = aggregation.aggregate("pcd", zero_primary)
    assert not np.any(got) and not np.any(tja.PCD()(t(zero_primary)).numpy())
    state = aggregation.initial_state("pcd", 3)
    nan, kept = aggregation.weights("pcd", np.full((3, 3), np.nan), state=state)
    assert np.isnan(nan).all() and not np.any(kept["steps"])  # the moving average is left alone


# --------------------------------------------------------------- missing tasks
def test_absent_tasks_are_left_out_of_the_new_methods():
    jacobian = random_jacobian(6, 11, 5)
    present = np.array([True, True, False, True, True, True])
    junk = jacobian.copy()
    junk[2] = 1e3
    rest = jacobian[present]
    for name, options, reference in [
        ("trimmed_mean", {"trim_number": 1}, tja.TrimmedMean(1)),
        ("krum", {"n_byzantine": 1, "n_selected": 2}, tja.Krum(1, 2)),
        ("pcd", {}, tja.PCD()),
        ("excess_mtl", {}, tja.ExcessMTL()),
    ]:
        got = aggregation.aggregate(name, junk, present=present, **options)
        got = got[0] if name in aggregation.STATEFUL else got
        assert rel(got, reference(t(rest)).numpy()) < TOL, name
    gramian = junk @ junk.T
    for name in ("krum", "constant", "modo", "sdmgrad", "cr_mogm"):
        options = {"krum": {"n_byzantine": 1}, "constant": {"weights": np.ones(6)}}.get(name, {})
        w = aggregation.weights(name, gramian, present=present, **options)
        w, state = w if name in aggregation.STATEFUL else (w, None)
        assert w[2] == 0.0, name
        if name in ("modo", "sdmgrad"):  # the absent task keeps its weight for later
            assert state["weights"][2] == 1 / 6 and np.isclose(w.sum(), 1.0)


def test_absent_primary_task_hands_pcd_to_the_next_one():
    jacobian = random_jacobian(4, 7, 2)
    present = np.array([False, True, True, True])
    got, state = aggregation.aggregate("pcd", jacobian, present=present)
    assert rel(got, tja.PCD()(t(jacobian[1:])).numpy()) < TOL
    assert list(state["steps"]) == [0, 1, 1, 1]


def test_too_few_present_tasks_trim_and_select_fewer():
    jacobian = random_jacobian(5, 4, 1)
    present = np.array([True, False, True, False, False])
    # two tasks left: nothing can be trimmed (their mean), and Krum picks among them
    got = aggregation.aggregate("trimmed_mean", jacobian, present=present, trim_number=2)
    assert rel(got, jacobian[present].mean(axis=0)) < TOL
    w = aggregation.weights("krum", jacobian @ jacobian.T, present=present, n_byzantine=1, n_selected=3)
    assert np.isclose(w.sum(), 1.0) and not w[~present].any()


# ------------------------------------------------------------ graph, options
@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.function and XLA: TensorFlow's")
def test_new_methods_run_in_a_graph_and_under_xla():
    import tensorflow as tf

    jacobian = tf.constant(random_jacobian(5, 6, 1), tf.float32)
    present = tf.constant([True, True, False, True, True])
    options = {"trimmed_mean": {"trim_number": 1}, "krum": {"n_byzantine": 1}, "constant": {"weights": [1.0] * 5},
               "cr_mogm": {"weighting": "dualproj"}}
    for name in ("trimmed_mean", "krum", "constant", "modo", "sdmgrad", "cr_mogm", "excess_mtl", "pcd"):
        kwargs = options.get(name, {})
        state = aggregation.initial_state(name, 5, 6, tf.float32, **kwargs) if name in aggregation.STATEFUL else None

        def step(j, present, state, name=name, kwargs=kwargs):
            return aggregation.aggregate(name, j, present=present, state=state, **kwargs)

        eager = step(jacobian, present, state)
        for jit in (False, True) if name not in aggregation.HOST else (False,):
            graph = tf.function(step, jit_compile=jit)(jacobian, present, state)
            if name in aggregation.STATEFUL:
                assert rel(graph[1]["steps" if "steps" in graph[1] else sorted(graph[1])[0]],
                           eager[1]["steps" if "steps" in eager[1] else sorted(eager[1])[0]]) < 1e-6, name
                graph, eager_direction = graph[0], eager[0]
            else:
                eager_direction = eager
            assert rel(graph, eager_direction) < 1e-5, (name, jit)


def test_bad_options_name_the_rule_and_the_value():
    jacobian = random_jacobian(3, 4, 0)
    with pytest.raises(ValueError, match=r"needs at least 5 tasks\. Received: 3 tasks"):
        aggregation.aggregate("trimmed_mean", jacobian, trim_number=2)
    with pytest.raises(ValueError, match=r"n_byzantine must be a non-negative integer\. Received: n_byzantine=None"):
        aggregation.aggregate("krum", jacobian)
    with pytest.raises(ValueError, match=r"weights must be a vector with one entry per task \(3\)"):
        aggregation.aggregate("constant", jacobian, weights=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"cr_mogm's weighting must be .* Received: weighting='graddrop'"):
        aggregation.aggregate("cr_mogm", jacobian, weighting="graddrop")
    with pytest.raises(ValueError, match=r"pcd needs tau in \[0, 1\].* Received: tau=2"):
        aggregation.aggregate("pcd", jacobian, tau=2)
    with pytest.raises(ValueError, match=r"tau must be a number or a vector with one entry per secondary task \(2\)"):
        aggregation.aggregate("pcd", jacobian, tau=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"sdmgrad needs lr > 0.* Received: lr=0"):
        aggregation.aggregate("sdmgrad", jacobian, lr=0)
    with pytest.raises(TypeError, match=r"modo has the options \['gamma', 'rho'\]\. Received: lr"):
        aggregation.aggregate("modo", jacobian, lr=1.0)
