"""toy_bandits.gpo_flow against numbers derived by hand (docs/theory.md §16): end points, exit times, BT optima."""

import math

import pytest

from dpo_rlhf_checks.atlas_rows import Setting
from dpo_rlhf_checks.result import CheckContext
from toy_bandits import gpo_flow as F


def test_reference_puts_the_pair_near_zero_mass():
    ref = F.reference(-20.0)
    assert ref[0] - ref[1] == pytest.approx(-20.0, abs=1e-12)
    assert max(ref[0], ref[1]) == F.LOG_MASS and ref[2] == pytest.approx(0.0, abs=1e-100)


@pytest.mark.parametrize("setting, beta_D", [
    (Setting("ipo"), 0.5),  # t_f = 1/2
    (Setting("ipo", n=10), 5.0),  # per token, equal lengths: n t_f
    (Setting("hinge"), 1.0),  # flat from t_f = 1
    (Setting("sppo_hard"), 1.0),  # r_w = 1/(2 beta), r_l = -1/(2 beta)
])
def test_end_point_by_hand(setting, beta_D):
    ep = F.end_point(setting, delta_ref=-30.0)
    assert setting.beta * ep["D"] == pytest.approx(beta_D, abs=1e-6)
    # beta delta_ref = -3: the pair ends in U iff -3 < -beta D (all but the per-token ipo, beta D = 5)
    assert (-30.0 < ep["delta_end"] < 0) == (-3.0 < -beta_D)


def test_ipo_per_token_pair_leaves_U_where_the_summed_threshold_says_it_stays():
    """loss_type='ipo' (TRL, per token, n = 10) at beta = 0.1: beta delta_ref = -2 < -1/2, yet the flow ends at
    beta delta = -2 + 5 = 3 > 0: the summed threshold -t_f is wrong by the factor n."""
    res = F.flow(Setting("ipo", n=10), -20.0, 1e6)
    assert 0.1 * res["delta_end"] == pytest.approx(3.0, abs=1e-6)


def test_logistic_exit_time_by_hand():
    """DPO: T = (U0 + e^U0 - 1)/(2 beta^2); U0 = 3, beta = 0.1: 1104.2768..."""
    assert F.exit_time(Setting("sigmoid"), 3.0) == pytest.approx((3 + math.expm1(3)) / 0.02, rel=1e-6)


@pytest.mark.parametrize("beta, u0", [(0.1, 1e-4), (0.1, 1e-6), (1.0, 3e-4), (1.0, 1e-5)])
def test_early_exit_time_by_hand_when_the_first_step_leaves_U(beta, u0):
    """A reference just inside U (U0 = 1e-4 ... 1e-6) leaves it within LSODA's first accepted step: the crossing is
    still found, at T = (U0 + e^U0 - 1)/(2 beta^2) (beta 0.1, U0 = 1e-4: 0.0100002500083). Measured relative errors
    6.4e-5 at most for beta 0.1 and 2.0e-4 for beta 1 (the solver's absolute error on logits near -300, rtol 1e-10,
    against a move of only 2 U0/beta in delta), so 1e-3 here. Pins the crossing test's start value prev_d = delta_ref
    (a survivor of mutation: prev_d = -delta_ref missed every first-step crossing and returned None, 'never leaves
    U', for U0 <= 1e-4 at beta 0.1 and <= 3e-4 at beta 1)."""
    law = (u0 + math.expm1(u0)) / (2 * beta ** 2)
    t = F.exit_time(Setting("sigmoid", beta=beta), u0)
    assert t is not None and t == pytest.approx(law, rel=1e-3)


@pytest.mark.parametrize("setting, u0", [(Setting("sigmoid"), 20.0), (Setting("sigmoid_norm", n=10), 200.0)])
def test_late_exit_time_by_hand_within_the_horizon(setting, u0):
    """A late exit is still a number: the documented horizon 1e9 n^2/beta^2 (1e11, n = 1; 1e13, n = 10) holds it.
    Flow on the free log-ratios: u = beta (delta - delta_ref) / n obeys du/dt = 2 (beta/n)^2 sigma(-u), so
    T = n^2 (U0/n + e^(U0/n) - 1) / (2 beta^2): U0 = 20 gives (20 + e^20 - 1)/0.02 = 2.43e10; sigmoid_norm, n = 10,
    U0 = 200 (u = 20 at the exit) gives 100 times that, 2.43e12: both past a horizon 1e9 n^2/2^beta (9.3e8, 9.3e10)."""
    n = setting.n
    law = n ** 2 * (u0 / n + math.expm1(u0 / n)) / (2 * setting.beta ** 2)
    t = F.exit_time(setting, u0)
    assert t is not None and t == pytest.approx(law, rel=1e-6)


def test_robust_exit_time_is_linear_by_hand():
    """robust eps = 0.1, beta = 0.1, U0 = 12: T = 0.8/0.02 (12/0.9 + (0.8/0.09) log(0.9 + 0.1 e^12))."""
    e, u = 0.1, 12.0
    law = (1 - 2 * e) / 0.02 * (u / (1 - e) + (1 - 2 * e) / (e * (1 - e)) * math.log(1 - e + e * math.exp(u)))
    assert F.exit_time(Setting("robust", params={"label_smoothing": e}), u) == pytest.approx(law, rel=1e-6)


@pytest.mark.parametrize("setting, q, t_star", [
    (Setting("sigmoid"), 0.8, math.log(4)),  # dr
    (Setting("ipo", n=10), 0.8, 10 * 0.3),  # n (q - 1/2), summed units
    (Setting("bco_pair"), 0.8, 2 * math.log(4)),  # 2 dr
    (Setting("hinge"), 0.8, 1.0),  # sign(dr)
])
def test_population_by_hand(setting, q, t_star):
    res = F.population_t(setting, q)
    assert res["finite"] and res["t"] == pytest.approx(t_star, abs=1e-6)


