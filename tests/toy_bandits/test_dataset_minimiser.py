"""toy_bandits.dataset: the empirical ordered-pair DPO loss on a comparison multigraph (docs/theory.md §13)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dpo_rlhf_checks.losses import dpo_loss
from toy_bandits.dataset import (bt_mm_fit, cvx_empirical_minimiser, empirical_dpo_loss, empirical_minimiser,
                                 merge_labels, minimiser_exists, named_graphs, unbounded_sentence, win_graph)


@st.composite
def label_sets(draw, strongly_connected=False):
    k = draw(st.integers(2, 5))
    edges = draw(st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1), st.integers(1, 5)),
                          min_size=1, max_size=10).filter(lambda e: any(a != b for a, b, _ in e)))
    raw = [[a, b, n] for a, b, n in edges if a != b]
    if strongly_connected:
        raw += [[i, (i + 1) % k, 1] for i in range(k)]  # a Hamiltonian cycle makes the win graph strongly connected
    return k, raw


def _grad(labels, theta):
    g = np.zeros(theta.size)
    for (w, l), n in labels.items():
        s = n / (1.0 + math.exp(theta[w] - theta[l]))  # n sigma(-(theta_w - theta_l))
        g[w] -= s
        g[l] += s
    return g


@pytest.mark.parametrize("raw, k, message", [
    ([[0, 1]], 2, r"labels\[0\]: must be a \[winner, loser, count\] triple"),
    ([[0, 1, 0]], 2, r"labels\[0\]: count must be a whole number >= 1"),
    ([[0, 1, 1.5]], 2, r"labels\[0\]: count must be a whole number >= 1"),
    ([[0, 1, True]], 2, r"labels\[0\]: count"),
    ([[0, 2, 1]], 2, r"labels\[0\]: loser index 2 is out of range"),
    ([[1, 1, 1]], 2, r"labels\[0\]: self-pair"),
    ([[0.0, 1, 1]], 2, r"labels\[0\]: winner must be an integer"),
    ([], 2, r"labels: must hold at least one"),
    ("01", 2, r"labels: must be a list"),
    ([[0, 1, float("inf")]], 2, r"labels\[0\]: count must be a whole number >= 1"),
    ([[0, 1, 10 ** 400]], 2, r"labels\[0\]: the count of pair \(0, 1\) passes the largest float64"),
    ([[0, 1, 1e308], [0, 1, 1e308]], 2, r"labels\[1\]: the count of pair \(0, 1\) passes the largest float64"),
])
def test_merge_labels_rejects_bad_input_naming_the_field(raw, k, message):
    with pytest.raises(ValueError, match=message):
        merge_labels(raw, k)


def test_merge_labels_adds_repeats_and_keeps_both_orders():
    assert merge_labels([[0, 1, 2], [1, 0, 1], [0, 1, 3.0]], 2) == {(0, 1): 5, (1, 0): 1}


def test_merge_labels_takes_integer_counts_past_int64_exactly():
    """A JSON or Python int count past int64 (2**70, 10**200) is a whole number like any other: it used to raise
    numpy's TypeError ('ufunc isfinite not supported') instead of being counted; the sum stays exact."""
    assert merge_labels([[0, 1, 2 ** 70], [0, 1, 1]], 2) == {(0, 1): 2 ** 70 + 1}
    assert merge_labels([[0, 1, 10 ** 200], [1, 0, 1]], 2) == {(0, 1): 10 ** 200, (1, 0): 1}
    assert merge_labels([[0, 1, np.int64(7)]], 2) == {(0, 1): 7}


