"""theory.gpo_atlas against numbers derived by hand (docs/theory.md §16)."""

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import sympy as sp

from dpo_rlhf_checks.atlas_rows import ROWS, Setting
from dpo_rlhf_checks.result import CheckContext
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


@pytest.mark.parametrize("f, expected", [
    (G.t ** 4, [(0.0, "min")]), (-G.t ** 4, [(0.0, "max")]), (G.t ** 3, [(0.0, "neither")]),
    (-G.t ** 6, [(0.0, "max")]), (G.t ** 5, [(0.0, "neither")]),
    # f' = (t - 1)^2 (t + 1) (5t + 1): sign + | - | + | + across -1, -1/5, 1, so max, min, and an inflection at 1
    ((G.t - 1) ** 3 * (G.t + 1) ** 2, [(-1.0, "max"), (-0.2, "min"), (1.0, "neither")]),
])
def test_stationary_points_degenerate_kinds(f, expected):
    """A stationary point with f'' = 0 is classified by the sign of f' on its two sides (worked by hand above): t^4
    has its minimum at 0, -t^4 its maximum, t^3 an inflection. The f''-only test called all three 'max'."""
    got = sorted(G.stationary_points(f, -4, 4))
    assert [k for _, k in got] == [k for _, k in expected]
    assert [x for x, _ in got] == pytest.approx([x for x, _ in expected], abs=1e-12)


@pytest.mark.parametrize("c", [sp.Rational(397, 100), 4, -4])
def test_stationary_points_on_the_grid_path_reach_both_ends(c):
    """(t - c)^2 (2 + sin t) >= 0 = f(c): a minimum at c, which solveset does not give as a finite set, so the grid
    of sign changes finds it. A root in the grid's last step (3.97) was lost when the grid stopped one step short of
    hi (a survivor of mutation), and one on hi itself (4) had no grid pair that starts there; [lo, hi] is closed."""
    got = G.stationary_points((G.t - c) ** 2 * (2 + sp.sin(G.t)), -4, 4)
    assert [k for x, k in got if abs(x - float(c)) < 1e-9] == ["min"]


@pytest.mark.parametrize("f_div, alpha, at_1", [
    ("reverse_kl", None, 1.0), ("forward_kl", None, 1 - math.exp(-1)),
    ("js_divergence", None, math.log(2 / (1 + math.exp(-1)))),
    ("alpha_divergence", 0.5, 2 - 2 * math.exp(-0.5)), ("alpha_divergence", 0.25, (math.exp(-0.75) - 1) / -0.75),
])
def test_score_by_hand(f_div, alpha, at_1):
    """s(r) = f'(e^r) of each f-divergence (docs/theory.md §16): 0 at r = 0, and its value at r = 1 by hand (alpha:
    (e^((a - 1) r) - 1)/(a - 1)). A constant off in the alpha score (a survivor of mutation: s(0) = 2) changed no
    output, since every caller takes differences of s, but it is not the documented score."""
    s = G.score_expr(f_div, alpha)
    assert float(s.subs(G.rw, 0)) == pytest.approx(0.0, abs=1e-15)
    assert float(s.subs(G.rw, 1)) == pytest.approx(at_1, rel=1e-14)


@pytest.mark.parametrize("f, expected", [
    ((G.t - sp.Rational(31, 100)) ** 2 * (G.t - sp.Rational(32, 100)) ** 2, None),
    (sp.Rational(1, 3) * G.t ** 3 - sp.Rational(63, 200) * G.t ** 2 + sp.Rational(31, 100) * sp.Rational(32, 100) * G.t,
     [(0.31, "max"), (0.32, "min")]),
    ((G.t - sp.Rational(1, 3)) ** 4, [(1 / 3, "min")]),
    ((G.t - sp.Rational(1, 3)) ** 3, [(1 / 3, "neither")]),
])
def test_stationary_points_between_grid_points(f, expected):
    """Zeros of f' that solveset finds and the 0.05 grid cannot: two 0.01 apart (0.31 and 0.32, one sign change
    each side lost between grid points) and a degenerate one at 1/3, off the grid. With solveset's arguments swapped
    (a survivor of mutation) the set was always empty and the grid returned [] for these."""
    got = G.stationary_points(f, -4, 4)
    if expected is None:  # f' = 2 (t - 0.31)(t - 0.32)(2t - 0.63): three zeros, min, max, min
        expected = [(0.31, "min"), (0.315, "max"), (0.32, "min")]
    assert [k for _, k in sorted(got)] == [k for _, k in expected]
    assert [x for x, _ in sorted(got)] == pytest.approx([x for x, _ in expected], abs=1e-12)


def test_stationary_points_degenerate_kind_on_the_grid_path():
    """(t - 1)^4 (2 + sin t) >= 0 = f(1): a degenerate minimum at 1 (f'' = 0 there) that solveset does not give as a
    finite set, so the grid of sign changes finds it; its negative has a maximum there."""
    f = (G.t - 1) ** 4 * (2 + sp.sin(G.t))
    assert G.stationary_points(f, -4, 4) == [(pytest.approx(1.0, abs=1e-9), "min")]
    assert G.stationary_points(-f, -4, 4) == [(pytest.approx(1.0, abs=1e-9), "max")]


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


def test_population_optimum_far_out_by_hand():
    """t* beyond 30 (the bisection bracket starts at [-60, 60]). exo_pair: f = KL(Bern(sigma(t)) || Bern(1 - eps)) has
    f'(t) = sigma'(t) (t - L), L = log((1 - eps)/eps), so the population derivative is sigma'(t) (t - (2q - 1) L) and
    t* = (2q - 1) L: 0.9999998 * 46.0517 = 46.0517 at eps = 1e-20, q = 0.9999999. sigmoid: t* = log(q/(1 - q)) =
    log(10^25 - 1) = 57.56 at q = 1 - 10^-25 (exact)."""
    e, q = 1e-20, 0.9999999
    ts = float(G.population_t_star("exo_pair", {"label_smoothing": e}, q))
    assert ts == pytest.approx((2 * q - 1) * (math.log1p(-e) - math.log(e)), rel=1e-12)
    ts = float(G.population_t_star("sigmoid", {}, Fraction(10 ** 25 - 1, 10 ** 25)))
    assert ts == pytest.approx(25 * math.log(10) + math.log1p(-1e-25), rel=1e-12)


@pytest.mark.parametrize("loss, q, expected", [
    ("sigmoid", 0.99999999, math.log(99999999)),  # q/(1 - q) = 0.99999999/0.00000001
    ("sigmoid", 1e-8, -math.log(99999999)),
    ("sigmoid", Fraction(999999999, 10 ** 9), math.log(999999999)),
    ("sigmoid", sp.Rational(999999999, 10 ** 9), math.log(999999999)),
    ("ipo", 0.99999999, 0.49999999),  # q - 1/2
])
def test_population_optimum_q_near_one_is_not_rounded(loss, q, expected):
    """q is taken exactly (a float by its decimal): sp.nsimplify, used before, rounded 0.99999999 and even the exact
    999999999/10^9 to 1, so sigmoid raised 'no sign change' and ipo returned 1/2 instead of q - 1/2."""
    assert float(G.population_t_star(loss, {}, q)) == pytest.approx(expected, rel=1e-12)