@pytest.mark.parametrize("delta_ref", [-20.0, 5.0])
@pytest.mark.parametrize("setting, t_star", [
    (Setting("sigmoid"), math.log(0.88 / 0.12)),  # dr
    (Setting("ipo", n=10), 10 * 0.38),  # n (q - 1/2)
])
def test_population_t_from_reference_is_measured_from_delta_ref(setting, t_star, delta_ref):
    """t = beta (delta - delta_ref) at the BT minimiser does not depend on delta_ref; for a convex loss the descent
    from the reference is the one start, so t_from_reference is that same t (by hand: DPO dr = log(0.88/0.12) =
    1.992; IPO n (q - 1/2) = 3.8), also where delta_ref != 0 and beta delta alone (t - 2 at delta_ref = -20, t + 0.5
    at 5, beta = 0.1) is not t."""
    res = F.population_t(setting, 0.88, delta_ref=delta_ref)
    assert res["finite"] and res["t"] == pytest.approx(t_star, abs=1e-6)
    assert res["t_from_reference"] == pytest.approx(t_star, abs=1e-6)


def test_population_runaway_is_detected():
    res = F.population_t(Setting("apo_zero"), 0.8)
    assert not res["finite"] and res["t"] > 0


@pytest.mark.parametrize("q, side", [(0.1, -1.0), (0.9, 1.0)])
def test_robust_amended_t_at_q_equal_to_eps_runs_away(q, side):
    """The loss-population-optimum amendment for robust (eps = 0.1) at the edges of its finite range, q = eps and
    q = 1 - eps, where the registry text says t* = -inf / +inf. By hand: TRL's robust f(t) = ((1 - eps) softplus(-t)
    - eps softplus(t))/(1 - 2 eps), so q f(t) + (1 - q) f(-t) is proportional to (q - eps) softplus(-t) + (1 - q -
    eps) softplus(t); at q = eps that is 0.8 softplus(t), strictly increasing in t with no minimiser (t* = -inf), and
    at q = 1 - eps 0.8 softplus(-t) (t* = +inf). Pins the typed t* (_amended_summed_t) there, and the bandit's
    minimiser runs away on the same side (measured: t = -23.58 / +23.58, not finite). population_numeric's q grids
    (0.3, 0.88, 0.95; full 0.05 ... 0.995) never visit q = eps, so no claim reads these edges. (A survivor of mutation:
    toy_bandits/gpo_flow.py::_amended_summed_t::cmp-boundary::413d765a64, q <= eps -> q < eps, sends q = eps to
    log((q - eps)/(1 - q - eps)) = log(0): ValueError instead of -inf.)"""
    assert F._amended_summed_t("robust", q, 1) == side * math.inf
    res = F.population_t(Setting("robust", params={"label_smoothing": 0.1}), q)
    assert not res["finite"] and math.copysign(1.0, res["t"]) == side
    # just inside the range the amendment is finite: log((q - eps)/(1 - q - eps)) at q = 0.11, by hand -4.369448
    assert F._amended_summed_t("robust", 0.11, 1) == pytest.approx(math.log(0.01 / 0.79), rel=1e-12)


def test_discopop_from_the_reference_moves_the_wrong_way():
    """DiscoPOP, tau = 0.05: descent from the reference stops at t ~ -0.119 (beta D < 0)."""
    ep = F.end_point(Setting("discopop", params={"discopop_tau": 0.05}), delta_ref=1.0)
    assert 0.1 * ep["D"] == pytest.approx(-0.1186, abs=5e-4)
    assert ep["delta_end"] < 0  # beta delta_ref = 0.1 < 0.119: a correctly ranked reference ends ranked wrong


def test_aot_batch_exit_times_follow_dpo_law():
    """aot on a batch whose pairs keep their order: each pair leaves U at DPO's per-pair time."""
    res = F.batch_flow("aot", 0.1, [-3.0, -1.0, 1.0], 1e5)
    for x, T in zip([-3.0, -1.0], res["t_exit"]):
        assert T == pytest.approx((-x + math.expm1(-x)) / 0.02, rel=1e-6)
    assert res["t_exit"][2] is None


def test_aot_batch_final_delta_follows_the_dpo_flow():
    """batch_flow's final delta (the atlas report prints beta delta_end): every pair starts at log-ratio 0, so aot's
    sorted log-ratios tie and each pair follows DPO's free flow z' = 2 beta^2 sigma(-z) for z = beta (delta -
    delta_ref): z + e^z = 1 + 2 beta^2 t. At beta 0.1, t = 1e5: z = 7.5976 (_dpo_z_at), so beta delta_end =
    beta delta_ref + z for each pair (both aot forms). Returning -log pi(y_l) for delta (a survivor of mutation) gave
    other numbers, unseen: the exit times were checked, the end point was not."""
    z = _dpo_z_at(0.1 ** 2 * 1e5)  # horizon_u = beta^2 t / n^2, n = 1
    assert z == pytest.approx(7.5976, abs=1e-4)
    for loss in ("aot", "aot_unpaired"):
        res = F.batch_flow(loss, 0.1, [-3.0, -1.0, 1.0], 1e5)
        assert [0.1 * d for d in res["delta_end"]] == pytest.approx([-3.0 + z, -1.0 + z, 1.0 + z], abs=1e-6)