@given(label_sets(), st.floats(0.05, 20.0))
@settings(max_examples=40 * settings.default.max_examples // 60)
def test_loss_is_the_sum_of_the_toolkit_per_pair_dpo_losses(ks, beta):
    k, raw = ks
    labels = merge_labels(raw, k)
    rng = np.random.default_rng(len(raw))
    log_pi, log_ref = np.log(rng.dirichlet(np.ones(k))), np.log(rng.dirichlet(np.ones(k)))
    t = torch.tensor
    w = [p[0] for p in labels]
    l = [p[1] for p in labels]
    per = dpo_loss(t(log_pi[w]), t(log_pi[l]), t(log_ref[w]), t(log_ref[l]), beta=beta).losses.numpy()
    assert empirical_dpo_loss(log_pi, log_ref, labels, beta) == pytest.approx(float(np.dot(list(labels.values()), per)),
                                                                              rel=1e-12)


@given(label_sets(strongly_connected=True), st.floats(0.1, 10.0))
@settings(max_examples=40 * settings.default.max_examples // 60)
def test_strongly_connected_minimiser_is_stationary_and_equals_the_mm_fit(ks, beta):
    k, raw = ks
    labels = merge_labels(raw, k)
    opt = empirical_minimiser(labels, k, beta)
    assert opt.status == "finite" and minimiser_exists(labels, k)
    assert np.abs(_grad(labels, beta * opt.u)).max() < 1e-9
    mm = bt_mm_fit(labels, k)
    assert mm.converged
    for (i, j), h in opt.h.items():
        assert beta * h == pytest.approx(mm.theta[i] - mm.theta[j], abs=1e-6)


@given(label_sets())
@settings(max_examples=60 * settings.default.max_examples // 60)
@example((3, [[0, 1, 1], [1, 2, 1]]))  # a chain
def test_existence_iff_no_pair_joins_two_strong_components_and_mm_agrees(ks):
    k, raw = ks
    labels = merge_labels(raw, k)
    g = win_graph(labels, k)
    # the MM iteration knows nothing of the graph: it converges exactly when no pair joins two strong components
    assert bt_mm_fit(labels, k, max_iter=3000).converged == g.finite
    opt = empirical_minimiser(labels, k, 1.0)
    assert {p for p, h in opt.h.items() if h is None} == set(g.divergent)
    # a divergent pair's winner group sits above its loser group in the condensation order
    assert all(g.order[a] > g.order[b] for a, b in g.divergent)


@given(label_sets(), st.permutations(range(5)))
@settings(max_examples=30 * settings.default.max_examples // 60)
def test_relabelling_the_responses_relabels_h(ks, perm):
    k, raw = ks
    perm = [p for p in perm if p < k]
    labels = merge_labels(raw, k)
    moved = merge_labels([[perm[a], perm[b], n] for a, b, n in raw], k)
    h1 = empirical_minimiser(labels, k, 0.7).h
    h2 = empirical_minimiser(moved, k, 0.7).h
    for (a, b), h in h1.items():
        other = h2[(perm[a], perm[b])]
        assert (h is None) == (other is None)
        if h is not None:
            assert other == pytest.approx(h, abs=1e-8)


@given(st.integers(1, 50), st.integers(1, 50), st.floats(0.01, 100.0))
def test_contradictory_pair_has_the_closed_form_log_a_over_b(a, b, beta):
    opt = empirical_minimiser(merge_labels([[0, 1, a], [1, 0, b]], 2), 2, beta)
    assert opt.h[(0, 1)] == pytest.approx(math.log(a / b) / beta, rel=1e-9, abs=1e-12)


def test_three_cycle_and_pooled_graph_values():
    k, raw = named_graphs()["3-cycle 0>1>2>0 (2,1,1)"]
    opt = empirical_minimiser(merge_labels(raw, k), k, 1.0)
    assert opt.h[(0, 1)] == pytest.approx(0.8392352499821958, abs=1e-10)  # the symbolic root of (2-k)(1-k)^2 = k^3
    k, raw = named_graphs()["pooled: 0~1 tied, 0>>2, 2>>1"]
    opt = empirical_minimiser(merge_labels(raw, k), k, 1.0)
    assert opt.h[(0, 1)] == pytest.approx(1.0560978190260222, abs=1e-10)  # not log(1/1) = 0


@pytest.mark.parametrize("name", list(named_graphs()))
def test_cvxpy_reports_unbounded_as_a_typed_outcome_and_matches_newton(name):
    k, raw = named_graphs()[name]
    labels = merge_labels(raw, k)
    cvx = cvx_empirical_minimiser(labels, k)
    g = win_graph(labels, k)
    assert cvx.status == ("finite" if g.finite else "unbounded")
    assert cvx.lp_status == ("optimal" if g.finite else "unbounded")
    assert set(cvx.divergent) == set(g.divergent)
    opt = empirical_minimiser(labels, k, 1.0)
    for (i, j), h in opt.h.items():
        if h is not None:
            assert cvx.theta[i] - cvx.theta[j] == pytest.approx(h, abs=1e-5)


def test_unbounded_sentence_names_the_divergent_pairs_and_groups():
    labels = merge_labels([[0, 1, 1], [1, 2, 1], [2, 0, 1], [2, 3, 2]], 4)
    opt = empirical_minimiser(labels, 4, 1.0)
    text = unbounded_sentence(opt, labels)
    assert "(2, 3)" in text and "{0, 1, 2}" in text and "{3}" in text
    assert opt.h[(0, 1)] == pytest.approx(0.0, abs=1e-12)
    assert unbounded_sentence(empirical_minimiser(merge_labels([[0, 1, 1], [1, 0, 1]], 2), 2, 1.0),
                              merge_labels([[0, 1, 1], [1, 0, 1]], 2)) is None


def test_beta_must_be_positive():
    with pytest.raises(ValueError, match="beta"):
        empirical_minimiser({(0, 1): 1}, 2, 0.0)


def test_newton_damps_a_step_that_would_overshoot_on_skewed_counts():
    """A strongly connected 4-response graph with counts from 1 to 10^6 (0 ~ 1 tied 100:100, 1 >> 2, 2 <-> 3 at
    1 : 10^6, 3 >> 0) on which the undamped Newton step overshoots: the minimiser must still be the stationary point.
    Expected values from an independent solve: the stationarity equations in mpmath at 50 digits (findroot, theta_0 =
    0), beta h = theta_w - theta_l: (0, 1) -0.0200004626476162, (1, 2) 13.8155197599584, (2, 3) -25.3084449643175,
    (3, 0) 11.5129256670067; loss 165.9478766702709. Pins the Armijo line search of ``_newton_scores``: with the test
    '-slope <= ...' read as 'slope <= ...' (always true, since slope = -grad H^+ grad <= 0) every step is a plain
    Newton step and theta ended at ~1e4 with gradient 100 (a survivor of mutation)."""
    labels = merge_labels([[0, 1, 100], [1, 0, 100], [1, 2, 10**6], [2, 3, 1], [3, 0, 10**5], [3, 2, 10**6]], 4)
    beta = 2.0
    opt = empirical_minimiser(labels, 4, beta)
    assert opt.status == "finite"
    assert np.abs(_grad(labels, beta * opt.u)).max() < 1e-6  # counts sum to 2.1e6; the fit reaches 1.4e-8
    expected = {(0, 1): -0.0200004626476162, (1, 2): 13.8155197599584, (2, 3): -25.3084449643175,
                (3, 0): 11.5129256670067}
    for p, bh in expected.items():
        assert beta * opt.h[p] == pytest.approx(bh, abs=1e-6)
    assert opt.loss == pytest.approx(165.9478766702709, rel=1e-10)


@pytest.mark.parametrize("big", [1e6, 1e9, 1e12, 1e14, 1e30])
def test_empirical_minimiser_at_lopsided_counts(big):
    """Two responses labelled big : 1 (both directions, one strongly connected pair): the minimiser is exactly
    beta h = log(big), by hand (n_w sigma(-x) = n_l sigma(x) at x = log(n_w/n_l)). sigma(-x) as 1 - tanh(x/2) lost
    every digit past x ~ 30 and the stop rule (gradient <= 1e-13 x labels) stopped early: h came out 27.6056 at 1e12
    (log = 27.6310) and 30.128 at 1e14 (32.236). Found by a helper reviewing seed 909's _newton_scores survivor."""
    opt = empirical_minimiser({(0, 1): big, (1, 0): 1}, 2, 0.5)
    assert opt.h[(0, 1)] == pytest.approx(math.log(big) / 0.5, rel=1e-12)


def test_empirical_minimiser_refuses_counts_beyond_float64():
    """1e200 : 1 labels: Newton from theta = 0 does not converge in 200 steps; a clear error, not a wrong h."""
    with pytest.raises(ArithmeticError, match="did not converge in 200 steps"):
        empirical_minimiser({(0, 1): 1e200, (1, 0): 1}, 2, 1.0)


def test_empirical_minimiser_stops_at_the_rounding_floor_of_many_labels():
    """1.3e8 labels on 4 responses (a reviewer's case): rounding keeps the Newton step near 1e-9 for the pairs with
    2 : 1 labels, so a stop rule on the step size alone never stopped (ArithmeticError after 200 steps); the Newton
    decrement below rounding stops it. The gradient of the population loss at the returned scores, recomputed at 50
    digits, is below 1e-8 (the labels' total is 1.3e8)."""
    import mpmath

    labels = {(0, 1): 214, (1, 0): 1, (1, 2): 2406, (2, 1): 4623, (1, 3): 15981840, (3, 1): 113762821, (2, 3): 2,
              (3, 2): 1}
    opt = empirical_minimiser(labels, 4, 1.0)
    with mpmath.workdps(50):
        g = [mpmath.mpf(0)] * 4
        for (i, j), c in labels.items():
            s = c / (1 + mpmath.exp(mpmath.mpf(float(opt.u[i])) - mpmath.mpf(float(opt.u[j]))))
            g[i] -= s
            g[j] += s
        assert max(abs(float(x)) for x in g) < 1e-8


@pytest.mark.parametrize("a, b", [(3, 1), (2, 1), (1, 4)])
def test_mm_spread_at_a_checkpoint_is_the_pair_log_odds(a, b):
    """bt_mm_fit's spread is max theta - min theta at each checkpoint (MMFit's docstring), the evidence rows of
    dataset-ordered-minimiser's numeric method. A pair labelled a:b both ways has the BT MLE gap |log(a/b)| (by
    hand); with max_iter 400 the fit stops at iteration 50 = max_iter // 8, a checkpoint, so both the checkpoint
    entry and the final entry must be |log(a/b)| >= 0 (not its negative). (a survivor of mutation:
    toy_bandits/dataset.py::bt_mm_fit::swap-args::2c68d1fee2, theta.min() - theta.max() at the checkpoints)"""
    fit = bt_mm_fit(merge_labels([[0, 1, a], [1, 0, b]], 2), 2, max_iter=400)
    assert fit.converged and fit.iters == (50, 50)
    assert fit.spread == pytest.approx((abs(math.log(a / b)),) * 2, abs=1e-9)


def test_mm_spread_grows_at_every_checkpoint_without_an_mle():
    """Two strongly connected blocks {0, 1} and {2, 3} joined by one label 1 > 2: every response has a win (so no
    strength hits 0 at once) but no finite MLE exists, and MM runs to max_iter with the gap between the blocks
    growing without end (MMFit's docstring: 'grows without end when no MLE exists'). Measured unplanted: spread
    4.37, 5.08, 5.79, 6.49 at iterations 100, 200, 400, 800 (about log 2 per doubling). Pinned: every checkpoint
    spread is positive, they increase, each doubling adds between 0.5 and 1, and the last checkpoint equals the
    final spread, max - min of the returned theta. (a survivor of mutation:
    toy_bandits/dataset.py::bt_mm_fit::swap-args::2c68d1fee2, whose checkpoint spreads read -4.37 ... -6.49)"""
    labels = merge_labels([[0, 1, 1], [1, 0, 1], [2, 3, 1], [3, 2, 1], [1, 2, 1]], 4)
    assert not win_graph(labels, 4).finite
    fit = bt_mm_fit(labels, 4, max_iter=800)
    assert not fit.converged and fit.iters == (100, 200, 400, 800, 800)
    s = np.array(fit.spread)
    assert np.all(s > 0)
    assert np.all((np.diff(s[:4]) > 0.5) & (np.diff(s[:4]) < 1.0))
    assert s[3] == s[4] == pytest.approx(float(fit.theta.max() - fit.theta.min()), abs=1e-12)
    # the two blocks sit apart, {0, 1} above {2, 3}, by the spread
    assert min(fit.theta[:2]) - max(fit.theta[2:]) == pytest.approx(s[4], abs=0.01)


def test_newton_keeps_refining_a_few_label_pair_inside_a_trillion_label_graph():
    """A strongly connected 5-response graph with counts from 5 to 5.3e11 (1.1e12 labels in all): the stop rule's
    gradient bound (1e-13 x labels = 0.11) is met long before the pairs that touch response 2 (5 and 3.6e5 labels,
    curvature ~1) are accurate, so what stops Newton there is its decrement test (-slope <= 1e-15 max(1, |f|)).
    Pins that rounding floor: with 2e-15 in it, the iteration stopped one step early at gradient 0.056 and h(0, 1),
    h(1, 2), h(4, 1) came out 6.1e-5 off; the floor as written leaves 2.6e-7. The bound is H_TOL_CVX = 1e-5, the
    agreement with CVXPY that dataset-ordered-minimiser reports. Expected h by an independent solve: Newton on the
    stationarity equations sum_j n_ij sigma(-(theta_i - theta_j)) = sum_j n_ji sigma(theta_j - theta_i) in mpmath at 60
    digits (theta_4 = 0; final gradient 4e-51), beta = 1 so h = theta_w - theta_l (a survivor of mutation)."""
    labels = {(0, 1): 526746661402, (1, 2): 5, (2, 3): 85363349, (3, 4): 397623533546, (4, 0): 18463372315,
              (0, 2): 5847240, (4, 3): 166944798024, (4, 1): 362737, (0, 3): 2298286}
    expected = {(0, 1): 25.38054763936369, (1, 2): -36.58401996652645, (2, 3): 2.6100035857676063,
                (3, 4): 0.8677731829927099, (4, 0): 7.725695558402442, (0, 2): -11.203472327162759,
                (4, 3): -0.8677731829927099, (4, 1): 33.10624319776613, (0, 3): -8.593468741395151}
    opt = empirical_minimiser(labels, 5, 1.0)
    assert opt.status == "finite"
    err = max(abs(opt.h[p] - h) for p, h in expected.items())
    assert err <= 1e-5, f"max |h - h_exact| = {err:.3g}"


@pytest.mark.parametrize("count", [1e160, 1e200])
def test_mm_fit_converges_on_a_strongly_connected_pair_with_a_log_odds_spread_beyond_350(count):
    """Two responses labelled count : 1 (whole-number float counts, as merge_labels admits): the win graph is
    strongly connected, so the BT MLE exists, with theta_0 - theta_1 = log(count / 1) = 368.41 (1e160) or 460.52
    (1e200) by hand, both inside the fit's floor of -700. bt_mm_fit must report converged=True there: only a strength
    at the floor (theta <= -699) means 'no MLE'. With the floor test at -349.5 it reported converged=False on both
    (a survivor of mutation: toy_bandits/dataset.py::bt_mm_fit::const-half::812a3569da)."""
    labels = merge_labels([[0, 1, count], [1, 0, 1]], 2)
    assert win_graph(labels, 2).finite
    fit = bt_mm_fit(labels, 2)
    expected = math.log(count)  # 160 log 10 = 368.4136, 200 log 10 = 460.5170
    assert fit.theta[0] - fit.theta[1] == pytest.approx(expected, abs=1e-9)
    assert fit.spread[-1] == pytest.approx(expected, abs=1e-9)
    assert fit.converged is True


def test_two_components_graph_is_the_structure_its_name_states_and_the_convex_check_needs_it(tmp_path, monkeypatch):
    """Pins the named graph "two components: 0<>1 and 2>3" (a survivor of mutation: its loser [1, 0, 1] became
    [2, 0, 1], a weakly connected DAG 2>0>1, 2>3 under the same name, and the convex check then passed a win_graph
    that calls every labelled pair divergent once a data set has two weak components and is unbounded; it catches that
    with the graph as named). By hand: weak components {0, 1} and {2, 3}; {0, 1} is one SCC (0>1 twice, 1>0 once),
    so only (2, 3) diverges and h_01 = log(2/1)/beta, the pair's own log-odds (the only pair labelled both ways)."""
    from dpo_rlhf_checks.result import CheckContext
    from toy_bandits import dataset as D
    from toy_bandits.dataset_claims import dataset_minimiser_convex

    k, raw = named_graphs()["two components: 0<>1 and 2>3"]
    assert k == 4
    labels = merge_labels(raw, k)
    assert labels == {(0, 1): 2, (1, 0): 1, (2, 3): 1}
    g = win_graph(labels, k)
    weak = {frozenset(i for i in range(k) if g.weak[i] == g.weak[j]) for j in range(k)}
    assert weak == {frozenset({0, 1}), frozenset({2, 3})}
    assert g.scc[0] == g.scc[1] != g.scc[2] != g.scc[3]
    assert set(g.divergent) == {(2, 3)} and not g.finite
    beta = 0.5
    opt = empirical_minimiser(labels, k, beta)
    assert opt.h[(0, 1)] == pytest.approx(math.log(2.0) / beta, abs=1e-9)
    assert opt.h[(1, 0)] == pytest.approx(-math.log(2.0) / beta, abs=1e-9)
    assert opt.h[(2, 3)] is None

    real = D.win_graph

    def every_pair_divergent_when_disconnected(lab, kk):  # the planted error the convex check must catch
        gg = real(lab, kk)
        w, l, _ = D._arrays(lab)
        div = tuple((int(a), int(b)) for a, b in zip(w, l)) if (gg.weak.max() > 0 and gg.divergent) else gg.divergent
        return type(gg)(scc=gg.scc, weak=gg.weak, finite=not div, divergent=div, order=gg.order)

    monkeypatch.setattr(D, "win_graph", every_pair_divergent_when_disconnected)
    r = dataset_minimiser_convex(CheckContext(seed=0, quick=True, out_dir=tmp_path))
    assert r.amended is False and "divergent pairs equal: False" in r.summary


def test_empirical_minimiser_converges_on_many_labels_with_a_loss_above_one():
    """1e8 : 1e8 labels on (0, 1) and 1e8 : 1 on (1, 2), beta = 1: by hand, node 0 meets only 1 with equal counts,
    so theta_0 = theta_1, and node 2 meets only 1, so theta_1 - theta_2 = log(1e8) (n_w sigma(-x) = n_l sigma(x) at
    x = log(n_w / n_l)); loss = 2e8 log 2 + 1e8 log(1 + 1e-8) + log(1 + 1e8) = 138629455.53267. The Newton decrement
    test compares the predicted decrease with 1e-15 x max(1, |f|); with min(1, |f|) instead (a survivor of mutation,
    dataset.py:200) the plain-step branch, the only place the iteration stops, is never reached once |f| ~ 1e8, and
    this data set (14 of 300 random ones too) raised 'did not converge in 200 steps'."""
    opt = empirical_minimiser({(0, 1): 10**8, (1, 0): 10**8, (1, 2): 10**8, (2, 1): 1}, 3, 1.0)
    assert opt.status == "finite"
    assert opt.h[(0, 1)] == pytest.approx(0.0, abs=1e-9)
    # the stop rule (gradient <= 1e-13 x 2e8 labels) against curvature ~1 on (1, 2): 6.1e-10 off when measured
    assert opt.h[(1, 2)] == pytest.approx(math.log(1e8), abs=1e-8)
    expected_loss = 2e8 * math.log(2.0) + 1e8 * math.log1p(1e-8) + math.log1p(1e8)
    assert opt.loss == pytest.approx(expected_loss, rel=1e-12)
