"""toy_bandits.length_norm and toy_bandits.cpo_population (§13, §10)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dpo_rlhf_checks.losses import implicit_target
from toy_bandits.cpo_population import (SETTINGS, clip_repair_threshold, dpop_minimiser, dpop_population_loss,
                                        ranks_first, target)
from toy_bandits.length_norm import delta_mean, mean_implies_summed, minimiser_delta_range, summed_implies_mean

logp = st.floats(-500.0, -1e-3)
length = st.integers(1, 500)


@given(logp, logp, length, length)
@settings(max_examples=settings.default.max_examples)
def test_mean_certificate_implies_the_summed_ranking_exactly_when_y_w_is_not_longer(a, b, lw, ll):
    dm, d = float(delta_mean(a, b, lw, ll)), a - b
    assert bool(mean_implies_summed(lw, ll)) == (lw <= ll) and bool(summed_implies_mean(lw, ll)) == (lw >= ll)
    if mean_implies_summed(lw, ll) and dm > 0:
        assert d > 0
    if summed_implies_mean(lw, ll) and d > 0:
        assert dm > 0


def test_the_implications_fail_the_other_way_round():
    assert delta_mean(-60, -20, 100, 20) > 0 and -60 - (-20) < 0  # mean says y_w, summed says y_l (|y_w| > |y_l|)
    assert delta_mean(-10, -20, 5, 40) < 0 and -10 - (-20) > 0  # summed says y_w, mean says y_l (|y_w| < |y_l|)
    assert not mean_implies_summed(100, 20) and not summed_implies_mean(5, 40)  # the functions say so too



def test_the_length_rules_at_adjacent_lengths_against_explicit_witnesses():
    """Each rule is False exactly where a pair of log-probabilities <= 0 breaks its implication. Witnesses written by
    hand: for |y_w| > |y_l|, log pi(y_w) = -|y_w| and log pi(y_l) = -|y_l| - (|y_w| - |y_l|)/2 give delta_mean > 0 and
    delta < 0; for |y_w| < |y_l|, log pi(y_l) = -|y_l| and log pi(y_w) = -(|y_w| + |y_l|)/2 give delta > 0 and
    delta_mean < 0. Where the rule says True, no point of a grid of log-probabilities breaks it. Lengths 1..8 include
    every adjacent pair, where the random lengths of the test above rarely land (an off-by-one, lw <= ll + 1, passed
    it and the length claim at --quick seed 0)."""
    grid = -np.geomspace(1e-3, 50.0, 60)
    a, b = np.meshgrid(grid, grid)
    n_broken = [0, 0]
    for lw in range(1, 9):
        for ll in range(1, 9):
            # mean => summed: broken by the witness (|y_w| > |y_l|) or by a grid point
            wa, wb = -float(lw), -ll - (lw - ll) / 2
            dm = delta_mean(a, b, lw, ll)
            broken = bool(lw > ll and delta_mean(wa, wb, lw, ll) > 0 and wa - wb < 0) or bool(
                np.any((dm > 0) & (a - b <= 0)))
            assert bool(mean_implies_summed(lw, ll)) is not broken, (lw, ll)
            n_broken[0] += broken
            # summed => mean: broken by the witness (|y_w| < |y_l|) or by a grid point
            wa, wb = -(lw + ll) / 2, -float(ll)
            broken = bool(lw < ll and wa - wb > 0 and delta_mean(wa, wb, lw, ll) < 0) or bool(
                np.any((a - b > 0) & (dm <= 0)))
            assert bool(summed_implies_mean(lw, ll)) is not broken, (lw, ll)
            n_broken[1] += broken
    assert n_broken == [28, 28]  # each rule broken at the 8 * 7 / 2 ordered pairs of distinct lengths on its side


@given(st.floats(-2.0, 2.0), st.integers(1, 60), st.integers(1, 60))
def test_minimiser_delta_range_contains_the_boundary_policy_and_has_the_predicted_open_end(c, lw, ll):
    lo, hi = minimiser_delta_range(c, lw, ll)
    if lw == ll:
        assert lo == hi == pytest.approx(lw * c, abs=0)
    elif lw > ll:
        assert lo == -math.inf and math.isfinite(hi)
    else:
        assert hi == math.inf and math.isfinite(lo)


def test_length_validation():
    with pytest.raises(ValueError, match="lengths"):
        delta_mean(-1.0, -1.0, 0, 3)


@given(st.floats(-6, 3), st.floats(-1, 5))
def test_dpo_population_condition_is_the_paper_condition(bdr, dr):
    if abs(bdr + dr) > 1e-9:
        assert bool(ranks_first("dpo", bdr, dr, beta=0.1)) == (bdr + dr > 0)


@given(st.floats(-6, 3), st.floats(-1, 5))
def test_ipo_population_condition(bdr, dr):
    q = 1 / (1 + math.exp(-dr))
    if abs(bdr + q - 0.5) > 1e-9:
        assert bool(ranks_first("ipo", bdr, dr, beta=0.3)) == (bdr + q - 0.5 > 0)


@given(st.floats(-8, 4), st.floats(-1, 5))
def test_clip_threshold_is_the_general_condition(bdr, dr):
    thr = float(clip_repair_threshold(bdr))
    if abs(dr - thr) > 1e-9:
        assert bool(ranks_first("cpo_clip", bdr, dr, beta=0.1, margin=0.0)) == (dr > thr)
    assert (0 <= thr <= math.log(2) + 1e-12) if bdr < 0 else (thr <= 0)


@pytest.mark.parametrize("label", [k for k, v in SETTINGS.items() if v[0].startswith("cpo") or v[0] == "dpo"])
@given(d_ref=st.floats(-30, 30))
@settings(max_examples=30 * settings.default.max_examples // 60)
def test_numpy_targets_equal_the_toolkit_implicit_targets(label, d_ref):
    name, beta, params = SETTINGS[label]
    rc = torch.tensor([-math.log1p(math.exp(-d_ref))], dtype=torch.float64)  # log sigma(d_ref) = log pi_ref(y_w)
    rr = torch.tensor([-math.log1p(math.exp(d_ref))], dtype=torch.float64)
    expected = float(implicit_target(name, rc, rr, beta=beta, **params)[0])
    assert float(target(name, d_ref, beta=beta, **params)) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@given(st.floats(-20, 20), st.floats(-3, 3), st.sampled_from([0.0, 1.0, 50.0]))
@settings(max_examples=30 * settings.default.max_examples // 60)
def test_dpop_minimiser_is_the_argmin_of_a_fine_grid(d_ref, dr, lam):
    x = float(dpop_minimiser(d_ref, dr, beta=0.5, lam=lam))
    grid = np.linspace(-80, 80, 160001)
    vals = dpop_population_loss(grid, d_ref, dr, beta=0.5, lam=lam)
    assert float(dpop_population_loss(x, d_ref, dr, beta=0.5, lam=lam)) <= vals.min() + 1e-9


def test_dpop_with_lam_zero_is_dpo():
    assert float(dpop_minimiser(-3.0, 1.0, beta=0.5, lam=0.0)) == pytest.approx(-3.0 + 1.0 / 0.5, abs=1e-6)


def test_unknown_loss_name_is_an_error():
    with pytest.raises(ValueError, match="name: no target form"):
        target("cpo_easy", 0.0, beta=0.1)


def test_cpo_smooth_settings_are_the_atlas_paper_rows():
    """The phase figure's two cpo_smooth settings (code defaults; the released checkpoint's beta 2.5, alpha 0.25, its
    gamma and tau at the code defaults) are the ones the atlas lists on its own (atlas_rows.PAPER_CPO_ROWS, from the
    authors' code, docs/theory.md §10): the same beta and every parameter equal, so the two modules describe the
    same losses (a changed gamma or tau in either, e.g. the released gamma 0.5 -> 1.0, moves the released setting's
    largest threshold in dr from 0.0171 to 0.0038)."""
    from dpo_rlhf_checks.atlas_rows import PAPER_CPO_ROWS
    atlas = sorted((s.beta, sorted(s.params.items())) for s in PAPER_CPO_ROWS if s.loss == "cpo_smooth")
    here = sorted((beta, sorted(params.items())) for name, beta, params in SETTINGS.values() if name == "cpo_smooth")
    assert len(here) == 2 and here == atlas


def test_settings_labels_state_their_parameters():
    """Each SETTINGS label's stated parameters ("lam=50", "m=0", "beta=2.5, alpha=0.25", "gamma=0.05") are the ones
    the setting runs (m is the margin, beta the setting's beta): a label and its numbers cannot drift apart."""
    import re
    alias = {"m": "margin"}
    stated = 0
    for label, (_name, beta, params) in SETTINGS.items():
        for key, value in re.findall(r"(\w+)=(-?[\d.]+)", label):
            ran = beta if key == "beta" else params[alias.get(key, key)]
            assert ran == float(value), f"{label}: {key} is {ran}"
            stated += 1
    assert stated == 5  # lam, m, beta, alpha, gamma: the parse found every stated parameter


def test_eq17_largest_threshold_by_an_independent_root():
    """The Eq. 17 setting's largest threshold in dr (docs/theory.md §13: 0.165 at beta delta_ref = -0.25), from the
    population loss itself: E(delta) = q l(delta; d) + (1 - q) l(-delta; -d) with the paper's Eq. 17 loss
    l(delta; d) = -log sigma(beta (delta - d) - m), m = gamma (1/sigma(d) + 1/sigma(-d)) written here, dE/d delta at 0
    by central differences, its root in dr by brentq, maximised over beta delta_ref by a bounded scalar search (the
    threshold is a narrow peak: 0 at 0, 6e-4 at -0.5). Then the toolkit's ranks_first with the SETTINGS parameters
    must flip there (gamma 0.05 -> 0.025 moves the peak to 0.2197 at -0.304)."""
    from scipy.optimize import brentq, minimize_scalar
    name, beta, params = SETTINGS["CPO Eq. 17 (gamma=0.05)"]
    gamma = 0.05

    def loss(delta, d):
        m = gamma * (2.0 + math.exp(-d) + math.exp(d))
        return float(np.logaddexp(0.0, -(beta * (delta - d) - m)))

    def slope_at_zero(dr, d, h=1e-4):
        q = 1.0 / (1.0 + math.exp(-dr))
        e = lambda x: q * loss(x, d) + (1 - q) * loss(-x, -d)  # noqa: E731
        return (e(h) - e(-h)) / (2 * h)

    def threshold(bdr):
        return brentq(lambda dr: slope_at_zero(dr, bdr / beta), -2.0, 2.0, xtol=1e-13)

    best = minimize_scalar(lambda b: -threshold(b), bounds=(-0.6, 0.0), method="bounded", options={"xatol": 1e-8})
    b_star, thr = float(best.x), -float(best.fun)
    assert thr == pytest.approx(0.1648, abs=1e-3) and b_star == pytest.approx(-0.25, abs=5e-3)
    assert bool(ranks_first(name, b_star, thr * 1.002, beta=beta, **params))
    assert not bool(ranks_first(name, b_star, thr * 0.998, beta=beta, **params))


def _closed_form_end(c, lw, ll):
    """The finite end of the summed delta over {delta_mean = c} by hand, for L_w/L_l = 2 or 1/2 (a quadratic).
    With a = L_w (c + b/L_l) the set is b <= b*, b* the root of e^a + e^b = 1, and delta = L_w c + b (L_w/L_l - 1).
    (2, 1): a = 2c + 2b, u = e^b: e^(2c) u^2 + u - 1 = 0, u = (sqrt(1 + 4 e^(2c)) - 1)/(2 e^(2c)), sup = 2c + log u.
    (1, 2): a = c + b/2, v = e^(b/2): v^2 + e^c v - 1 = 0, v = (sqrt(e^(2c) + 4) - e^c)/2, inf = c - b/2 = c - log v."""
    if (lw, ll) == (2, 1):
        e2 = math.exp(2 * c)
        return 2 * c + math.log((math.sqrt(1 + 4 * e2) - 1) / (2 * e2))
    assert (lw, ll) == (1, 2)
    ec = math.exp(c)
    return c - math.log((math.sqrt(ec * ec + 4) - ec) / 2)


@pytest.mark.parametrize(("c", "lw", "ll", "expected"), [
    (0.0, 2, 1, math.log((math.sqrt(5) - 1) / 2)),  # -0.4812: golden ratio, u^2 + u = 1
    (0.3, 2, 1, None),   # sup -0.0623 < 0: a positive mean delta, yet every minimiser ranks y_l first (summed)
    (0.0, 1, 2, -math.log((math.sqrt(5) - 1) / 2)),  # +0.4812
    (-0.3, 1, 2, None),  # inf +0.0624 > 0: a negative mean delta, yet every minimiser ranks y_w first (summed)
])
def test_minimiser_delta_range_finite_end_by_hand(c, lw, ll, expected):
    """The finite end against the closed form above (and, at c = 0, against the golden ratio directly)."""
    end = _closed_form_end(c, lw, ll)
    if expected is not None:
        assert end == pytest.approx(expected, abs=1e-14)
    else:
        assert (end < -0.06) if lw > ll else (end > 0.06)
    lo, hi = minimiser_delta_range(c, lw, ll)
    expected_range = (-math.inf, pytest.approx(end, abs=1e-9)) if lw > ll else (pytest.approx(end, abs=1e-9), math.inf)
    assert (lo, hi) == expected_range


@pytest.mark.parametrize(("c", "lw", "ll"), [(0.1, 10, 2), (0.5, 3, 1), (-0.2, 1, 4), (0.3, 2, 1), (-0.3, 1, 2),
                                             (1.5, 7, 40)])
def test_minimiser_delta_range_finite_end_is_approached_by_feasible_policies(c, lw, ll):
    """The finite end from the definition, solved independently (brentq on e^a + e^b = 1 with a = L_w (c + b/L_l)):
    (0.1, 10, 2) sup -0.663 (every minimiser has delta < 0), (0.5, 3, 1) sup 0.056, (-0.2, 1, 4) inf 0.558. A
    feasible policy just inside (b = b* - 1e-7) has delta_mean = c and summed delta within 1e-6 of the end; just
    outside (b* + 1e-7) e^a + e^b > 1; and every feasible b on a grid below b* lies on the range's side of the end."""
    from scipy.optimize import brentq

    def a_of(b):
        return lw * (c + b / ll)

    b_star = brentq(lambda b: math.exp(a_of(b)) + math.exp(b) - 1.0, -200.0, min(0.0, -c * ll), xtol=1e-15,
                    rtol=4 * np.finfo(float).eps)
    end = lw * c + b_star * (lw / ll - 1)
    lo, hi = minimiser_delta_range(c, lw, ll)
    got = hi if lw > ll else lo
    assert got == pytest.approx(end, abs=1e-9)
    assert (lo == -math.inf) if lw > ll else (hi == math.inf)
    known = {(0.1, 10, 2): -0.663, (0.5, 3, 1): 0.056, (-0.2, 1, 4): 0.558}
    if (c, lw, ll) in known:
        assert end == pytest.approx(known[(c, lw, ll)], abs=5e-4)
    b_in, b_out = b_star - 1e-7, b_star + 1e-7
    a_in = a_of(b_in)
    assert a_in < 0 and b_in < 0 and math.exp(a_in) + math.exp(b_in) <= 1.0
    assert float(delta_mean(a_in, b_in, lw, ll)) == pytest.approx(c, abs=1e-12)
    assert abs((a_in - b_in) - got) <= 1e-6
    assert math.exp(a_of(b_out)) + math.exp(b_out) > 1.0
    for b in b_star - np.geomspace(1e-6, 100.0, 40):
        d = a_of(b) - b
        assert (d <= got + 1e-12) if lw > ll else (d >= got - 1e-12)