def test_population_optimum_beyond_the_first_bracket():
    """t* = (2q - 1) log((1 - eps)/eps) (the closed form above) = 0.98 * 92.1034 = 90.2613 at eps = 1e-40, q = 0.99:
    past the bisection's first bracket [-60, 60], which it widens (before: 'no sign change' for t* > 60)."""
    e, q = 1e-40, 0.99
    expected = (2 * q - 1) * (math.log1p(-e) - math.log(e))
    assert expected == pytest.approx(90.2613356, rel=1e-8)
    assert float(G.population_t_star("exo_pair", {"label_smoothing": e}, q)) == pytest.approx(expected, rel=1e-12)
    assert float(G.population_t_star("exo_pair", {"label_smoothing": e}, 1 - q)) == pytest.approx(-expected, rel=1e-12)


def test_population_optimum_takes_numpy_numbers():
    """numpy floats and ints are numbers too (numpy's repr, 'np.float64(0.88)', is not a decimal SymPy reads)."""
    ts = float(G.population_t_star("exo_pair", {"label_smoothing": np.float64(1e-3)}, np.float64(0.88)))
    assert ts == pytest.approx(0.76 * (math.log1p(-1e-3) - math.log(1e-3)), rel=1e-12)  # (2q - 1) log((1 - e)/e)
    assert float(G.population_t_star("sigmoid", {}, np.float32(0.5))) == pytest.approx(0.0, abs=1e-30)