@pytest.fixture(scope="module")
def population_quick():
    """population_numeric at --quick, seed 0, once for the tests that only read its result."""
    return F.population_numeric(CheckContext(seed=0, quick=True))


def test_population_numeric_counterexample_is_ipo_at_the_length_it_names(population_quick):
    """The loss-population-optimum counterexample: per-token ipo's summed t* at q = 0.88 is n (q - 1/2) (the
    minimiser of the mean-squared IPO target, summed over n tokens), here 0.38 n for the n the counterexample names,
    and n = 10 is the setting of the default table. The label was typed ("ipo (n = 10)") beside a number computed
    from the setting; a setting of n = 5 (a survivor of mutation) printed n = 10 beside 1.9."""
    res = population_quick
    cex = res.counterexample
    assert cex["loss"] == f"ipo (n = {cex['n']})" and cex["n"] == 10
    assert cex["summed_t_star"] == pytest.approx(cex["n"] * (0.88 - 0.5), rel=1e-5)
    assert cex["dr"] == pytest.approx(math.log(0.88 / 0.12), abs=1e-15)


def test_population_per_token_large_optimum_is_finite():
    """sigmoid_norm, n = 10, q = 0.995: summed t* = n dr = 52.93 (per token 5.29), finite; the runaway cap is in
    the units of f's argument (it read 'inf' when the cap was 40 on the summed t)."""
    res = F.population_t(Setting("sigmoid_norm", n=10), 0.995)
    assert res["finite"] and res["t"] == pytest.approx(10 * math.log(0.995 / 0.005), rel=1e-6)


def test_forward_kl_invariant_holds_and_breaks_when_the_rest_is_trained():
    """forward_kl keeps e^r_w + e^r_l = 2 under free log-ratio flow; training the third logit too changes the
    metric and breaks it (the end point moves: hinge beta D 0.300 -> 0.208)."""
    s = Setting("hinge", f_div="forward_kl")
    free = F.flow(s, -5.0, 1e6)
    both = F.flow(s, -5.0, 1e6, train_rest=True)
    assert math.exp(free["r_end"][0]) + math.exp(free["r_end"][1]) == pytest.approx(2.0, abs=1e-5)
    assert abs(math.exp(both["r_end"][0]) + math.exp(both["r_end"][1]) - 2.0) > 0.05
    assert 0.1 * (free["delta_end"] + 5.0) == pytest.approx(0.2998, abs=1e-4)
    assert 0.1 * (both["delta_end"] + 5.0) == pytest.approx(0.2081, abs=1e-4)


def test_flow_row_reports_the_end_point_with_the_rest_of_the_model_trained():
    """flow_row's beta_D_rest_trained is the atlas's "(rest trained: ...)" number that README and docs/theory.md
    print for hinge/forward_kl: beta D 0.300 on the free flow moves to 0.208 when the rest of the model's logit is
    trained too. The free-flow beta D is by hand from the forward-KL invariant and hinge's stop condition, c = t_f/beta
    = 10: e^r_w = ((c - 1) + sqrt(1 + c^2))/c, e^r_l = 2 - e^r_w, beta D = 0.1 log(e^r_w / e^r_l) = 0.29982; the
    rest-trained one is the printed 0.208 (0.2081 by flow in test_forward_kl_invariant_holds_...). Under reverse KL
    nothing moves (h does not depend on r_w + r_l): hinge's beta D = t_f = 1 both ways. A horizon written upside down
    (beta^2 / (1e4 n^2), a survivor of mutation) stopped the second flow at once and printed 2e-8 for every row.
    (a survivor of mutation)"""
    c = 10.0
    ew = ((c - 1) + math.sqrt(1 + c * c)) / c
    row = F.flow_row(Setting("hinge", f_div="forward_kl"), quick=True)
    assert row["class"] == "absorbing"
    assert row["beta_D"] == pytest.approx(0.1 * math.log(ew / (2 - ew)), abs=1e-4)
    assert row["beta_D_rest_trained"] == pytest.approx(0.208, abs=1e-3)
    rkl = F.flow_row(Setting("hinge"), quick=True)
    assert rkl["beta_D"] == pytest.approx(1.0, abs=1e-6)
    assert rkl["beta_D_rest_trained"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("loss, u0, expected", [
    ("bco_pair", 2.0, 2 * math.log1p(math.exp(-1.0))),
    ("apo_zero", 2.0, 2 / (1 + math.e)),
    ("apo_down", 2.0, 1 / (1 + math.exp(2.0))),
    ("sppo_hard", 0.5, 12.5),
    # a tie, u0 = 0 (the same formulas: 2 log 2 and 1); a start at 2 beta/(-u0), a survivor of mutation, divided by 0
    ("bco_pair", 0.0, 2 * math.log(2)),
    ("apo_zero", 0.0, 1.0),
])
def test_certificate_level_by_hand(loss, u0, expected):
    """The bandit's minimum of the library loss over delta <= 0 (beta delta_ref = -u0) is the hand-worked l_crit."""
    assert F.certificate_level(Setting(loss), u0)["l_min"] == pytest.approx(expected, rel=1e-9)


def test_nca_exit_time_matches_the_closed_form_coordinates():
    """nca_pair's flow leaves U when z_w - z_l = U0; the symbolic module's root from the closed-form coordinate times
    (theory.gpo_atlas.nca_exit_time) against the flow, at U0 = 2."""
    from theory.gpo_atlas import nca_exit_time
    assert F.exit_time(Setting("nca_pair"), 2.0) == pytest.approx(float(nca_exit_time(2.0, 0.1)), rel=1e-6)


def test_sigmoid_sft_mix_by_hand():
    """loss_type=["sigmoid", "sft"], weights [1, 1], n = 10, beta = 0.1: exit time 2/0.03 + (0.02/0.0003) log((0.03 +
    0.01 e^2)/0.04) at U0 = 2 (linear in U0, not DPO's e^U0), and the lowest loss over delta <= 0 is softplus(-2) +
    log(2)/10 (at a tie with pi(y_w) = pi(y_l) -> 1/2, the rest's logit held still)."""
    s = Setting("sigmoid+sft", params={"sft_weight": 1.0}, n=10)
    law = 2 / 0.03 + (0.02 / 0.0003) * math.log((0.03 + 0.01 * math.exp(2)) / 0.04)
    assert F.exit_time(s, 2.0) == pytest.approx(law, rel=1e-6)
    assert F.certificate_level(s, 2.0)["l_min"] == pytest.approx(math.log1p(math.exp(-2)) + math.log(2) / 10, rel=1e-9)


def _sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))  # no overflow for |x| large


