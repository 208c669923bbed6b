"""kerasmtl.aggregation against torchjd 0.18.0, the reference implementation.

Each deterministic method is compared with torchjd (run in float64 on the same float32
Jacobians) within 1e-4 relative on random Jacobians of several sizes and on conflicting,
parallel, opposite and zero-norm rows. The random methods are checked through their
distribution: the outcomes torchjd gives for every visiting order (``torch.randperm``
patched), or frequencies and invariants written out here. ``make test-slow`` adds the
larger sizes (up to 40 tasks).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf
import torch
import torchjd.aggregation as tja

from kerasmtl import aggregation

TOL = 1e-4
# torchjd's Nash-MTL program, once per call; CLARABEL at 1e-12 on the largest CAGrad problems
pytestmark = [
    pytest.mark.filterwarnings("ignore:You are solving a parameterized problem"),
    pytest.mark.filterwarnings("ignore:Solution may be inaccurate"),
]


def rel(value, reference):
    value, reference = np.asarray(value, np.float64), np.asarray(reference, np.float64)
    return np.linalg.norm(value - reference) / max(np.linalg.norm(reference), 1e-30)


def random_jacobian(tasks, dims, seed):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(tasks, dims)) * rng.uniform(0.1, 10.0, size=(tasks, 1))).astype(np.float32)


def special(kind):
    rng = np.random.default_rng(7)
    g, h, k = rng.normal(size=(3, 12)).astype(np.float32)
    if kind == "conflicting":  # pairwise negative inner products
        return np.stack([g, -0.6 * g + 0.5 * h, -0.4 * g - 0.7 * h + 0.2 * k])
    if kind == "parallel":
        return np.stack([g, 2.0 * g, 0.5 * g])
    if kind == "opposite":
        return np.stack([g, -g, h])
    if kind == "zero_row":
        return np.stack([g, np.zeros_like(g), h, k])
    raise ValueError(kind)


FAST_CASES = {"random_3x10": random_jacobian(3, 10, 0), "random_5x3": random_jacobian(5, 3, 1)}
FAST_CASES |= {kind: special(kind) for kind in ("conflicting", "parallel", "opposite", "zero_row")}
SLOW_CASES = {
    f"random_{m}x{n}_{s}": random_jacobian(m, n, s) for m, n in [(2, 5), (8, 50), (20, 100), (40, 300)] for s in (2, 3)
}

REFERENCES = {
    "mean": lambda m: tja.Mean(),
    "sum": lambda m: tja.Sum(),
    "mgda": lambda m: tja.MGDA(),
    "imtl_g": lambda m: tja.IMTLG(),
    "aligned_mtl": lambda m: tja.AlignedMTL(),
    "upgrad": lambda m: tja.UPGrad(),
    "dualproj": lambda m: tja.DualProj(),
    "config": lambda m: tja.ConFIG(),
    "fairgrad": lambda m: tja.FairGrad(alpha=1.0),
}


def torchjd(aggregator, jacobian):
    return aggregator(torch.tensor(np.asarray(jacobian, np.float64))).numpy()


def check_against_torchjd(name, jacobian):
    expected = torchjd(REFERENCES[name](len(jacobian)), jacobian)
    assert rel(aggregation.aggregate(name, jacobian), expected) < TOL


@pytest.mark.parametrize("case", sorted(FAST_CASES))
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_deterministic_methods_match_torchjd(name, case):
    check_against_torchjd(name, FAST_CASES[case])


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(SLOW_CASES))
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_deterministic_methods_match_torchjd_up_to_40_tasks(name, case):
    check_against_torchjd(name, SLOW_CASES[case])


def test_weights_from_the_gramian_match_torchjd_weightings():
    jacobian = random_jacobian(4, 9, 5).astype(np.float64)
    gramian = jacobian @ jacobian.T
    weightings = {
        "mgda": tja.MGDAWeighting(),
        "upgrad": tja.UPGradWeighting(),
        "dualproj": tja.DualProjWeighting(),
        "imtl_g": tja.IMTLGWeighting(),
        "aligned_mtl": tja.AlignedMTLWeighting(scale_mode="median"),
        "cagrad": tja.CAGradWeighting(c=0.5),
    }
    for name, weighting in weightings.items():
        options = {"scale_mode": "median"} if name == "aligned_mtl" else {}
        expected = weighting(torch.tensor(gramian)).numpy()
        got = aggregation.weights(name, gramian, **options)
        assert got.shape == (4,) and rel(got, expected) < TOL, name
    # options reach the method: a preference vector changes UPGrad as it does in torchjd
    pref = np.array([0.1, 0.2, 0.3, 0.4])
    expected = tja.UPGradWeighting(pref_vector=torch.tensor(pref))(torch.tensor(gramian)).numpy()
    assert rel(aggregation.weights("upgrad", gramian, pref_vector=pref), expected) < TOL


def test_upgrad_never_increases_a_task_loss_to_first_order():
    # the defining property, written out: every row has a non-negative inner product with
    # the direction (up to the reg_eps regularisation), here on strongly conflicting rows
    jacobian = special("conflicting").astype(np.float64)
    direction = aggregation.aggregate("upgrad", jacobian)
    assert (jacobian @ direction >= -1e-4 * np.linalg.norm(jacobian) * np.linalg.norm(direction)).all()
    assert (jacobian @ np.mean(jacobian, axis=0) < 0).any()  # the mean does increase one


# --------------------------------------------------------------------------- CAGrad
@pytest.fixture()
def tight_cvxpy(monkeypatch):
    """torchjd's CAGrad program solved with CLARABEL's tolerances at 1e-12 instead of 1e-8."""
    import cvxpy as cp

    solve = cp.Problem.solve

    def tight(self, *args, **kwargs):
        return solve(self, *args, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12, **kwargs)

    monkeypatch.setattr(cp.Problem, "solve", tight)


def check_cagrad(jacobian, tight_reference):
    got = aggregation.aggregate("cagrad", jacobian, c=0.5)
    assert rel(got, tight_reference) < TOL


@pytest.mark.parametrize("case", ["random_3x10", "conflicting", "parallel", "zero_row"])
def test_cagrad_matches_torchjd_program(case, tight_cvxpy):
    jacobian = FAST_CASES[case]
    check_cagrad(jacobian, torchjd(tja.CAGrad(c=0.5), jacobian))


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(SLOW_CASES))
def test_cagrad_is_near_torchjd_with_its_default_tolerances_up_to_40_tasks(case):
    jacobian = SLOW_CASES[case]
    # only as near as CLARABEL's default 1e-8 gap lets torchjd's own solution be
    loose = torchjd(tja.CAGrad(c=0.5), jacobian)
    assert rel(aggregation.aggregate("cagrad", jacobian), loose) < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(SLOW_CASES))
def test_cagrad_matches_tightly_solved_torchjd_program_up_to_40_tasks(case, tight_cvxpy):
    jacobian = SLOW_CASES[case]
    check_cagrad(jacobian, torchjd(tja.CAGrad(c=0.5), jacobian))


def test_cagrad_with_c_zero_is_the_mean():
    jacobian = random_jacobian(4, 6, 3)
    assert rel(aggregation.aggregate("cagrad", jacobian, c=0.0), jacobian.astype(np.float64).mean(axis=0)) < TOL


# ------------------------------------------------------------------------- Nash-MTL
def bargaining_residual(jacobian, direction):
    """``max |alpha_i (G alpha)_i - 1|`` for the weights ``alpha`` of ``direction``."""
    jacobian = jacobian.astype(np.float64)
    alpha = np.linalg.lstsq(jacobian.T, np.asarray(direction, np.float64), rcond=None)[0]
    return np.abs(alpha * (jacobian @ jacobian.T @ alpha) - 1.0).max()


@pytest.mark.parametrize("shape,seed", [((2, 5), 0), ((3, 10), 2), ((5, 20), 4), ((8, 50), 3)])
def test_nash_mtl_matches_torchjd_where_torchjd_converges(shape, seed):
    # torchjd's 20 convex programs do not always reach the solution (its residual is then
    # large); these seeds are ones where they do
    jacobian = random_jacobian(*shape, seed)
    expected = torchjd(tja.NashMTL(n_tasks=shape[0], max_norm=0.0), jacobian)
    assert bargaining_residual(jacobian, expected) < 1e-4  # the reference did converge
    got, state = aggregation.aggregate("nash_mtl", jacobian, max_norm=0.0)
    assert rel(got, expected) < TOL
    assert bargaining_residual(jacobian, got) < 1e-6
    assert int(state["step"]) == 1
    # default max_norm=1 clips the direction's norm to 1, as torchjd does
    clipped, _ = aggregation.aggregate("nash_mtl", jacobian)
    assert rel(clipped, torchjd(tja.NashMTL(n_tasks=shape[0]), jacobian)) < TOL


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(SLOW_CASES))
def test_nash_mtl_solves_the_bargaining_equation_up_to_40_tasks(case):
    jacobian = SLOW_CASES[case]
    got, _ = aggregation.aggregate("nash_mtl", jacobian, max_norm=0.0)
    assert bargaining_residual(jacobian, got) < 1e-6


def test_nash_mtl_state_reuses_weights_and_survives_a_resume():
    first, second = random_jacobian(3, 10, 4), random_jacobian(3, 10, 5)
    out1, state = aggregation.aggregate("nash_mtl", first, max_norm=0.0, update_weights_every=2)
    saved = {key: np.asarray(value) for key, value in state.items()}  # what a checkpoint keeps
    out2, state2 = aggregation.aggregate("nash_mtl", second, state=saved, max_norm=0.0, update_weights_every=2)
    # the second call reuses the first call's weights on the new Jacobian, as torchjd does
    reference = tja.NashMTL(n_tasks=3, max_norm=0.0, update_weights_every=2)
    torchjd(reference, first)
    assert rel(out2, torchjd(reference, second)) < TOL
    alpha = np.linalg.lstsq(first.T.astype(np.float64), out1, rcond=None)[0]
    assert rel(out2, alpha @ second.astype(np.float64)) < TOL
    assert int(state2["step"]) == 2


# ------------------------------------------------------------------- PCGrad, GradVac
def outcomes_with_orders(make, jacobian, orders_per_call):
    """torchjd's results for every combination of the visiting orders ``torch.randperm`` may
    return (patched to return them in turn)."""
    results = []
    for combination in itertools.product(*orders_per_call):
        queue = [torch.tensor(order) for order in combination]
        original = torch.randperm
        torch.randperm = lambda *args, queue=queue, **kwargs: queue.pop(0)
        try:
            results.append(torchjd(make(), jacobian))
        finally:
            torch.randperm = original
    return np.array(results)


def test_pcgrad_with_two_tasks_matches_torchjd():
    for case in ("random_3x10", "conflicting", "opposite", "zero_row"):
        jacobian = FAST_CASES[case][:2]
        assert rel(aggregation.aggregate("pcgrad", jacobian), torchjd(tja.PCGrad(), jacobian)) < TOL, case


def test_pcgrad_with_three_tasks_draws_each_visiting_order_equally_often():
    jacobian = special("conflicting")
    # torchjd draws a permutation of all three tasks for each task i (i itself is skipped)
    perms = list(itertools.permutations(range(3)))
    outcomes = np.unique(np.round(outcomes_with_orders(tja.PCGrad, jacobian, [perms] * 3), 5), axis=0)
    assert len(outcomes) == 8  # 2 orders of the other two tasks, for each of the 3 tasks
    draw = tf.function(lambda j, seed: aggregation.aggregate("pcgrad", j, seed=seed))
    counts = np.zeros(len(outcomes))
    for seed in range(240):
        direction = draw(tf.constant(jacobian), tf.constant([seed, 1], tf.int64)).numpy()
        match = [rel(direction, outcome) < TOL for outcome in outcomes]
        assert sum(match) == 1
        counts[np.argmax(match)] += 1
    assert np.all(np.abs(counts / 240 - 1 / 8) < 0.09), counts  # 4 standard deviations


def test_gradvac_state_matches_torchjd_over_steps_and_resumes():
    jacobians = [random_jacobian(2, 6, seed) for seed in range(4)]
    jacobians[1][1] = -jacobians[1][0] + 0.1 * jacobians[1][1]  # a conflicting step
    reference = tja.GradVac(beta=0.5)
    state = aggregation.initial_state("gradvac", 2)
    for step, jacobian in enumerate(jacobians):
        if step == 2:  # a resume: the state goes through NumPy, as a checkpoint would
            state = {key: np.array(value) for key, value in state.items()}
        got, state = aggregation.aggregate("gradvac", jacobian, state=state, beta=0.5)
        assert rel(got, torchjd(reference, jacobian)) < TOL, step
    assert np.allclose(np.asarray(state["phi_hat"]), reference.gramian_weighting._phi_t.numpy(), atol=1e-6)


def test_gradvac_with_three_tasks_gives_one_of_torchjds_outcomes():
    jacobian = special("conflicting")
    state = {"phi_hat": np.full((3, 3), 0.5)}  # targets above the current cosines: corrections happen

    def make():
        reference = tja.GradVac()
        reference.gramian_weighting._ensure_state(3, torch.float64)
        reference.gramian_weighting._phi_t.fill_(0.5)
        return reference

    orders = [[0, 1], [1, 0]]  # torchjd permutes the two other tasks, for each task
    outcomes = outcomes_with_orders(make, jacobian, [orders] * 3)
    seen = set()
    for seed in range(24):
        direction, _ = aggregation.aggregate("gradvac", jacobian, state=state, seed=seed)
        match = [rel(direction, outcome) < TOL for outcome in outcomes]
        assert any(match)
        seen.add(int(np.argmax(match)))
    assert len(seen) >= 4


# ----------------------------------------------------------------- random, graddrop
def test_random_weights_are_softmax_of_standard_normals():
    gramian = np.eye(4)
    draws = np.array([aggregation.weights("random", gramian, seed=seed) for seed in range(300)])
    assert np.allclose(draws.sum(axis=1), 1.0) and (draws > 0).all()
    logits = np.log(draws)
    differences = logits[:, 0] - logits[:, 1]  # z_0 - z_1 ~ N(0, 2)
    assert abs(differences.mean()) < 0.3 and 1.5 < differences.var() < 2.6
    assert np.allclose(draws.mean(axis=0), 0.25, atol=0.04)  # torchjd's expectation, by symmetry
    torch.manual_seed(0)
    reference = np.array([tja.RandomWeighting()(torch.zeros(4, 4)).numpy() for _ in range(300)])
    assert np.allclose(draws.mean(axis=0), reference.mean(axis=0), atol=0.05)
    # seeded draws repeat; the direction is the weighted sum of the rows
    jacobian = random_jacobian(4, 5, 0)
    w = aggregation.weights("random", jacobian @ jacobian.T, seed=3)
    assert rel(aggregation.aggregate("random", jacobian, seed=3), w @ jacobian.astype(np.float64)) < TOL


def test_graddrop_matches_torchjd_where_it_is_deterministic():
    jacobian = random_jacobian(3, 8, 2)
    # leak=1 keeps every entry: the sum of the rows
    leak = np.ones(3, np.float32)
    expected = torchjd(tja.GradDrop(leak=torch.ones(3, dtype=torch.float64)), jacobian)
    assert rel(aggregation.aggregate("graddrop", jacobian, leak=leak), expected) < TOL
    # columns whose entries share a sign have purity 0 or 1: kept whatever the draw
    same_sign = np.abs(jacobian) * np.array([1, -1, 1, 1, -1, -1, 1, -1], np.float32)
    assert rel(aggregation.aggregate("graddrop", same_sign), torchjd(tja.GradDrop(), same_sign)) < TOL


def test_graddrop_keeps_positive_entries_with_probability_f_of_purity():
    column = np.array([3.0, -1.0, 0.5], np.float32)  # purity = (1 + 2.5 / 4.5) / 2
    purity = 0.5 * (1 + 2.5 / 4.5)
    jacobian = np.repeat(column[:, None], 4000, axis=1)
    for f, probability in [(None, purity), (lambda p: p**2, purity**2)]:
        out = aggregation.aggregate("graddrop", jacobian, f=f, seed=11)
        assert set(np.round(np.unique(out), 5)) <= {3.5, -1.0}  # all positives or all negatives
        assert abs((out > 0).mean() - probability) < 0.03


# --------------------------------------------------------------------- missing tasks
@pytest.mark.parametrize("name", sorted(REFERENCES) + ["cagrad", "nash_mtl"])
def test_absent_tasks_are_left_out(name, request):
    jacobian = random_jacobian(4, 7, 9)
    present = np.array([True, False, True, True])
    junk = jacobian.copy()
    junk[1] = 1e3  # whatever an absent task's row holds, it does not count
    got = aggregation.aggregate(name, junk, present=present)
    got = got[0] if name in aggregation.STATEFUL else got
    if name == "cagrad":
        request.getfixturevalue("tight_cvxpy")
        reference = tja.CAGrad(c=0.5)
    elif name == "nash_mtl":
        reference = tja.NashMTL(n_tasks=3)
    else:
        reference = REFERENCES[name](3)
    assert rel(got, torchjd(reference, jacobian[present])) < TOL
    if name in aggregation.GRAMIAN_METHODS and name not in aggregation.STATEFUL:
        w = aggregation.weights(name, junk.astype(np.float64) @ junk.T, present=present)
        assert w[1] == 0.0


def test_a_zero_row_zeroes_mgda_unless_left_out():
    jacobian = special("zero_row")
    assert np.linalg.norm(aggregation.aggregate("mgda", jacobian)) < 1e-6 * np.linalg.norm(jacobian)
    present = np.array([True, False, True, True])
    got = aggregation.aggregate("mgda", jacobian, present=present)
    assert np.linalg.norm(got) > 0.1
    assert rel(got, torchjd(tja.MGDA(), jacobian[present])) < TOL


def test_random_methods_leave_absent_tasks_out():
    jacobian = FAST_CASES["conflicting"]
    present = np.array([True, False, True])
    # with two tasks left, PCGrad is deterministic
    expected = torchjd(tja.PCGrad(), jacobian[present])
    assert rel(aggregation.aggregate("pcgrad", jacobian, present=present, seed=1), expected) < TOL
    w = aggregation.weights("random", np.eye(3), present=present, seed=2)
    assert w[1] == 0.0 and np.isclose(w.sum(), 1.0)
    out = aggregation.aggregate("graddrop", jacobian, present=present, seed=4)
    assert rel(out, aggregation.aggregate("graddrop", jacobian[present], seed=4)) < TOL
    _, state = aggregation.aggregate("gradvac", jacobian, present=present)
    assert not np.asarray(state["phi_hat"])[1].any() and not np.asarray(state["phi_hat"])[:, 1].any()


def test_no_task_present_gives_a_zero_direction():
    jacobian = random_jacobian(3, 4, 0)
    for name in ("mean", "upgrad", "mgda", "cagrad", "pcgrad", "graddrop"):
        assert not np.asarray(aggregation.aggregate(name, jacobian, present=[False] * 3)).any(), name


# ---------------------------------------------------------- types, graph mode, errors
def test_types_and_dtypes():
    jacobian = random_jacobian(3, 5, 0)
    out = aggregation.aggregate("upgrad", jacobian)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (5,)
    assert aggregation.aggregate("upgrad", jacobian.astype(np.float64)).dtype == np.float64
    assert tf.is_tensor(aggregation.aggregate("upgrad", tf.constant(jacobian)))
    for dtype in (tf.float16, tf.bfloat16):  # mixed precision gradients, aggregated in float32
        low = tf.cast(jacobian, dtype)
        out = aggregation.aggregate("upgrad", low)
        assert out.dtype == tf.float32
        assert rel(out, aggregation.aggregate("upgrad", tf.cast(low, tf.float32))) < 1e-6
    assert set(aggregation.METHODS) >= {"mean", "sum", "random", "pcgrad", "graddrop", "mgda", "cagrad", "imtl_g"}
    assert set(aggregation.METHODS) >= {
        "aligned_mtl",
        "upgrad",
        "dualproj",
        "config",
        "nash_mtl",
        "gradvac",
        "fairgrad",
    }


def check_graph(names, jit_compile):
    jacobian = tf.constant(random_jacobian(3, 6, 1))
    present = tf.constant([True, True, False])
    for name in names:
        state = aggregation.initial_state(name, 3, dims=6) if name in aggregation.STATEFUL else None
        options = {"seed": [1, 2]} if name in aggregation.RANDOM else {}
        options |= {"constant": {"weights": [1.0, 2.0, 3.0]}, "krum": {"n_byzantine": 0},
                    "trimmed_mean": {"trim_number": 1}}.get(name, {})

        @tf.function(jit_compile=jit_compile)
        def step(j, present, state, name=name, options=options):
            return aggregation.aggregate(name, j, present=present, state=state, **options)

        graph = step(jacobian, present, state)
        eager = aggregation.aggregate(name, jacobian, present=present, state=state, **options)
        if name in aggregation.STATEFUL:
            graph, eager = graph[0], eager[0]
        assert rel(graph, eager) < 1e-6, name


def test_methods_run_in_a_train_step_graph():
    check_graph(["upgrad", "cagrad"], jit_compile=False)


@pytest.mark.slow
def test_every_method_runs_in_a_graph_and_all_but_the_host_ones_under_xla():
    check_graph(aggregation.METHODS, jit_compile=False)
    check_graph([name for name in aggregation.METHODS if name not in aggregation.HOST], jit_compile=True)


def test_unknown_options_are_rejected():
    with pytest.raises(TypeError, match=r"upgrad has the options .*pref_vector.*Received: seed"):
        aggregation.aggregate("upgrad", random_jacobian(2, 3, 0), seed=1)


def test_errors_state_the_rule_and_the_value():
    jacobian = random_jacobian(2, 3, 0)
    with pytest.raises(ValueError, match=r"Known methods: mean, sum, .*graddrop, trimmed_mean\. Received: name='pcgard'"):
        aggregation.aggregate("pcgard", jacobian)
    with pytest.raises(ValueError, match=r"jacobian must be a \(tasks, dims\) matrix\. Received: shape=\(3,\)"):
        aggregation.aggregate("mean", np.ones(3))
    with pytest.raises(ValueError, match=r"gramian must be a square .* Received: shape=\(2, 3\)"):
        aggregation.weights("mgda", np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"graddrop acts on the Jacobian's entries"):
        aggregation.weights("graddrop", np.eye(2))
    with pytest.raises(
        ValueError, match=r"present must be a boolean vector with one entry per task \(2\)\. Received: shape=\(3,\)"
    ):
        aggregation.aggregate("mean", jacobian, present=[True, True, False])
    with pytest.raises(ValueError, match=r"c must be non-negative\. Received: c=-1"):
        aggregation.aggregate("cagrad", jacobian, c=-1)
    with pytest.raises(ValueError, match=r"scale_mode must be .* Received: scale_mode='max'"):
        aggregation.aggregate("aligned_mtl", jacobian, scale_mode="max")
