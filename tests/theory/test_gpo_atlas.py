"""theory.gpo_atlas against numbers derived by hand (docs/theory.md §16)."""

import math

import mpmath
import pytest
import sympy as sp

from dpo_rlhf_checks.atlas_rows import Setting
from theory import gpo_atlas as G


def test_ipo_minimiser_and_end_point():
    """IPO: f = (t - 1/2)^2/beta^2, t_f = 1/2, h* = 1/(2 beta) = 5 at beta = 0.1; per-token equal lengths n = 10:
    D = n t_f/beta = 50 (beta D = 5)."""
    f = G.f_expr("ipo", {}, 0.1)
    assert G.stationary_points(f) == [(pytest.approx(0.5, abs=1e-12), "min")]
    assert G.end_point_D(Setting("ipo"), 0.5) == pytest.approx(5.0, rel=1e-12)
    assert G.end_point_D(Setting("ipo", n=10), 0.5) == pytest.approx(50.0, rel=1e-12)


def test_per_token_end_point_unequal_lengths():
    """n_w = 2, n_l = 4, t_f/beta = 1: D = (1/2 + 1/4)/(1/4 + 1/16) = 0.75/0.3125 = 2.4."""
    D = G.per_token_end_point()["D"].subs({G.n_w: 2, G.n_l: 4, G.t_f_sym: 1, G.beta: 1})
    assert float(D) == pytest.approx(2.4, rel=1e-12)


def test_forward_kl_end_point_by_hand():
    """forward_kl, s = 1 - e^-r: the flow keeps e^r_w + e^r_l = 2 and stops at e^-r_l - e^-r_w = c = t_f/beta.
    With a = e^r_w: c a^2 + (2 - 2c) a - 2 = 0, a = ((c - 1) + sqrt(1 + c^2))/c; hinge (t_f = 1, beta = 0.1): c = 10,
    a = (9 + sqrt(101))/10, D = log(a/(2 - a)) = 2.99822..."""
    c = 10.0
    a = ((c - 1) + math.sqrt(1 + c * c)) / c
    assert G.end_point_D(Setting("hinge", f_div="forward_kl"), 1.0) == pytest.approx(math.log(a / (2 - a)), rel=1e-10)


def test_exo_minimiser_is_logit_of_one_minus_eps():
    f = G.f_expr("exo_pair", {"label_smoothing": 1e-3}, 0.1)
    [(x, kind)] = G.stationary_points(f)
    assert kind == "min" and x == pytest.approx(math.log(0.999 / 0.001), rel=1e-10)


def test_discopop_local_minimum_below_zero():
    """TRL's tau = 0.05: f'(0) = 1/(4 tau) - 3/4 - log(2)/(4 tau) > 0 and a local minimum at t ~ -0.119."""
    f = G.f_expr("discopop", {"discopop_tau": 0.05}, 0.1)
    fp0 = float(sp.diff(f, G.t).subs(G.t, 0))
    assert fp0 == pytest.approx(5 - 0.75 - 5 * math.log(2), rel=1e-12)
    mins = [x for x, k in G.stationary_points(f) if k == "min"]
    assert mins and mins[0] == pytest.approx(-0.1186, abs=5e-4)


def test_logistic_time_in_U_by_hand():
    """DPO: dh/dt = 2 beta sigma(-beta h); T = (1/(2 beta^2)) int_0^U0 (1 + e^t) dt = (U0 + e^U0 - 1)/(2 beta^2).
    At U0 = 3, beta = 0.1: (3 + e^3 - 1)/0.02 = 1104.2768..."""
    law = G.time_law(G._sp(-G.t))
    val = float(law.subs({G.U0: 3, G.beta: sp.Rational(1, 10)}))
    assert val == pytest.approx((3 + math.exp(3) - 1) / 0.02, rel=1e-12)


def test_robust_time_in_U_grows_linearly():
    """robust, eps = 0.1: -f' -> eps/(1 - 2 eps) = 1/8, so T/U0 -> (1 - 2 eps)/(2 eps beta^2) = 4 at beta = 1."""
    e = sp.Rational(1, 10)
    f = ((1 - e) * G._sp(-G.t) - e * G._sp(G.t)) / (1 - 2 * e)
    law = G.time_law(f)
    assert sp.limit((law / G.U0).subs(G.beta, 1), G.U0, sp.oo) == 4


@pytest.mark.parametrize("loss, params, q, expected", [
    ("ipo", {}, 0.88, 0.38),  # t* = q - 1/2
    ("hinge", {}, 0.7, 1.0),  # sign(dr)
    ("exo_pair", {"label_smoothing": 0.1}, 0.75, 0.5 * math.log(9)),  # (2q - 1) log((1 - eps)/eps)
    ("robust", {"label_smoothing": 0.1}, 0.6, math.log(0.5 / 0.3)),  # log((q - eps)/(1 - q - eps))
    ("nca_pair", {}, 0.8, math.log(4)),  # dr
    ("bco_pair", {}, 0.8, 2 * math.log(4)),  # 2 dr
    ("sppo_hard", {}, 0.8, 0.6),  # 2q - 1
    ("sigmoid", {}, 0.2, -math.log(4)),  # dr
])
def test_population_optimum_by_hand(loss, params, q, expected):
    assert float(G.population_t_star(loss, params, q)) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_population_no_finite_minimiser():
    assert G.population_t_star("apo_zero", {}, 0.7) == mpmath.inf
    assert G.population_t_star("robust", {"label_smoothing": 0.1}, 0.95) == mpmath.inf


def test_fdiv_population_reverse_kl_is_pi_star():
    """The normalised two-response solver returns pi*'s delta = delta_ref + dr/beta under reverse_kl (a control
    for the f-divergence rows, where it must differ)."""
    d = G.fdiv_population_delta("reverse_kl", None, 0.1, math.log(0.3), math.log(0.7), 1.0)
    assert d == pytest.approx(math.log(0.3 / 0.7) + 10.0, rel=1e-12)
    d_f = G.fdiv_population_delta("forward_kl", None, 0.1, math.log(0.3), math.log(0.7), 1.0)
    assert abs(d_f - d) > 1.0


def test_row_classes():
    rows = {s.loss: G.symbolic_row(s) for s in (Setting("sigmoid"), Setting("hinge"), Setting("discopop", params={
        "discopop_tau": 0.05}), Setting("sppo_hard"), Setting("aot"), Setting("cpo_sigmoid"))}
    assert {k: v["class"] for k, v in rows.items()} == {
        "sigmoid": "transient", "hinge": "absorbing", "discopop": "wrong-way", "sppo_hard": "pinned",
        "aot": "batch-coupled", "cpo_sigmoid": "empty-U"}
    assert rows["hinge"]["beta_D"] == pytest.approx(1.0)
    assert rows["sppo_hard"]["beta_D"] == pytest.approx(1.0)