@pytest.mark.parametrize("loss, eps, n", [
    ("sigmoid", 0.0, 1), ("sigmoid_norm", 0.0, 10), ("robust", 0.1, 1), ("robust", 0.25, 1), ("robust", 0.4, 1),
])
@pytest.mark.parametrize("u0", [0.5, 3.0, 8.0])
def test_amended_laws_equal_the_exit_time_integral(loss, eps, n, u0):
    """The gpo-transient-U closed forms (gpo_flow._amended_laws) against the statement's own integral, by quadrature:
    T(U0) = (1/(2 beta^2)) int_0^U0 dt / (-f'(t)) (per token, n: (n^2/(2 beta^2)) int_0^(U0/n)), with -f' written by
    hand: logistic sigma(-t); TRL robust ((1 - eps) sigma(-t) + eps sigma(t)) / (1 - 2 eps). Several eps, so a slip
    in one of the law's (1 - 2 eps) factors cannot cancel at one eps."""
    from scipy.integrate import quad
    beta = 0.1
    if loss == "robust":
        def minus_fprime(t):
            return ((1 - eps) * _sigmoid(-t) + eps * _sigmoid(t)) / (1 - 2 * eps)
    else:
        def minus_fprime(t):
            return _sigmoid(-t)
    upper = u0 / n
    integral, err = quad(lambda t: 1.0 / minus_fprime(t), 0.0, upper, epsabs=0.0, epsrel=1e-12, limit=200)
    expected = n * n * integral / (2 * beta * beta)
    law = F._amended_laws(eps, beta, n)[loss](u0)
    assert law == pytest.approx(expected, rel=1e-9)


def test_transient_flow_fails_when_a_law_comes_out_negative(monkeypatch):
    """The simulation compares exit times with the laws by relative error; a law with the wrong sign (here the robust
    law negated: T and the law then differ by more than 2 T) must count as a miss. It passed (relative error 0.0)
    when the error was divided by the signed law."""
    from pathlib import Path

    from dpo_rlhf_checks.result import CheckContext
    original = F._amended_laws

    def negated_robust(eps, beta, n=1):
        laws = dict(original(eps, beta, n))
        good = laws["robust"]
        laws["robust"] = lambda u: -good(u)
        return laws

    monkeypatch.setattr(F, "_amended_laws", negated_robust)
    res = F.transient_flow(CheckContext(seed=0, quick=True, out_dir=Path("unused")))
    assert res.evidence["max_rel_err"]["robust[beta=0.1,label_smoothing=0.1]"] == pytest.approx(2.0, abs=1e-5)
    assert res.amended is False


def test_transient_flow_growth_is_log_T12_minus_log_T6_by_quadrature():
    """The literal's growth test reports log T(12 n) - log T(6 n) (its counterexample says so, next to "exponential
    would give 6"). Expected values from the exit-time integral T(U0) = (n^2/(2 beta^2)) int_0^(U0/n) dt / (-f'(t)),
    by quadrature with -f' written by hand (as in test_amended_laws_equal_the_exit_time_integral): robust eps 0.1
    about 0.918 (linear growth, ~log 2 plus), sigmoid about 5.99, sigmoid_norm n = 10 the same in U0/n. A test point
    moved (6 n -> 3 n gave robust 2.049) must show."""
    from pathlib import Path

    from scipy.integrate import quad

    from dpo_rlhf_checks.result import CheckContext

    def t_of(minus_fprime, u0, n=1):
        integral, _ = quad(lambda t: 1.0 / minus_fprime(t), 0.0, u0 / n, epsabs=0.0, epsrel=1e-12, limit=200)
        return n * n * integral / (2 * 0.1 * 0.1)

    eps = 0.1

    def robust(t):
        return ((1 - eps) * _sigmoid(-t) + eps * _sigmoid(t)) / (1 - 2 * eps)

    def logistic(t):
        return _sigmoid(-t)

    exp_robust = math.log(t_of(robust, 12.0) / t_of(robust, 6.0))
    exp_sigmoid = math.log(t_of(logistic, 12.0) / t_of(logistic, 6.0))
    exp_norm = math.log(t_of(logistic, 120.0, 10) / t_of(logistic, 60.0, 10))
    assert exp_robust == pytest.approx(0.918, abs=2e-3) and exp_sigmoid == pytest.approx(5.99, abs=1e-2)
    res = F.transient_flow(CheckContext(seed=0, quick=True, out_dir=Path("unused")))
    growth = res.evidence["log_T12_minus_log_T6"]
    assert growth["robust[beta=0.1,label_smoothing=0.1]"] == pytest.approx(exp_robust, rel=1e-4)
    assert res.counterexample["log_T12_minus_log_T6"] == pytest.approx(exp_robust, rel=1e-4)
    by_loss = {k.split("[")[0]: v for k, v in growth.items()}
    assert by_loss["sigmoid"] == pytest.approx(exp_sigmoid, rel=1e-4)
    assert by_loss["sigmoid_norm"] == pytest.approx(exp_norm, rel=1e-4)
    assert res.literal is False