def test_population_optimum_params_are_not_rounded():
    """label_smoothing is taken exactly (a float by its decimal), like q: sp.nsimplify, used before, made 0.49999999
    into 1/2, where exo_pair's f is flat in q and t* came out -2.9e-41 instead of (2q - 1) log(0.50000001/0.49999999)
    = 0.8 * 4.0e-8 = 3.2e-8."""
    e, q = 0.49999999, 0.9
    expected = (2 * q - 1) * math.log((1 - e) / e)
    assert expected == pytest.approx(3.2e-8, rel=1e-6)
    assert float(G.population_t_star("exo_pair", {"label_smoothing": e}, q)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("bad", [math.nan, math.inf, "x", None])
def test_population_optimum_rejects_a_non_number_parameter(bad):
    with pytest.raises(ValueError, match="label_smoothing must be a finite real number"):
        G.population_t_star("exo_pair", {"label_smoothing": bad}, 0.9)


@pytest.mark.parametrize("q", [0, 1, 1.0, 1 - 1e-17, 1.5, -0.1])
def test_population_optimum_rejects_q_outside_the_open_interval(q):
    """1 - 1e-17 is the float 1.0: one clear error, not 'no sign change' from the root finder (or, for hinge, an
    answer)."""
    for loss in ("sigmoid", "hinge"):
        with pytest.raises(ValueError, match=r"q must lie in \(0, 1\)"):
            G.population_t_star(loss, {}, q)


def _discopop_f(t: "torch.Tensor") -> "torch.Tensor":
    """f(t) of DiscoPOP (tau = 0.05) from the toolkit's torch loss (pref_losses.discopop_loss) at beta = 1, h = t: an
    implementation independent of the SymPy f_expr that population_t_star reads (log-probabilities shifted by -30)."""
    import torch

    from dpo_rlhf_checks.pref_losses import discopop_loss
    base = torch.full_like(t, -30.0)
    return discopop_loss(base + t, base, base, base, beta=1.0, discopop_tau=0.05).losses


@pytest.mark.parametrize("q", [0.05, 0.3, 0.6, 0.88, 0.995])
def test_discopop_population_optimum_is_the_global_minimiser_on_a_grid(q):
    """DiscoPOP is not convex, so t* must be the global minimiser of L(t) = q f(t) + (1 - q) f(-t), not just a root
    of its derivative: against the argmin of L on a grid of step 1e-3 over [-20, 20] (L grows like |t| outside),
    t* within one grid step. (Measured: t* = -2.99334, -1.12777, 0.78214, 2.10717, 5.29829.)"""
    import torch
    ts = torch.linspace(-20.0, 20.0, 40001, dtype=torch.float64)
    L = q * _discopop_f(ts) + (1 - q) * _discopop_f(-ts)
    t_grid = float(ts[int(torch.argmin(L))])
    t_star = float(G.population_t_star("discopop", {"discopop_tau": 0.05}, q))
    assert abs(t_star - t_grid) <= 1e-3
    # and L at t* is no higher than anywhere on the grid (to rounding)
    at = torch.tensor([t_star], dtype=torch.float64)
    assert float(q * _discopop_f(at) + (1 - q) * _discopop_f(-at)) <= float(L.min()) + 1e-12


def test_cpo_hinge_row_t_f_is_where_the_loss_turns_flat():
    """cpo_hinge, f(t) = max(0, 1 - t): the row's t_f is the point from which the toolkit's loss
    (pref_losses.cpo_hinge_loss, t = beta (log pi(y_w) - log pi(y_l))) is exactly 0, and below it the loss is
    positive (f(t_f - d) = d)."""
    import torch

    from dpo_rlhf_checks.pref_losses import cpo_hinge_loss
    tf = G.symbolic_row(Setting("cpo_hinge"))["t_f"]
    d = 1e-3
    t_vals = torch.tensor([tf - d, tf, tf + d, tf + 5.0], dtype=torch.float64)
    loss = cpo_hinge_loss(t_vals - 10.0, torch.full_like(t_vals, -10.0), beta=1.0).losses
    assert float(loss[0]) == pytest.approx(d, rel=1e-9)
    assert loss[1:].tolist() == [0.0, 0.0, 0.0]


def test_population_no_finite_minimiser():
    assert G.population_t_star("apo_zero", {}, 0.7) == mpmath.inf
    assert G.population_t_star("robust", {"label_smoothing": 0.1}, 0.95) == mpmath.inf


def test_apo_zero_population_at_and_around_q_one_half():
    """apo_zero's population loss q (sigma(-z_w) + sigma(z_l)) + (1 - q) (sigma(-z_l) + sigma(z_w)) (written out here
    in floats) is 1 for every z at q = 1/2 (sigma(x) + sigma(-x) = 1), so every t minimises and population_t_star
    returns the finite t = 0 = dr there (it returned -inf, 'runs off to -inf', before); on either side of 1/2, by as
    little as 1/10^30, the loss falls strictly towards t = +inf (q > 1/2) or -inf (q < 1/2). Pins both comparisons
    with 1/2 (a survivor of mutation: q > 1/2 -> q >= 1/2 gave +inf at q = 1/2)."""
    sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    pop = lambda q, zw, zl: q * (sig(-zw) + sig(zl)) + (1 - q) * (sig(-zl) + sig(zw))  # noqa: E731
    rng = np.random.default_rng(3)
    for zw, zl in rng.uniform(-20, 20, size=(50, 2)):
        assert pop(0.5, zw, zl) == pytest.approx(1.0, abs=1e-15)
        assert pop(0.7, zw + 1, zl - 1) < pop(0.7, zw, zl) and pop(0.3, zw - 1, zl + 1) < pop(0.3, zw, zl)
    half = G.population_t_star("apo_zero", {}, 0.5)
    assert mpmath.isfinite(half) and half == 0
    assert G.population_t_star("apo_zero", {}, Fraction(1, 2)) == 0
    eps = Fraction(1, 10 ** 30)
    assert G.population_t_star("apo_zero", {}, Fraction(1, 2) + eps) == mpmath.inf
    assert G.population_t_star("apo_zero", {}, Fraction(1, 2) - eps) == -mpmath.inf


def test_fdiv_population_reverse_kl_is_pi_star():
    """The normalised two-response solver returns pi*'s delta = delta_ref + dr/beta under reverse_kl (a control
    for the f-divergence rows, where it must differ)."""
    d = G.fdiv_population_delta("reverse_kl", None, 0.1, math.log(0.3), math.log(0.7), 1.0)
    assert d == pytest.approx(math.log(0.3 / 0.7) + 10.0, rel=1e-12)
    d_f = G.fdiv_population_delta("forward_kl", None, 0.1, math.log(0.3), math.log(0.7), 1.0)
    assert abs(d_f - d) > 1.0


@pytest.mark.parametrize("dr", [0.0, -1.0e-3, -1.0])
def test_fdiv_population_delta_for_a_label_that_does_not_favour_y_w(dr):
    """fdiv_population_delta for dr <= 0 (BT labels with q <= 1/2; the toolkit itself calls it only at dr = 1):
    pi_ref = (0.3, 0.7), beta 0.1. Its root r_l = log(pi(y_l)/pi_ref(y_l)) lies in (0, -log 0.7) there, so the
    bracket must reach the documented upper end -log pi_ref(y_l); a bracket that stopped at r_l < 0 raised
    'no sign change' for every dr <= 0 and every f (a survivor of mutation). Expected values by hand: reverse KL
    gives pi*, delta = log(3/7) + dr/beta (-10.8473 at dr = -1); at dr = 0 every strictly increasing score gives
    r_w = r_l, pi = pi_ref, delta = log(3/7); otherwise brentq on beta (s(r_w) - s(r_l)) = dr with the f-DPO scores
    written out (forward KL s = -e^-r, JS s = log sigma(r), alpha 1/2 s = -2 e^(-r/2); constants cancel): at dr = -1
    -3.5477, -11.7346, -4.7247."""
    from scipy.optimize import brentq

    scores = {"reverse_kl": lambda r: r, "forward_kl": lambda r: -math.exp(-r),
              "js_divergence": lambda r: -math.log1p(math.exp(-r)),
              "alpha_divergence": lambda r: -2.0 * math.exp(-r / 2)}
    log_w, log_l, beta = math.log(0.3), math.log(0.7), 0.1
    for f_div, s in scores.items():
        def eq(d, s=s):
            log_pw, log_pl = -math.log1p(math.exp(-d)), -math.log1p(math.exp(d))
            return beta * (s(log_pw - log_w) - s(log_pl - log_l)) - dr

        by_hand = brentq(eq, -60.0, 60.0, xtol=1e-14)
        got = G.fdiv_population_delta(f_div, 0.5 if f_div == "alpha_divergence" else None, beta, log_w, log_l, dr)
        assert got == pytest.approx(by_hand, abs=1e-9), f_div
        if f_div == "reverse_kl":
            assert got == pytest.approx(math.log(3 / 7) + dr / beta, abs=1e-12)
        if dr == 0.0:
            assert got == pytest.approx(math.log(3 / 7), abs=1e-12), f_div


def test_row_classes():
    rows = {s.loss: G.symbolic_row(s) for s in (Setting("sigmoid"), Setting("hinge"), Setting("discopop", params={
        "discopop_tau": 0.05}), Setting("sppo_hard"), Setting("aot"), Setting("cpo_sigmoid"))}
    assert {k: v["class"] for k, v in rows.items()} == {
        "sigmoid": "transient", "hinge": "absorbing", "discopop": "wrong-way", "sppo_hard": "pinned",
        "aot": "batch-coupled", "cpo_sigmoid": "empty-U"}
    assert rows["hinge"]["beta_D"] == pytest.approx(1.0)
    assert rows["sppo_hard"]["beta_D"] == pytest.approx(1.0)


def test_row_time_law_text_follows_the_sign_of_beta_d():
    """Pins the atlas table's time-law text (atlas.py prints it in the 'time law' column) against the sign of beta D
    of the rows with a finite t_f. hinge: t_f = 1, beta D = 1 > 0 (by hand: the loss is flat past h = 1/beta, so a
    pair with beta delta_ref < -1 never leaves U; README's atlas table: 'stays in U iff beta delta_ref < -1 | for
    good'): absorbing, 'stays for good when beta delta_ref < -beta D'. discopop at tau = 0.05: beta D <= 0,
    wrong-way, 'never enters U; delta ends below delta_ref'. With the text's own test flipped ('D < 0'), every
    absorbing row read 'never enters U' while its class said absorbing (a survivor of mutation)."""
    hinge = G.symbolic_row(Setting("hinge"))
    disco = G.symbolic_row(Setting("discopop", params={"discopop_tau": 0.05}))
    assert hinge["class"] == "absorbing" and hinge["beta_D"] == pytest.approx(1.0)
    assert hinge["time_law"] == "stays for good when beta delta_ref < -beta D"
    assert disco["class"] == "wrong-way" and disco["beta_D"] <= 0
    assert disco["time_law"] == "never enters U; delta ends below delta_ref"


def test_module_leaves_mpmath_global_precision_alone():
    """Importing theory.gpo_atlas, and deriving a row with it, leaves mpmath's global precision as it was (it once
    set mp.dps = max(mp.dps, 40) at import time, changing every other module's precision); its own evaluations
    still run at DPS digits (a root found to 40 digits, checked against a 40-digit reference)."""
    import subprocess
    import sys
    code = ("import mpmath; mpmath.mp.dps = 15; import theory.gpo_atlas as G; a = mpmath.mp.dps; "
            "from dpo_rlhf_checks.atlas_rows import Setting; G.symbolic_row(Setting('ipo', n=10)); "
            "G.population_t_star('discopop', {'discopop_tau': 0.05}, 0.88); print(a, mpmath.mp.dps)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["15", "15"]
    saved = mpmath.mp.dps
    try:
        mpmath.mp.dps = 120
        G.stationary_points(G.f_expr("discopop", {"discopop_tau": 0.05}, 0.1))
        assert mpmath.mp.dps == 120
    finally:
        mpmath.mp.dps = saved


@pytest.mark.parametrize("loss, u0, expected", [
    ("bco_pair", 2.0, 2 * math.log1p(math.exp(-1.0))),  # 2 softplus(-U0/2), z_w = -z_l = U0/2
    ("apo_zero", 2.0, 2 / (1 + math.e)),  # 2 sigma(-U0/2)
    ("apo_down", 2.0, 1 / (1 + math.exp(2.0))),  # sigma(-U0), z_w -> -inf
    ("nca_pair", 0.0, 2 * math.log(2)),  # a = 1: u = 1, z_w = z_l = 0
    ("nca_pair", 60.0, math.log(1.5) + 0.5 * math.log(3)),  # the floor: z_w = log 2, z_l -> -inf
    ("sppo_hard", 0.5, 0.25 / (2 * 0.01)),  # (1 - U0)^2/(2 beta^2), beta = 0.1
    ("sppo_hard", 2.0, 0.0),  # the minimum lies in delta <= 0: no certificate
])
def test_absolute_certificate_by_hand(loss, u0, expected):
    """l_crit = inf {l : delta <= 0} of the absolute-term losses, at points worked by hand."""
    c = G.absolute_certificate(loss)
    assert all(c["checks"].values())
    val = float(c["l_crit"].subs({G.beta: sp.Rational(1, 10), G.U0: sp.nsimplify(u0)}))
    assert val == pytest.approx(expected, rel=1e-10, abs=1e-300)


def test_nca_exit_time_limits():
    """nca_pair: z_w -> log 2, so for large U0 the rejected side does the work: T ~ (2/beta^2) e^(U0 - log 2) =
    e^U0/beta^2 (ratio -> 1); at the reference dz_w/dt = beta^2 (1/2 - 1/4) and dz_l/dt = -beta^2/4, so D = z_w - z_l
    grows at beta^2/2 and T ~ 2 U0/beta^2 for small U0."""
    assert float(G.nca_exit_time(12.0, 0.1)) / (math.exp(12.0) / 0.01) == pytest.approx(1.0, abs=2e-4)
    assert float(G.nca_exit_time(1e-4, 0.1)) == pytest.approx(2e-4 / 0.01, rel=1e-3)


@pytest.mark.parametrize("u0", [60.0, 300.0])
def test_nca_exit_time_far_in_u(u0):
    """Far in U, z_l = W(e^c) - c is a difference of two numbers near c ~ e^U0: written so, it lost every digit (at U0
    = 60 mpmath's root finder gave up with an error). By hand: -log W = z_w - U0 -> log 2 - U0 gives W = e^U0 / 2 and
    T = (2/beta^2)(W + log W - 1) = e^U0/beta^2 + 2 (U0 - log 2 - 1)/beta^2, a relative correction below 1e-20."""
    assert float(G.nca_exit_time(u0, 0.1) * mpmath.mpf("0.01") / mpmath.exp(u0)) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("u0, beta", [(math.nan, 0.1), (math.inf, 0.1), (-0.5, 0.1), (0.5, 0.0), (0.5, -1.0),
                                      (0.5, math.nan)])
def test_nca_exit_time_rejects_bad_input(u0, beta):
    """A NaN, a pair outside U or beta <= 0 is named, not a deep mpmath error (beta = 0 made the bracket search loop
    forever: F is constant)."""
    with pytest.raises(ValueError, match="nca_exit_time"):
        G.nca_exit_time(u0, beta)


def test_nca_exit_time_at_the_boundary_of_u():
    """U0 = 0: the pair starts on delta = 0, so it leaves U at once (T = 0 exactly: z_w(0) = z_l(0) = 0)."""
    assert G.nca_exit_time(0.0, 0.1) == 0

def test_sigmoid_sft_mix_row_by_hand():
    """sigmoid + w sft (n = 10, w = 1, beta = 0.1): dx/dt = 0.02 sigma(-x) + 0.01; T(2) = 2/0.03 + (0.02/(0.03 *
    0.01)) log((0.03 + 0.01 e^2)/0.04) = 130.30...; l_crit(2) = softplus(-2) + log(2)/10; linear slope n/(beta w) = 100."""
    row = G.symbolic_row(Setting("sigmoid+sft", params={"sft_weight": 1.0}, n=10))
    law = row["_time_law_expr"].subs({G.beta: sp.Rational(1, 10), G.U0: 2})
    assert float(law) == pytest.approx(2 / 0.03 + (0.02 / 0.0003) * math.log((0.03 + 0.01 * math.exp(2)) / 0.04),
                                       rel=1e-12)
    assert float(row["_l_crit_expr"].subs(G.U0, 2)) == pytest.approx(math.log1p(math.exp(-2)) + math.log(2) / 10,
                                                                    rel=1e-12)
    assert "slope 10/beta" in row["time_law"]


def test_transient_symbolic_proves_and_backs_each_law(tmp_path):
    """gpo-transient-U's symbolic method: every derived time law equals the amendment's by simplify AND by mpmath at
    35 digits on 12 points (rounding there is ~1e-35, so agreement to 1e-25 is required of each); the robust slope
    T/U0 -> (1 - 2 eps)/(2 eps beta^2) = 4 at eps = 1/10, beta = 1 (by hand)."""
    r = G.transient_symbolic(CheckContext(seed=0, quick=True, out_dir=tmp_path))
    assert r.literal is False and r.amended is True
    ev = r.evidence
    for name in ("logistic", "robust", "exponential", "bco_pair", "apo_zero"):
        assert ev["simplify_proves"][name] is True and ev["max_rel_err_mpmath"][name] < 1e-25, name
    assert ev["T_over_U0_limit"] == {"logistic": "oo", "robust": "4", "bco_pair": "oo", "apo_zero": "oo"}


def test_transient_symbolic_rejects_a_law_the_numbers_cannot_tell_apart(tmp_path, monkeypatch):
    """A claimed logistic law off by e^(-200 U0)/beta^2 (a different function) differs by < 1e-40 relative at the
    check's points, so mpmath alone accepts it; simplify does not, and the check needs both (before, either one)."""
    laws = G.amended_time_laws()
    wrong = {**laws, "logistic": laws["logistic"] + sp.exp(-200 * G.U0) / G.beta ** 2}
    monkeypatch.setattr(G, "amended_time_laws", lambda: wrong)
    r = G.transient_symbolic(CheckContext(seed=0, quick=True, out_dir=tmp_path))
    assert r.evidence["max_rel_err_mpmath"]["logistic"] < 1e-40  # the numbers cannot tell the two laws apart
    assert r.evidence["checks"]["logistic"] is False and r.amended is False


@pytest.mark.parametrize("setting", [s for s in ROWS if s.loss in ("cpo_sigmoid", "cpo_hinge")], ids=lambda s: s.key)
def test_summed_reference_free_rows_get_the_summed_certificate(setting):
    """docs/theory.md §16 (certificates): for summed h and f decreasing, l < f(U0) iff delta > 0; a reference-free
    loss has no delta_ref, so U0 = 0 and the certificate is l < f(0) <=> delta > 0 on the summed delta, with no
    per-token note (the atlas's n = 1 rows cpo_sigmoid and cpo_hinge). The certificate's content is checked on the
    toolkit's own losses (pref_losses, t = beta delta): f(0) = log 2 (sigmoid, softplus(0)) and 1 (hinge,
    max(0, 1 - 0)); loss below f(0) exactly at delta > 0."""
    import torch

    from dpo_rlhf_checks.pref_losses import cpo_hinge_loss, cpo_sigmoid_loss
    assert setting.n == 1
    row = G.symbolic_row(setting)
    assert row["certificate"] == "loss < f(0) <=> delta > 0 (summed)"
    assert "per token" not in row["time_law"] and "per-token" not in row["certificate"]
    fn, f0 = (cpo_sigmoid_loss, math.log(2)) if setting.loss == "cpo_sigmoid" else (cpo_hinge_loss, 1.0)
    delta = torch.tensor([-5.0, -0.5, 0.5, 5.0], dtype=torch.float64)
    loss = fn(delta - 20.0, torch.full_like(delta, -20.0), beta=setting.beta).losses
    assert ((loss < f0 - 1e-12) == (delta > 0)).all()


@pytest.mark.parametrize("setting", [s for s in ROWS if s.loss in ("cpo_ipo", "cpo_simpo", "cpo_alphapo")],
                         ids=lambda s: s.key)
def test_per_token_reference_free_rows_get_the_per_token_certificate(setting):
    """The per-token CPO rows (n = 10, docs/theory.md §13: a certificate on per-token means is the length-normalised
    claim's, not the summed one) carry the per-token certificate and the lengths note, not the summed text."""
    assert setting.n == 10
    row = G.symbolic_row(setting)
    assert row["certificate"] == "per-token delta only (length-normalised claim)"
    assert row["time_law"].endswith("; per token: the summed delta's sign is set by the lengths")


def test_stationary_points_stay_inside_the_window():
    """f = t^2/2 - cos t - k t with k = 4.03 + sin 4.03: f' = t + sin t - k is increasing (1 + cos t >= 0) with one
    zero, a minimum at 4.03, which solveset gives only as a ConditionSet, so the grid finds it. It lies outside
    [-4, 4] and inside [-4, 4.1]. A grid one step past hi (a survivor of mutation) reported it on [-4, 4]."""
    k = sp.Rational(403, 100) + sp.sin(sp.Rational(403, 100))
    f = G.t ** 2 / 2 - sp.cos(G.t) - k * G.t
    assert G.stationary_points(f, -4, 4) == []
    assert G.stationary_points(f, -4, sp.Rational(41, 10)) == [(pytest.approx(4.03, abs=1e-12), "min")]


@pytest.mark.parametrize("loss", ["cpo_simpo", "cpo_alphapo"])
def test_simpo_f_is_softplus_of_gamma_minus_t(loss):
    """f_expr for SimPO / AlphaPO (SimPO Eq. 6: -log sigma(beta h - gamma)) is f(t) = softplus(gamma - t) =
    log(1 + e^(gamma - t)): decreasing in t = beta h, f(gamma) = log 2, f(0) = log(1 + e^gamma) = 0.97408 at gamma =
    1/2 (by hand), and -f'(t) = sigma(gamma - t) > 0 (the atlas's grad_factor). Checked against the hand formula and
    against the toolkit's torch loss (pref_losses.cpo_simpo_loss, alpha = 0: t = beta (log p_w - log p_l), log-probs
    shifted by -20). The atlas reads this f only for 'no stationary point', which the sign-flipped
    softplus(t - gamma) also has, so every atlas row and claim report stayed the same with the wrong sign (a survivor
    of mutation)."""
    import torch

    from dpo_rlhf_checks.pref_losses import cpo_simpo_loss

    gamma, beta = 0.5, 2.0
    params = {"simpo_gamma": gamma} if loss == "cpo_simpo" else {"simpo_gamma": gamma, "alpha": 0.25}
    f = G.f_expr(loss, params, beta)
    ts = [-3.0, -0.5, 0.0, 0.5, 1.0, 4.0]
    vals = [float(f.subs(G.t, sp.Float(x, 30))) for x in ts]
    assert vals == pytest.approx([math.log1p(math.exp(gamma - x)) for x in ts], rel=1e-12)
    assert vals[2] == pytest.approx(0.974077, abs=1e-6) and vals[3] == pytest.approx(math.log(2), rel=1e-12)
    assert all(a > b for a, b in zip(vals, vals[1:]))  # decreasing: a larger margin costs less
    x = torch.tensor(ts, dtype=torch.float64)
    ref = cpo_simpo_loss(x / beta - 20.0, torch.full_like(x, -20.0), beta=beta, simpo_gamma=gamma).losses
    assert vals == pytest.approx(ref.tolist(), rel=1e-12)
    grad = [float(-sp.diff(f, G.t).subs(G.t, sp.Float(x, 30))) for x in ts]
    assert grad == pytest.approx([1 / (1 + math.exp(x - gamma)) for x in ts], rel=1e-12)


def test_population_counterexample_numbers_are_at_its_own_q(tmp_path):
    """loss-population-optimum's symbolic method names its counterexample as per-token IPO (n = 10) at a probability q
    with dr, t* and the dr that pi* needs. The numbers must be those of the q it prints: q in (0, 1), dr = log(q/(1 -
    q)) and t* = q - 1/2 (per-token IPO minimises q (t - 1/2)^2 + (1 - q) (t + 1/2)^2; README's atlas table: "q - 1/2
    per token"), by hand: q = 0.88 gives dr = log(0.88/0.12) = 1.9924 and t* = 0.38. A counterexample printing q = 1.76
    (not a probability) beside the q = 0.88 numbers (a survivor of mutation:
    theory/gpo_atlas.py::population_symbolic::const-x2::ec5433fb59) changed no verdict."""
    res = G.population_symbolic(CheckContext(seed=0, quick=True, out_dir=tmp_path))
    cex = res.counterexample
    assert res.literal is False and cex["loss"] == "ipo"
    q = cex["q"]
    assert 0 < q < 1
    assert q == pytest.approx(0.88, abs=0)  # the q docs/theory.md and the README quote
    assert cex["dr"] == pytest.approx(math.log(q / (1 - q)), rel=1e-12)
    assert cex["pi_star_needs"] == pytest.approx(math.log(q / (1 - q)), rel=1e-12)
    assert cex["t_star"] == pytest.approx(q - 0.5, abs=1e-12)
    assert cex["t_star"] == pytest.approx(0.38, abs=1e-12) and cex["dr"] == pytest.approx(1.992430, abs=1e-6)


def test_nca_exit_time_refuses_a_cubic_root_that_does_not_invert_t_w(monkeypatch):
    """z_w(T) takes v from the cubic w^3 + k w - 2 = 0 and checks that z = log(2 - v) inverts t_w: z - 3 log v =
    beta^2 T to 1e-25 max(1, beta^2 T) (the module works at 40 digits; the residual is ~1e-40). A root off by 1e-12
    relative (an imprecise polyroots, say) must be refused. It matters: a root off by 1e-8 moves T(U0 = 1e-4) from
    0.0200005 to 0.0200025 (1e-4 relative), which the limit test (1e-3) and the flow test at U0 = 2 (4e-10 against
    1e-6) both pass; with the guard's floor raised to 1e25 (a survivor of mutation) it could never fire."""
    G.nca_coordinate_times()  # cached: derived before the patch, so only z_w's root is perturbed
    real_polyroots = mpmath.polyroots

    def slightly_wrong_roots(*args, **kwargs):
        return [r * (1 + mpmath.mpf(10) ** -12) for r in real_polyroots(*args, **kwargs)]

    monkeypatch.setattr(mpmath, "polyroots", slightly_wrong_roots)
    with pytest.raises(ArithmeticError, match="does not invert t_w"):
        G.nca_exit_time(1e-4, 0.1)


def test_nca_exit_time_guard_refuses_a_root_off_by_1e_15_and_keeps_one_off_by_1e_38(monkeypatch):
    """Pins the floor of z_w's inversion guard at 40 digits: z - 3 log v = beta^2 T must hold to 1e-25 max(1,
    beta^2 T). A cubic root off by 1e-15 relative leaves a residual of about (3 + v/(2 - v)) 1e-15 ~ 3e-15, ten orders
    above the floor: refused at U0 = 1e-4, 2 and 12 (beta = 0.1). A root off by 1e-38 (rounding at 40 digits) leaves
    ~3e-38 and is kept, with T(1e-4) = 0.0200005000145837 as unperturbed (to 1e-15 relative). With the floor's exponent
    halved (10^-12.5 = 3.2e-13) a root off by 3e-14 passed and moved T(1e-4) from 0.02000050001458 to 0.02000050002058,
    3e-10 relative, unseen (a survivor of mutation)."""
    G.nca_coordinate_times()  # cached: derived before the patch, so only z_w's root is perturbed
    real_polyroots = mpmath.polyroots
    t_true = float(G.nca_exit_time(1e-4, 0.1))
    off = [None]

    def roots_off(*args, **kwargs):
        return [r * (1 + mpmath.mpf(off[0])) for r in real_polyroots(*args, **kwargs)]

    monkeypatch.setattr(mpmath, "polyroots", roots_off)
    off[0] = "1e-15"
    for u0 in (1e-4, 2.0, 12.0):
        with pytest.raises(ArithmeticError, match="does not invert t_w"):
            G.nca_exit_time(u0, 0.1)
    off[0] = "1e-38"
    assert float(G.nca_exit_time(1e-4, 0.1)) == pytest.approx(t_true, rel=1e-15)
    assert t_true == pytest.approx(0.0200005000145837, rel=1e-13)


def test_reference_free_rows_state_their_own_population_optimum():
    """The atlas's 'BT population optimum' column (atlas.md; README's atlas table) for the reference-free rows: sft's
    text says pi(y_w):pi(y_l) = q:(1-q) and the CPO rows' say delta_policy = t*/beta with t* of their own f. By hand at
    q = 0.88 (dr = logit(q) = 1.992): sft's -(q log p + (1 - q) log(1 - p)) is least at p = q; CPO-hinge's
    q max(0, 1 - t) + (1 - q) max(0, 1 + t) at t = 1 = sign(dr), not dr; CPO-sigmoid's t* = dr gives delta = dr/beta,
    not dr. A flipped 'loss == "sft"' gave every CPO row sft's text and sft the CPO text (a survivor of mutation)."""
    q = 0.88
    dr = math.log(q / (1 - q))
    ps = np.linspace(1e-4, 1 - 1e-4, 99_999)
    p_star = ps[np.argmin(-(q * np.log(ps) + (1 - q) * np.log1p(-ps)))]
    assert abs(p_star - q) < 1e-4
    ts = np.linspace(-3.0, 3.0, 600_001)
    t_hinge = ts[np.argmin(q * np.maximum(0, 1 - ts) + (1 - q) * np.maximum(0, 1 + ts))]
    assert abs(t_hinge - 1.0) < 1e-4 and abs(t_hinge - dr) > 0.9
    pop = {s.loss: G.symbolic_row(s)["population"] for s in ROWS if s.loss in G.REFERENCE_FREE}
    assert {"sft", "cpo_sigmoid", "cpo_hinge"} <= set(pop)
    assert "q:(1-q)" in pop["sft"] and "t*" not in pop["sft"]
    assert "sign(dr)" in pop["cpo_hinge"]
    # CPO-IPO's minimiser is IPO's, q - 1/2 per token (its f is IPO's: (t - 1/2)^2 / beta^2), not hinge's sign(dr)
    assert "q - 1/2 per token" in pop["cpo_ipo"] and "sign" not in pop["cpo_ipo"]
    assert "t*/beta" in pop["cpo_sigmoid"]
    for loss, text in pop.items():
        if loss != "sft":
            assert "t*/beta" in text and "q:(1-q)" not in text, (loss, text)


def test_f_divergence_end_point_far_from_the_reverse_kl_start():
    """exo_pair's t_f = 6.9068 (eps = 1e-3) at beta = 0.1 gives c = t_f/beta = 69.07, where the reverse-KL start
    r_w = c/2 = 34.5 is far from the f-divergence end point; the two-dimensional Newton step used before raised
    mpmath's "could not find root" for all three f-divergences. Against closed forms along the flow's curve
    G(r_w) = g = -G(r_l): forward_kl (G = e^r - 1, s = 1 - e^-r): 2g/(1 - g^2) = c; alpha_divergence a = 1/2
    (G = 2(e^(r/2) - 1), s = 2(1 - e^(-r/2))): 2g/(1 - g^2/4) = c; js_divergence (G = r + e^r - 1, s = log 2 + log
    sigma(r)) by SciPy's brentq on its own."""
    from scipy.optimize import brentq

    f = G.f_expr("exo_pair", {"label_smoothing": 1e-3}, 0.1)
    (tf, kind), = G.stationary_points(f)
    assert kind == "min" and tf == pytest.approx(math.log(0.999 / 0.001), rel=1e-9)  # logit(1 - eps)
    c = tf / 0.1
    g = (math.sqrt(1 + c * c) - 1) / c
    forward = math.log((1 + g) / (1 - g))
    g2 = (math.sqrt(4 + c * c) - 2) / (c / 2)
    alpha = 2 * math.log((1 + g2 / 2) / (1 - g2 / 2))

    def js_r(gv):
        # r + e^r - 1 = gv: r in [0, log(1 + gv)] for gv >= 0, in (gv, gv + 1) for gv < 0
        lo, hi = (0.0, math.log1p(gv)) if gv >= 0 else (gv, gv + 1)
        return brentq(lambda r: r + math.exp(r) - 1 - gv, lo, hi, xtol=1e-15)

    def log_sigmoid(r):
        return -math.log1p(math.exp(-r)) if r >= 0 else r - math.log1p(math.exp(r))

    def js_excess(gv):
        return log_sigmoid(js_r(gv)) - log_sigmoid(js_r(-gv)) - c

    gj = brentq(js_excess, 0.0, 1e3, xtol=1e-13)
    js = js_r(gj) - js_r(-gj)
    for f_div, a, want in (("forward_kl", None, forward), ("alpha_divergence", 0.5, alpha), ("js_divergence", None, js)):
        got = G.end_point_D(Setting("exo_pair", params={"label_smoothing": 1e-3}, f_div=f_div, alpha_coef=a), tf)
        assert got == pytest.approx(want, rel=1e-9), f_div
    assert forward == pytest.approx(4.928284562920829, rel=1e-12) and alpha == pytest.approx(8.4705890850966, rel=1e-12)
    with pytest.raises(ValueError, match="t_f/beta >= 0"):
        G.end_point_D(Setting("hinge", f_div="forward_kl"), -1.0)
    # t_f = 0: no move, D = 0 under every score, as the reverse-KL closed form says
    assert G.end_point_D(Setting("hinge"), 0.0) == 0.0
    assert G.end_point_D(Setting("hinge", f_div="forward_kl"), 0.0) == 0.0


def test_reverse_kl_rows_state_their_loss_s_population_optimum():
    """The atlas's 'BT population optimum' column for the eight reverse-KL rows with a stated t* (README's atlas table
    prints it): each row's text names its own stationary t* of q f(t) + (1 - q) f(-t), never the bare loss name. By
    hand at q = 0.88 (dr = logit(q) = 1.99243), minimising the population loss on a grid of t (spacing 1e-5) written
    here from the losses' definitions: logistic softplus(-t) at t = dr; hinge max(0, 1 - t) at 1 = sign(dr); IPO
    (t - 1/2)^2 at q - 1/2 = 0.38; EXO (eps = 1e-3) sigma(t) log(sigma(t)/(1 - eps)) + sigma(-t) log(sigma(-t)/eps) at
    (2q - 1) log((1 - eps)/eps) = 5.2711; robust (eps = 0.1) ((1 - eps) softplus(-t) - eps softplus(t))/(1 - 2 eps) at
    log((q - eps)/(1 - q - eps)) = 2.2513. The toolkit's population_t_star agrees with each to 1e-9. With the
    default of texts.get swapped (a survivor of mutation: theory/gpo_atlas.py::_population_text::swap-args::
    bf53fbe1a3) every such row printed its loss name ('sigmoid', 'ipo', ...) as its population optimum."""
    q = 0.88
    dr = math.log(q / (1 - q))

    def softplus(x):
        return np.logaddexp(0.0, x)

    def exo(t, e=1e-3):
        ps, ms = 1 / (1 + np.exp(-t)), 1 / (1 + np.exp(t))
        return ps * (np.log(ps) - math.log(1 - e)) + ms * (np.log(ms) - math.log(e))

    def robust(t, e=0.1):
        return ((1 - e) * softplus(-t) - e * softplus(t)) / (1 - 2 * e)

    by_hand = {  # loss: (f, the t* the text states, evaluated by hand)
        "sigmoid": (lambda t: softplus(-t), dr),
        "hinge": (lambda t: np.maximum(0.0, 1 - t), 1.0),
        "ipo": (lambda t: (t - 0.5) ** 2, q - 0.5),
        "exo_pair": (exo, (2 * q - 1) * math.log((1 - 1e-3) / 1e-3)),
        "robust": (robust, math.log((q - 0.1) / (1 - q - 0.1))),
    }
    params = {"sigmoid": {}, "hinge": {}, "ipo": {}, "exo_pair": {"label_smoothing": 1e-3},
              "robust": {"label_smoothing": 0.1}}
    ts = np.linspace(-8.0, 8.0, 1_600_001)
    for loss, (f, t_star) in by_hand.items():
        t_min = ts[np.argmin(q * f(ts) + (1 - q) * f(-ts))]
        assert abs(t_min - t_star) < 2e-5, (loss, t_min, t_star)
        assert float(G.population_t_star(loss, params[loss], q)) == pytest.approx(t_star, rel=1e-9, abs=1e-12)
    expected = {
        "sigmoid[beta=0.1]": "t* = dr (pi*)",
        "sigmoid_norm[beta=0.1,n=10]": "t* = dr per token (pi* of beta/n)",
        "hinge[beta=0.1]": "t* = sign(dr)",
        "ipo[beta=0.1]": "t* = q - 1/2",
        "ipo[beta=0.1,n=10]": "t* = q - 1/2 per token",
        "exo_pair[beta=0.1,label_smoothing=0.001]": "t* = (2q - 1) log((1 - eps)/eps)",
        "robust[beta=0.1,label_smoothing=0.1]": "t* = log((q - eps)/(1 - q - eps))",
        "discopop[beta=0.1,discopop_tau=0.05]": "t* != dr (numeric root)",
    }
    rows = {s.key: s for s in ROWS if s.f_div == "reverse_kl"}
    assert set(expected) <= set(rows)
    for key, text in expected.items():
        got = G.symbolic_row(rows[key])["population"]
        assert got == text, (key, got)
        assert got != rows[key].loss


def test_certificate_column_of_the_rows_with_a_finite_minimiser():
    """The atlas's certificate text for the rows with a finite minimiser t_f, by their end point D: an absorbing
    reverse-KL row (D > 0) states l_crit = f(U0) (f(U0/n) per token, n = 10 for ipo[n=10]); an absorbing
    f-divergence row says its certificate is not derived; the wrong-way discopop row (D < 0: it never enters U) has
    none. With the D <= 0 test flipped (a survivor of mutation, seed 1125), every absorbing reverse-KL row read
    'none' and discopop an l_crit."""
    rows = {s.key: G.symbolic_row(s) for s in ROWS if s.loss in ("hinge", "ipo", "exo_pair", "discopop")}
    l_crit = "l_crit = f(U0) if U0 < t_f, else none (the loss minimum lies in U)"
    assert rows["hinge[beta=0.1]"]["certificate"] == l_crit
    assert rows["ipo[beta=0.1]"]["certificate"] == l_crit
    assert rows["exo_pair[beta=0.1,label_smoothing=0.001]"]["certificate"] == l_crit
    assert rows["ipo[beta=0.1,n=10]"]["certificate"] == l_crit.replace("U0", "U0/10")
    for key in ("hinge[beta=0.1,forward_kl]", "ipo[beta=0.1,js_divergence]", "ipo[beta=0.1,alpha_divergence(a=0.5)]"):
        assert rows[key]["class"] == "absorbing" and rows[key]["certificate"].startswith("not derived"), key
    disco = rows["discopop[beta=0.1,discopop_tau=0.05]"]
    assert disco["class"] == "wrong-way" and disco["beta_D"] < 0 and disco["certificate"] == "none"


def test_apo_down_time_asymptote_against_the_bandit_flow():
    """apo_down has no closed-form exit time; the atlas row carries the dominant-balance asymptote T ~ 2 e^U0/beta^2
    and the atlas compares it with the bandit flow on the full grid (within 5% at U0 = 8 and closer there than at 5).
    Pinned here with the flow's own exit times, so a wrong asymptote fails a test and not only a full atlas run (a
    survivor of mutation: theory/gpo_atlas.py::_absolute_row::swap-args::c1eafe56e0, b ** 2 -> 2 ** b). Measured at
    beta = 0.1: flow T(5) = 32061, T(8) = 600137; by hand 2 e^5/0.01 = 29682.6 (8.0% off) and 2 e^8/0.01 = 596191.6
    (0.66% off). With 2^beta in place of beta^2 the asymptote is 276.9 and 5562.7, 107x off."""
    from dpo_rlhf_checks import atlas as A
    from toy_bandits.gpo_flow import exit_time

    s = Setting("apo_down")
    assert s.beta == 0.1
    sym = G.symbolic_row(s)
    T = {str(u): exit_time(s, u) for u in (5.0, 8.0)}
    asym = sym["_time_asymptote"]
    assert asym(8.0) == pytest.approx(596191.5974, rel=1e-8)  # 2 e^8 / 0.1^2, by hand
    assert asym(5.0) == pytest.approx(29682.6318, rel=1e-8)  # 2 e^5 / 0.1^2
    assert T["8.0"] == pytest.approx(596191.6, rel=0.05) and T["5.0"] == pytest.approx(29682.6, rel=0.15)
    out = A.compare(sym, {"class": sym["class"], "exit_times": T}, s)
    assert out["time_asymptote"] is True
    assert out["_time_asymptote_rel"]["8.0"] < 0.01 < out["_time_asymptote_rel"]["5.0"] < 0.1


@pytest.mark.parametrize("dr", [-5.0, -6.0])
def test_fdiv_population_delta_reaches_roots_with_pi_w_far_below_1e_21(dr):
    """fdiv_population_delta where the minimiser puts pi(y_w) near e^-51 and e^-61 (beta = 0.1, pi_ref = (0.3, 0.7),
    dr = -5, -6: BT labels with q = 0.0067, 0.0025): the bisection's upper end -log pi_ref(y_l) - 1e-30 leaves room
    for pi(y_w) down to 1e-30; an end at -log pi_ref(y_l) - 5^-30 (1e-21) raised 'no sign change' here for reverse
    KL and JS (a survivor of mutation). Expected by hand: reverse KL gives pi*, delta = log(3/7) + dr/beta (-50.8473,
    -60.8473); JS (s = log sigma(r)) by brentq on beta (s(r_w) - s(r_l)) = dr, written with log1p: -51.7346,
    -61.7346."""
    from scipy.optimize import brentq

    log_w, log_l, beta = math.log(0.3), math.log(0.7), 0.1
    got = G.fdiv_population_delta("reverse_kl", None, beta, log_w, log_l, dr)
    assert got == pytest.approx(math.log(3 / 7) + dr / beta, abs=1e-9)

    def log_sigma(r):
        return -math.log1p(math.exp(-r)) if r > -30 else r - math.log1p(math.exp(r))

    def eq(d):
        log_pw, log_pl = -math.log1p(math.exp(-d)), -math.log1p(math.exp(d))
        return beta * (log_sigma(log_pw - log_w) - log_sigma(log_pl - log_l)) - dr

    by_hand = brentq(eq, -80.0, 60.0, xtol=1e-13)
    assert by_hand < -50.0
    got_js = G.fdiv_population_delta("js_divergence", None, beta, log_w, log_l, dr)
    assert got_js == pytest.approx(by_hand, abs=1e-8)


def test_absorbing_counterexample_on_a_row_with_negative_end_point_is_one(monkeypatch):
    """absorbing_symbolic's counterexample for a first failing row with beta D <= 0 (discopop, t_f = beta D ~ -0.119,
    alone in the atlas here; the shipped row order reaches a beta D > 0 row first) must name a beta delta_ref where the
    literal ('in U iff beta delta_ref < -t_f') and the derivation ('iff beta D > 0 and beta delta_ref < -beta D')
    disagree, recomputed here from its own t_f, beta D and point: below -t_f, so the literal says in U, while beta D < 0
    says not. A survivor of mutation: ``-t_f - 1 -> -t_f`` put the point at -t_f itself, where both say 'not in U'."""
    monkeypatch.setattr(G, "_ABSORBING_ROWS", ("discopop",))
    res = G.absorbing_symbolic(CheckContext(seed=0, quick=True))
    cex = res.counterexample
    assert cex["row"].startswith("discopop")
    t_f, b_d, x = cex["t_f"], cex["beta_D"], cex["beta_delta_ref"]
    assert b_d < 0 and abs(t_f + 0.119) < 5e-3
    literal_in_u, derived_in_u = x < -t_f, b_d > 0 and x < -b_d
    assert literal_in_u and not derived_in_u
    assert cex["literal_says_in_U"] is literal_in_u and cex["derived_in_U"] is derived_in_u


def test_nca_pair_row_time_law_is_the_exit_time_at_u0_and_the_row_beta():
    """The atlas's nca_pair row carries its time law as a function of U0 (``_time_law_fn``, read by
    ``dpo_rlhf_checks.atlas.compare``); it must be T(U0) at the row's beta = 0.1, not T with U0 and beta exchanged.
    Expected values not from the symbolic module: the bandit flow's exit time at U0 = 0.5 and 2 (exact gradient flow,
    toy_bandits.gpo_flow) and the hand asymptote T ~ e^U0/beta^2 at U0 = 12 (within 2e-4, as in
    test_nca_exit_time_limits). Exchanged arguments give 1.9e6 relative error in the atlas. (a survivor of mutation)"""
    from toy_bandits import gpo_flow as F

    s = Setting("nca_pair")
    row = G.symbolic_row(s)
    assert s.beta == pytest.approx(0.1)
    fn = row["_time_law_fn"]
    for u0 in (0.5, 2.0):
        assert fn(u0) == pytest.approx(F.exit_time(s, u0), rel=1e-6), u0
    assert fn(12.0) / (math.exp(12.0) / 0.01) == pytest.approx(1.0, abs=2e-4)
