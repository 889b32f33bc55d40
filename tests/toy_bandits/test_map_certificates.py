"""Certificate conditions per CPO variant (docs/theory.md §10): derived conditions vs the loss module itself."""

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from dpo_rlhf_checks.losses import get_loss, implicit_target
from toy_bandits.map_claims import _certificate_search, _easy_grid, _reference_grid, eq17_critical_ratio, \
    smooth_target_minimum

LOG2 = math.log(2.0)
RC, RR = _reference_grid()


def smooth_condition(gamma, tau, alpha):
    """Derived: loss < log 2 certifies delta > 0 for every reference iff this holds."""
    if alpha > 1:
        return False
    if alpha == 1:
        return gamma >= 0
    h = -alpha * math.log(alpha) - (1 - alpha) * math.log1p(-alpha)
    return gamma >= -h / (alpha * tau)


@given(st.floats(-2.0, 2.0), st.floats(0.5, 4.0), st.floats(0.05, 0.95))
def test_smooth_target_minimum_formula_matches_dense_search(gamma, tau, alpha):
    # alpha < 1: the infimum is attained at delta_ref = gamma - logit(alpha)/tau; compare with a dense search there
    centre = gamma - math.log(alpha / (1 - alpha)) / tau
    d = torch.linspace(centre - 5, centre + 5, 20001, dtype=torch.float64)
    rc, rr = d - 50.0, torch.full_like(d, -50.0)
    t = implicit_target("cpo_smooth", rc, rr, beta=1.0, gamma=gamma, tau=tau, alpha=alpha)
    assert float(t.min()) == pytest.approx(smooth_target_minimum(gamma, tau, alpha), abs=1e-6)


@given(st.floats(-1.0, 1.0), st.floats(0.5, 4.0), st.floats(0.1, 3.0))
@example(gamma=0.5, tau=2.0, alpha=1.0)  # code defaults
@example(gamma=0.5, tau=2.0, alpha=0.25)  # released checkpoint
@example(gamma=-0.05, tau=2.0, alpha=1.0)
def test_smooth_condition_matches_counterexample_search(gamma, tau, alpha):
    t_inf = smooth_target_minimum(gamma, tau, alpha)
    if abs(t_inf) < 1e-3 or (alpha > 1 and alpha < 1.02):
        return  # within grid resolution of the boundary (or the -inf asymptote beyond delta_ref = -300)
    res = _certificate_search("cpo_smooth", 1.0, {"gamma": gamma, "tau": tau, "alpha": alpha}, RC, RR)
    assert res["certifies_on_grid"] == smooth_condition(gamma, tau, alpha)
    if res["counterexample"]:
        assert res["counterexample"]["loss"] < LOG2 and res["counterexample"]["delta"] < 0


def test_eq17_critical_ratio_two_methods_and_boundary():
    cs = eq17_critical_ratio()
    assert cs["c_star_brent"] == pytest.approx(cs["c_star_grid"], abs=1e-8)
    assert cs["c_star_brent"] == pytest.approx(0.2238716, abs=1e-6)
    c = cs["c_star_brent"]
    for beta in (0.1, 1.0, 3.0):
        below = _certificate_search("cpo_eq17", beta, {"gamma": 0.9 * c * beta}, RC, RR)
        above = _certificate_search("cpo_eq17", beta, {"gamma": 1.1 * c * beta}, RC, RR)
        assert not below["certifies_on_grid"] and above["certifies_on_grid"]
        assert below["counterexample"]["loss_below_log2_with_delta_negative"]


@pytest.mark.parametrize("margin,certifies", [(0.0, True), (0.7, True), (-0.2, False)])
def test_clip_certifies_iff_margin_nonnegative(margin, certifies):
    res = _certificate_search("cpo_clip", 1.0, {"margin": margin}, RC, RR)
    assert res["certifies_on_grid"] == certifies
    assert res["T_min_on_grid"] == pytest.approx(margin, abs=1e-12)


@pytest.mark.parametrize("gamma", [2.0, 0.5, 0.0, -0.5, -20.0])
def test_easy_never_certifies_on_unbounded_means(gamma):
    res = _certificate_search("cpo_easy", 1.0, {"gamma": gamma}, *_easy_grid())
    assert not res["certifies_on_grid"]
    cx = res["counterexample"]
    assert cx["loss"] < LOG2 and cx["delta"] < 0


def test_easy_margin_is_negative_for_positive_gamma():
    rc, rr = torch.tensor([-1.3, -0.2], dtype=torch.float64), torch.tensor([-0.8, -2.5], dtype=torch.float64)
    t = implicit_target("cpo_easy", rc, rr, beta=0.5, gamma=0.5)
    assert torch.all(t < rc - rr)


def test_dpo_loss_below_log2_with_negative_delta():
    f = get_loss("dpo")
    z = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    # delta_ref = -2, delta = -1: loss = softplus(-1) < log 2 although pi(y_w) < pi(y_l)
    loss = float(f(z(-2.0), z(-1.0), z(-3.0), z(-1.0), beta=1.0).losses[0])
    assert loss == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-12)
    assert loss < LOG2


def test_mean_certificate_says_nothing_about_summed_delta():
    f = get_loss("cpo_clip")
    # token log-probabilities: y_w has 10 tokens, y_l has 2
    pol_w, pol_l = np.full(10, -1.0), np.full(2, -2.0)
    ref_w, ref_l = np.full(10, -1.2), np.full(2, -1.5)
    z = lambda v: torch.tensor([float(v)], dtype=torch.float64)  # noqa: E731
    loss_mean = float(f(z(pol_w.mean()), z(pol_l.mean()), z(ref_w.mean()), z(ref_l.mean()), beta=1.0).losses[0])
    loss_sum = float(f(z(pol_w.sum()), z(pol_l.sum()), z(ref_w.sum()), z(ref_l.sum()), beta=1.0).losses[0])
    assert loss_mean < LOG2 and pol_w.mean() - pol_l.mean() > 0  # the mean-based certificate fires
    assert pol_w.sum() - pol_l.sum() == pytest.approx(-6.0)  # yet pi(y_w) < pi(y_l) as sequences
    assert loss_sum > LOG2  # the same loss on summed log-probabilities does not certify