def test_population_numeric_f_divergence_rows_by_hand(population_quick):
    """The f-divergence sigmoid rows of population_numeric: normalised two-response bandit, pi_ref = (0.3, 0.7),
    beta 0.1, q = sigma(1) (dr = 1). The BT population loss is minimised where beta (s(r_w) - s(r_l)) = logit q = 1,
    r_y = log(pi(y)/pi_ref(y)), pi(w) = sigma(delta); solved here by bisection with the f-DPO scores written out
    (forward KL s = -e^-r, JS s = log sigma(r), alpha a = 1/2 s = -2 e^(-r/2); constants cancel): delta_f = 2.6207,
    10.6190, 3.7628, none the pi* value log(3/7) + 1/beta = 9.1527 (gap fde3b60075: q = 0.5 sigma(1) = 0.366 was
    compared with the dr = 1 pi*; measured planted, forward KL's delta_f -2.987)."""
    from scipy.optimize import brentq

    scores = {"forward_kl": lambda r: -math.exp(-r), "js_divergence": lambda r: -math.log1p(math.exp(-r)),
              "alpha_divergence": lambda r: -2.0 * math.exp(-r / 2)}
    res = population_quick
    rows = res.evidence["f_divergence_sigmoid"]
    assert set(rows) == set(scores)
    d_star = math.log(0.3 / 0.7) + 1 / 0.1
    for f_div, s in scores.items():
        def t_minus_logit_q(d, s=s):
            log_pw, log_pl = -math.log1p(math.exp(-d)), -math.log1p(math.exp(d))
            return 0.1 * (s(log_pw - math.log(0.3)) - s(log_pl - math.log(0.7))) - 1.0

        d_f = brentq(t_minus_logit_q, -50.0, 50.0, xtol=1e-14)
        assert rows[f_div]["delta_f"] == pytest.approx(d_f, abs=1e-6)
        assert rows[f_div]["delta_pi_star"] == pytest.approx(d_star, abs=1e-12)
        assert abs(d_f - d_star) > 1.0 and f"sigmoid/{f_div}" in res.counterexample["others_not_pi_star"]


def test_transient_flow_summary_states_both_findings_labelled():
    """The simulation's summary (its line in report.md and the claim's summary) states both findings, each labelled:
    the largest relative error of the exit times against each of the five amended laws (what the amended verdict
    reads, tolerance 1e-5; measured 6.6e-9 to 2.1e-8 at --quick) and log T(12 n) - log T(6 n) for the three rows the
    literal names: by quadrature (test_transient_flow_growth_is_log_T12_minus_log_T6_by_quadrature) sigmoid 5.988,
    sigmoid_norm 5.988, robust 0.918, printed 5.99, 5.99, 0.92. A summary that kept only the three growth numbers,
    unlabelled (a survivor of mutation), dropped the exit-time errors and read 'robust[...] 0.92', which a reader
    could take for the robust row's error."""
    from pathlib import Path

    res = F.transient_flow(CheckContext(seed=0, quick=True, out_dir=Path("unused")))
    head, sep, tail = res.summary.partition("; log T(12) - log T(6): ")
    prefix = "exit times vs the amendment's laws, max rel err "
    assert sep and head.startswith(prefix), res.summary
    errs = dict(item.rsplit(" ", 1) for item in head[len(prefix):].split(", "))
    assert set(errs) == {"sigmoid[beta=0.1]", "sigmoid_norm[beta=0.1,n=10]", "robust[beta=0.1,label_smoothing=0.1]",
                         "bco_pair[beta=0.1]", "apo_zero[beta=0.1]"}
    for key, text in errs.items():
        assert 0.0 < float(text) < 1e-5
        assert float(text) == pytest.approx(res.evidence["max_rel_err"][key], rel=0.05)  # printed to 2 digits
    growth = dict(item.rsplit(" ", 1) for item in tail.split(", "))
    assert growth == {"sigmoid[beta=0.1]": "5.99", "sigmoid_norm[beta=0.1,n=10]": "5.99",
                      "robust[beta=0.1,label_smoothing=0.1]": "0.92"}


def test_moving_or_stopped_is_decided_with_an_order_of_margin_on_every_row():
    """A row's class (transient vs absorbing/pinned/wrong-way) and whether its beta D is printed hinge on the final
    gradient against F.MOVING_GRAD. Every atlas row's gradient at the horizon must sit at least 10x away from the
    cut on its side, so that no machine's last digits (nor the flow's rtol 1e-10) decide a class. The cut was 1e-8,
    where the sigmoid+sft row's sft tail ends at 1.0000316e-8 (a relative margin of 3e-5); this test fails there."""
    from dpo_rlhf_checks.atlas_rows import MIXES, PAPER_CPO, ROWS

    near = []
    for s in ROWS:
        if s.loss not in MIXES and s.loss not in PAPER_CPO and F.SPECS[s.loss].kind == "batch-coupled":
            continue
        ep = F.end_point(s)
        if ep["chattered"]:
            continue
        ratio = ep["grad_norm"] / F.MOVING_GRAD
        if 1e-1 < ratio < 1e1:
            near.append((s.key, ep["grad_norm"]))
        if s.loss in MIXES:  # sft never stops pulling y_w up: still moving, by theory, not by a last digit
            assert ratio >= 1e1, (s.key, ep["grad_norm"])
    assert near == []


def _dpo_z_at(horizon_u: float) -> float:
    """z = beta (delta - delta_ref) / n of the free logistic flow after horizon_u n^2/beta^2: dz/dt = 2 (beta/n)^2
    sigma(-z) integrates by hand to z + e^z - 1 = 2 horizon_u (the same for summed sigmoid, n = 1, and per-token
    sigmoid_norm)."""
    from scipy.optimize import brentq
    return brentq(lambda z: z + math.expm1(z) - 2 * horizon_u, 0.0, 50.0, xtol=1e-14, rtol=1e-14)


def test_phase_curve_is_beta_delta_after_200_n2_over_beta2_by_hand():
    """The phase figure's data (README's docs/atlas_phase.png: beta delta after 200 n^2/beta^2 of flow, per beta
    delta_ref) against the hand-integrated logistic flow: beta delta_end = x + n z with z + e^z - 1 = 400. Summed
    sigmoid (n = 1) and per-token sigmoid_norm (n = 10) pin the horizon n^2/beta^2 (2^n for n^2 doubles it at n = 1:
    sigmoid's point at x = -6 would leave U, 0.678 instead of -0.021; beta^4 for beta^2 makes it 100x at beta = 0.1:
    4.596). (a survivor of mutation)"""
    z = _dpo_z_at(200.0)
    assert 5.97 < z < 5.98  # z + e^z = 401: e^5.97 = 391.5, e^5.98 = 395.4
    xs = [-6.0, -3.0, 1.0]
    got = F.phase_curve(Setting("sigmoid"), xs)
    assert got == pytest.approx([x + z for x in xs], abs=1e-6)
    assert -6.0 < got[0] < 0.0  # DPO at beta delta_ref = -6 is still in U at the figure's horizon (T = 204.2/beta^2)
    got_n = F.phase_curve(Setting("sigmoid_norm", n=10), [-6.0])
    assert got_n == pytest.approx([-6.0 + 10 * z], abs=1e-5)


def test_flow_row_of_the_sigmoid_sft_mix_by_hand():
    """flow_row's mix branch (the atlas's sigmoid+sft row, reached by every `paper_checks.py atlas` run without
    --losses, quick or full): transient, exit times on the quick grid from the hand-worked law U0/A + (2 beta^2/(A c))
    log((A + c e^U0)/(A + c)), c = beta w/n = 0.01, A = 0.03, and the certificate level softplus(-U0) + (w/n) log 2 at
    U0 = 0.5, 2, 5 (README). A call with its arguments swapped raised TypeError here and crashed the atlas.
    (a survivor of mutation)"""
    s = Setting("sigmoid+sft", params={"sft_weight": 1.0}, n=10)
    row = F.flow_row(s, quick=True)
    assert row["class"] == "transient" and row["beta_D"] is None
    c, A = 0.01, 0.03
    for u, T in row["exit_times"].items():
        u0 = float(u)
        assert T == pytest.approx(u0 / A + (0.02 / (A * c)) * math.log((A + c * math.exp(u0)) / (A + c)), rel=1e-6)
    assert set(row["exit_times"]) == {"0.5", "2.0", "5.0"}
    assert set(row["certificate_level"]) == {"0.5", "2.0", "5.0"}
    for u, level in row["certificate_level"].items():
        assert level == pytest.approx(math.log1p(math.exp(-float(u))) + math.log(2) / 10, rel=1e-9)
    assert math.isfinite(row["population_t_at_q=0.88"])


def test_flow_row_reports_the_rest_trained_end_point_of_absorbing_rows():
    """The atlas row of an absorbing loss carries beta D with the rest of the model trained too (atlas.md's "(rest
    trained: ...)", the README's and the theory notes' finding that hinge/forward_kl's beta D moves from 0.300 to
    0.208). By hand, in (a, b) = (e^-r_w, e^-r_l) from (1, 1): TRL's hinge relu(1 - beta (f(r_w) - f(r_l))) with
    forward KL's f(r) = 1 - e^-r stops where b - a = 1/beta = 10. Free log-ratios: e^r_w + e^r_l = 2, so
    e^r_w = 1 + s, e^r_l = 1 - s with 2 s/(1 - s^2) = 10, s = (sqrt(404) - 2)/20, beta D = 0.1 log((1 + s)/(1 - s))
    = 0.29982. Rest trained (metric [[2, 1], [1, 2]]): da/dt = -beta a (2 a - b), db/dt = -beta b (a - 2 b), solved
    here by solve_ivp to the stop set: beta D = 0.1 log(b/a) = 0.208128. Reverse KL (plain hinge) stops at
    r_w - r_l = 1/beta whatever the metric: 1.0 both ways. A flipped test in flow_row (rest trained computed only for
    empty-U rows) dropped the number from every absorbing row with no test or claim noticing (a survivor of mutation:
    toy_bandits/gpo_flow.py::flow_row::cmp-flip::4cccbb33ed)."""
    from scipy.integrate import solve_ivp

    beta = 0.1
    s_free = (math.sqrt(404.0) - 2.0) / 20.0

    def rhs(_, y):
        a, b = y
        return [-a * beta * (2 * a - b), -b * beta * (a - 2 * b)]

    def stop(_, y):
        return (y[1] - y[0]) - 1.0 / beta
    stop.terminal = True
    sol = solve_ivp(rhs, (0.0, 1e6), [1.0, 1.0], events=stop, method="LSODA", rtol=1e-12, atol=1e-14)
    a, b = sol.y_events[0][0]
    rest_by_hand = beta * math.log(b / a)
    assert rest_by_hand == pytest.approx(0.208128, abs=1e-6)

    row = F.flow_row(Setting("hinge", f_div="forward_kl"), quick=True)
    assert row["class"] == "absorbing"
    assert row["beta_D"] == pytest.approx(beta * math.log((1 + s_free) / (1 - s_free)), abs=1e-6)
    assert row["beta_D_rest_trained"] == pytest.approx(rest_by_hand, abs=1e-6)
    row = F.flow_row(Setting("hinge"), quick=True)
    assert row["class"] == "absorbing"
    assert row["beta_D"] == pytest.approx(1.0, abs=1e-6)
    assert row["beta_D_rest_trained"] == pytest.approx(1.0, abs=1e-6)


def test_population_numeric_f_divergence_row_at_pi_star_is_read_as_recovering(monkeypatch):
    """The f-divergence rows' decision |delta_f - delta_pi*| > 1e-3 (the row does not recover pi*) can fail: fed a
    row whose delta_f is the pi* value written out by hand, log pi_ref(w) - log pi_ref(l) + logit(q) / beta
    = log(3/7) + 1/0.1 = 9.1527, and one 5e-4 from it (inside 1e-3), neither may be listed among the losses that miss
    pi*, and the amendment (every f-divergence row misses pi*) must then fail; the real forward-KL row (2.6207, by
    bisection in test_population_numeric_f_divergence_rows_by_hand) stays listed. A sum in place of the difference
    (a survivor of mutation: |delta_f + delta_pi*| > 1e-3) listed every row whatever its delta_f, a check that
    could not fail: the planted pi* row was read as 'not pi*'."""
    real = F.fdiv_population_delta
    by_hand = {}

    def fake(setting, log_ref_w, log_ref_l, q):
        d_star = log_ref_w - log_ref_l + math.log(q / (1.0 - q)) / setting.beta
        by_hand[setting.f_div] = d_star
        if setting.f_div == "js_divergence":
            return d_star
        if setting.f_div == "alpha_divergence":
            return d_star + 5e-4
        return real(setting, log_ref_w, log_ref_l, q)

    monkeypatch.setattr(F, "fdiv_population_delta", fake)
    res = F.population_numeric(CheckContext(seed=0, quick=True))
    assert by_hand["js_divergence"] == pytest.approx(math.log(3 / 7) + 10.0, abs=1e-12)
    rows = res.evidence["f_divergence_sigmoid"]
    assert rows["js_divergence"]["delta_f"] == pytest.approx(9.1527, abs=1e-4)
    assert rows["forward_kl"]["delta_f"] == pytest.approx(2.6207, abs=1e-4)
    missing = res.counterexample["others_not_pi_star"]
    assert "sigmoid/forward_kl" in missing
    assert "sigmoid/js_divergence" not in missing
    assert "sigmoid/alpha_divergence" not in missing
    assert res.amended is False


def test_population_numeric_table_keeps_runaway_minimisers_infinite_on_the_side_of_dr(population_quick):
    """loss-population-optimum's evidence table summed_t_star must show a minimiser that runs away as +-inf on the
    side of dr = logit(q), as the amendment states it: apo_zero and apo_down have no finite minimiser, t -> sign(dr)
    inf, so at the quick q = (0.3, 0.88, 0.95) their rows are (-inf, +inf, +inf); robust with eps = 0.1 has t* =
    log((q - eps)/(1 - q - eps)) for eps < q < 1 - eps (by hand: log(0.2/0.6) = -1.0986 at q = 0.3, log(0.78/0.02) =
    3.6636 at q = 0.88) and t* -> +inf for q >= 0.9 (q = 0.95). Every other row is finite. A copysign with its
    arguments swapped (a survivor of mutation: copysign(t, inf) = |t|) wrote the runaway's last finite iterate
    instead, with the sign dropped: apo_zero (100, 100, 100), apo_down (27.2, 26.6, 26.6), robust at 0.95 100.0, a
    finite minimiser on the wrong side at q = 0.3, while no verdict changed."""
    res = population_quick
    assert res.evidence["q"] == [0.3, 0.88, 0.95]
    table = res.evidence["summed_t_star"]
    for label in ("apo_zero", "apo_down"):
        assert table[label] == [-math.inf, math.inf, math.inf], label
    assert table["robust"][0] == pytest.approx(math.log(0.2 / 0.6), rel=1e-5)
    assert table["robust"][1] == pytest.approx(math.log(0.78 / 0.02), rel=1e-5)
    assert table["robust"][2] == math.inf
    for label, vals in table.items():
        if label not in ("apo_zero", "apo_down", "robust"):
            assert all(math.isfinite(v) for v in vals), (label, vals)


def test_atlas_certificate_grid_reaches_sppo_hards_nonzero_branch():
    """The atlas checks each absolute-term row's certificate (compare(): the bandit's minimum of the library loss over
    delta <= 0 against the symbolic l_crit) only at the U0 points of flow_row's grid. sppo_hard's l_crit is
    (1 - U0)^2/(2 beta^2) below U0 = 1 and none (0) above (README's certificates paragraph), so the grid must reach
    below 1 for that branch to be checked at all: at U0 = 0.5, beta = 0.1 it is 0.25/0.02 = 12.5 by hand. A symbolic
    l_crit twice too large (zero branch unchanged) must then fail the comparison. A grid (1, 2, 5) in place of
    (0.5, 2, 5) (a survivor of mutation) checked sppo_hard only where l_crit = 0: the doubled l_crit passed."""
    from dpo_rlhf_checks.atlas import compare
    from theory.gpo_atlas import symbolic_row

    s = Setting("sppo_hard")
    assert s.beta == 0.1
    row = F.flow_row(s, quick=True)
    below = {u: v for u, v in row["certificate_level"].items() if float(u) < 1.0}
    assert below, f"no certificate point below U0 = 1: {sorted(row['certificate_level'])}"
    for u, level in row["certificate_level"].items():
        by_hand = (1.0 - float(u)) ** 2 / (2 * 0.1 ** 2) if float(u) < 1.0 else 0.0
        assert level == pytest.approx(by_hand, rel=1e-9, abs=1e-12)
    assert below.get("0.5") == pytest.approx(12.5, rel=1e-9)
    sym = symbolic_row(s)
    agree = compare(sym, row, s)
    assert agree["certificate"] is True and agree["_certificate_max_err"] < 1e-9
    wrong = dict(sym, _l_crit_expr=2 * sym["_l_crit_expr"])
    bad = compare(wrong, row, s)
    assert bad["certificate"] is False and bad["_certificate_max_err"] == pytest.approx(0.5, rel=1e-6)


def test_flow_row_rest_trained_beta_d_of_ipo_and_hinge_by_hand():
    """flow_row's beta_D_rest_trained (the atlas prints it as "(rest trained: ...)" wherever it differs from beta_D by
    more than 1e-6): the flow with the rest of the model's logit trained too, from beta delta_ref = -0.5 (delta_ref =
    -5 at beta 0.1), still ends where the pair loss is flat in delta, since the loss reads delta alone. By hand: IPO
    (h - 1/(2 beta))^2 is stationary at beta D = beta h = 1/2; hinge relu(1 - beta h) is flat from beta D = 1. The
    displacement must be measured from the flow's own start, -5: measured from -10 (a survivor of mutation) it read
    1.0 for IPO and 1.5 for hinge, and the atlas printed those next to the right beta_D."""
    for loss, want in (("ipo", 0.5), ("hinge", 1.0)):
        row = F.flow_row(Setting(loss), quick=True)
        assert row["class"] == "absorbing"
        assert row["beta_D"] == pytest.approx(want, abs=1e-6)
        assert row["beta_D_rest_trained"] == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("setting, cls, beta_D", [
    (Setting("ipo"), "absorbing", 0.5),  # (h - 1/(2 beta))^2: stops at beta h = 1/2
    (Setting("hinge"), "absorbing", 1.0),  # max(0, 1 - beta h): flat from beta h = 1
    (Setting("sppo_hard"), "pinned", 1.0),  # absolute terms pin r_w = 1/(2 beta), r_l = -1/(2 beta)
    (Setting("sigmoid"), "transient", None),  # softplus(-beta h) falls for every h: still moving at the horizon
    (Setting("cpo_sigmoid"), "empty-U", None),  # CPOTrainer, reference-free: no reference region to stay in
])
def test_flow_row_class_of_each_kind_in_process(setting, cls, beta_D):
    """flow_row's class branch, in process (the atlas test reaches it only in a subprocess, where the mutation
    runner's coverage does not see it): a relative loss with a finite stop is "absorbing", an absolute one "pinned",
    one that keeps moving "transient", a CPOTrainer loss "empty-U"; beta D from the loss by hand (abs 1e-6). Flipping
    `spec.kind == "absolute"` (ipo, hinge -> pinned; sppo_hard -> absorbing) or `spec.trainer == "CPOTrainer"` (every
    DPOTrainer row -> empty-U) fails here. (a survivor of mutation: gpo_flow.py:313 and :320, seed 1123, killed by
    hand by tests/dpo_rlhf_checks/test_atlas_cli.py::test_quick_atlas_for_two_losses_agrees)"""
    row = F.flow_row(setting, quick=True)
    assert row["class"] == cls
    if beta_D is None:
        assert row["beta_D"] is None
    else:
        assert row["beta_D"] == pytest.approx(beta_D, abs=1e-6)


def test_population_numeric_full_grid_is_six_probabilities_with_closed_form_optima(tmp_path):
    """population_numeric without --quick (the default run of loss-population-optimum) reads its q grid
    (0.05, 0.3, 0.6, 0.88, 0.95, 0.995) from a tuple that the quick runs never touch. Pins that grid (every q a
    probability strictly inside (0, 1)) and the summed t* at each q against closed forms written out here: DPO
    sigmoid and robust with eps = 0 give logit q; per-token sigmoid_norm with n = 10 gives 10 logit q (52.93 at
    q = 0.995); per-token ipo with n = 10 gives 10 (q - 1/2) (the minimiser of the squared target, summed); all to
    1e-5 relative, the method's own tolerance. (A survivor of mutation: 0.95 -> 1.9 in the full grid only; every
    --quick run passed, the full run crashed on log1p(-1.9).)"""
    res = F.population_numeric(CheckContext(seed=0, quick=False, out_dir=tmp_path))
    qs = res.evidence["q"]
    assert qs == [0.05, 0.3, 0.6, 0.88, 0.95, 0.995]
    table = res.evidence["summed_t_star"]
    for i, q in enumerate(qs):
        logit = math.log(q / (1.0 - q))
        expected = {"sigmoid": logit, "robust_eps0": logit, "sigmoid_norm": 10 * logit, "ipo": 10 * (q - 0.5)}
        for label, t in expected.items():
            assert table[label][i] == pytest.approx(t, rel=1e-5, abs=1e-5), (label, q)
    assert res.literal is False and res.amended is True
