"""The paper's four CPO variants as U-atlas rows: what each row must say, written from the closed forms before the
symbolic derivation (theory/gpo_atlas.py) and the bandit flow (toy_bandits/gpo_flow.py) were run on them
(docs/theory.md §16, "The paper's CPO variants").

Every variant is of target form l = softplus(beta (T - delta)) (per-token means for cpo_easy, length n), so with the
margin m = beta (T - delta_ref) (per-token units for cpo_easy) and x = beta (delta - delta_ref)/n:
  dx/dt = (2 beta^2/n^2) sigma(m - x)  (free log-ratio flow from the reference),
  class: transient (logistic f, infimum at +inf): delta rises for ever;
  time in U (delta = 0 at x = U0/n, U0 = -beta delta_ref): T(U0) = (n^2/(2 beta^2)) [U0/n + e^-m (e^(U0/n) - 1)];
  certificate: l < l_crit = softplus(m - U0/n) <=> delta > 0; loss < log 2 certifies iff m >= U0/n;
  gradient factor sigma(m - x): sigma(m) at the reference, sigma(m - U0/n) at the exit;
  BT population optimum at q: with M = (m + m_rev)/2 (m_rev: the margin of the reversed pair),
  t* = beta (delta* - delta_ref) = n (m - M + x*(M)), e^x* = [(2q - 1) + sqrt((2q - 1)^2 + 4 q (1 - q) e^-2M)] /
  (2 (1 - q) e^-M); t* = dr (pi*) iff M = 0.
The rows' reference: log pi_ref(y_l) = -300 and log pi_ref(y_w) = -300 + delta_ref at a violated reference (the
bandit's). The margins there: eq17 m = gamma (e^(300 + U0/beta) + e^300) (astronomical: e^-m = 0), clip (margin 0)
m = U0, smooth m = (beta/alpha) softplus(tau (gamma + U0/beta))/tau, easy m = gamma n (1/(-300 - U0/beta) + 1/(-300)).
"""

import math

import pytest
import sympy as sp

from dpo_rlhf_checks.atlas_rows import PAPER_CPO_ROWS, Setting
from theory import gpo_atlas as G
from toy_bandits import gpo_flow as F

LAM = -300.0
Q = 0.88
DR = math.log(Q / (1 - Q))

EQ17 = Setting("cpo_eq17", params={"gamma": 0.5})
CLIP = Setting("cpo_clip")
SMOOTH = Setting("cpo_smooth", params={"gamma": 0.5, "tau": 2.0, "alpha": 1.0})
SMOOTH_RELEASED = Setting("cpo_smooth", beta=2.5, params={"gamma": 0.5, "tau": 2.0, "alpha": 0.25})
EASY = Setting("cpo_easy", params={"gamma": 0.5}, n=10)
ALL = (EQ17, CLIP, SMOOTH, SMOOTH_RELEASED, EASY)


def _softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _margin(s: Setting, log_w: float, log_l: float) -> float:
    """m = beta (T - delta_ref) of the pair (chosen log_w, rejected log_l), written from docs/theory.md §10."""
    d_ref = log_w - log_l
    p, b = s.params, s.beta
    if s.loss == "cpo_eq17":
        return math.inf  # gamma (e^-log_w + e^-log_l) >= gamma e^300: e^-m is 0 in any float
    if s.loss == "cpo_clip":
        return b * (max(d_ref, p.get("margin", 0.0)) - d_ref)
    if s.loss == "cpo_smooth":
        return b * _softplus(p["tau"] * (p["gamma"] - d_ref)) / p["tau"] / p["alpha"]
    if s.loss == "cpo_easy":
        return p["gamma"] * (s.n / log_w + s.n / log_l)
    raise AssertionError(s.loss)


def _law(s: Setting, u0: float) -> float:
    m, n, b = _margin(s, LAM - u0 / s.beta, LAM), s.n, s.beta
    return n * n / (2 * b * b) * (u0 / n + (0.0 if math.isinf(m) else math.exp(-m) * math.expm1(u0 / n)))


def _pop(s: Setting, beta_delta_ref: float) -> float:
    d = beta_delta_ref / s.beta
    lw, ll = LAM + min(d, 0.0), LAM - max(d, 0.0)
    m, m_rev = _margin(s, lw, ll), _margin(s, ll, lw)
    if math.isinf(m):
        return math.inf  # x*(M) = M + log((2q - 1)/(1 - q)) + o(1) -> +inf for q > 1/2
    M = (m + m_rev) / 2
    y = ((2 * Q - 1) + math.sqrt((2 * Q - 1) ** 2 + 4 * Q * (1 - Q) * math.exp(-2 * M))) / (2 * (1 - Q) * math.exp(-M))
    return s.n * (m - M + math.log(y))


def test_the_rows_are_in_the_atlas():
    assert [s.key for s in PAPER_CPO_ROWS] == [s.key for s in ALL]


def test_expected_numbers_by_hand():
    """Spot values of the formulas above (computed once by hand, so the helpers here are checked too)."""
    assert _law(CLIP, 2.0) == pytest.approx((3 - math.exp(-2)) / 0.02, rel=1e-12)  # 143.233
    assert _law(EQ17, 2.0) == pytest.approx(100.0, rel=1e-12)  # U0/(2 beta^2)
    assert _law(EASY, 2.0) == pytest.approx(2143.3445, rel=1e-6)
    assert _pop(CLIP, 0.0) == pytest.approx(DR, rel=1e-12)  # at delta_ref = 0 clip is DPO
    assert _pop(CLIP, -2.0) == pytest.approx(3.86970, abs=1e-5)  # far above pi*'s dr = 1.992
    assert _pop(SMOOTH, 0.0) == pytest.approx(2.04301, abs=1e-5)


@pytest.mark.parametrize("s", ALL, ids=lambda s: s.key)
def test_symbolic_row(s):
    row = G.symbolic_row(s)
    assert row["class"] == "transient" and row["beta_D"] == math.inf
    law = row["_time_law_expr"].subs(G.beta, sp.nsimplify(s.beta))
    for u0 in (0.5, 2.0, 5.0, 8.0):
        assert float(law.subs(G.U0, u0)) == pytest.approx(_law(s, u0), rel=1e-10)
    for x in (0.0, -2.0):
        got = row["_population_t"][x]
        # eq17: x*(M) = M + log((2q - 1)/(1 - q)) + o(1) with M = m_ref ~ 1e130, finite in mpmath, runaway in any float
        assert got == pytest.approx(_pop(s, x), abs=1e-8) if math.isfinite(_pop(s, x)) else got > 1e100
    for u0 in (0.5, 2.0, 5.0):
        m = _margin(s, LAM - u0 / s.beta, LAM)
        l_crit, g_ref, g_exit = row["_certificate_at"](u0)
        if math.isinf(m):
            assert l_crit > 1e100 and g_ref == 1.0 and g_exit == 1.0
        else:
            assert l_crit == pytest.approx(_softplus(m - u0 / s.n), rel=1e-10)
            assert g_ref == pytest.approx(_sigmoid(m), rel=1e-10)
            assert g_exit == pytest.approx(_sigmoid(m - u0 / s.n), rel=1e-10)
    # log 2 certifies delta > 0 on every violated pair iff m >= U0/n for every U0: yes for eq17 (sequences), clip,
    # smooth (alpha = 1 and the released alpha = 0.25); no for easy (its margin is negative)
    assert row["log2_certifies"] is (s.loss != "cpo_easy")
    # the printed formulas exit at U0/n (per-token h with n tokens): 'U0/10' for cpo_easy's n = 10, plain 'U0' for
    # n = 1 (the two swapped, a survivor of mutation, printed softplus(m - U0) for cpo_easy)
    want = "U0" if s.n == 1 else f"U0/{s.n}"
    assert f"[{want} + e^-m (e^({want}) - 1)]" in row["time_law"], row["time_law"]
    assert f"softplus(m - {want}) <=>" in row["certificate"] and f"sigma(m - {want}) at the exit" in row["grad_factor"]


@pytest.mark.parametrize("s", ALL, ids=lambda s: s.key)
def test_flow(s):
    for u0 in (0.5, 2.0, 5.0):
        st = F.exit_state(s, u0)
        assert st["t_cross"] == pytest.approx(_law(s, u0), rel=1e-5)
        m = _margin(s, LAM - u0 / s.beta, LAM)
        if math.isinf(m):
            assert st["loss"] > 1e100 and st["grad_factor_reference"] == 1.0 and st["grad_factor_exit"] == 1.0
        else:
            assert st["loss"] == pytest.approx(_softplus(m - u0 / s.n), rel=1e-5)
            assert st["grad_factor_reference"] == pytest.approx(_sigmoid(m), rel=1e-9)
            assert st["grad_factor_exit"] == pytest.approx(_sigmoid(m - u0 / s.n), rel=1e-5)
    for x in (0.0, -2.0):
        res = F.population_t(s, Q, delta_ref=x / s.beta)
        want = _pop(s, x)
        if math.isinf(want):
            assert not res["finite"] and res["t"] > 0
        else:
            assert res["finite"] and res["t"] == pytest.approx(want, abs=1e-5)


def test_log2_certifies_decided_past_the_grid():
    """cpo_smooth with alpha = 1.01 and gamma = 500 (n = 1, beta = 0.1): m(U0) - U0 = (beta gamma + U0)/alpha - U0 +
    o(1) is positive on the whole log grid U0 in [1e-3, 1e2] and turns negative near U0 = 5,000, so log 2 does not
    certify every violated pair and only the limit U0 -> oo says so. With the limit taken of m + U0/n (a survivor of
    mutation) the row said yes."""
    s = Setting("cpo_smooth", params={"gamma": 500.0, "tau": 2.0, "alpha": 1.01})
    gap = [_margin(s, LAM - u / s.beta, LAM) - u / s.n for u in (1e-3, 1.0, 1e2, 1e4)]
    assert min(gap[:3]) > 48.0 and gap[3] < -49.0  # by hand: the grid's end is positive, 1e4 is not
    assert G.symbolic_row(s)["log2_certifies"] is False


@pytest.mark.parametrize("gamma, certifies", [(-1.5, False), (-1.0, True)])
def test_log2_certifies_sees_a_dip_inside_the_grid(gamma, certifies):
    """cpo_smooth with alpha = 0.25 < 1, tau = 2, beta = 10 (n = 1): with s = gamma + U0/beta the gap m(U0) - U0 is
    beta (softplus(tau s)/(alpha tau) - s + gamma), smallest where sigma(tau s) = alpha, at U0* = beta (logit(alpha)/tau
    - gamma), and equal there to beta (gamma + H(alpha)/(alpha tau)) (H the binary entropy in nats, H(1/4) = 0.5623):
    the registry's amendment boundary gamma >= -H(alpha)/(alpha tau) = -1.1247. gamma = -1.5: the gap dips to -3.75
    at U0* = 9.51 and is positive on U0 <= 0.3 and as U0 -> oo (slope 1/alpha - 1 = 3), so log 2 does not certify;
    gamma = -1.0: the gap stays >= +1.25 (at U0* = 4.51) and it does. The grid U0 in [1e-3, 1e2] must reach the dip:
    with it cut to [1e-3, 10^-0.5] (400 -> 800 in the exponent's step, a survivor of mutation) gamma = -1.5 said yes."""
    s = Setting("cpo_smooth", beta=10.0, params={"gamma": gamma, "tau": 2.0, "alpha": 0.25})
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert h == pytest.approx(0.5623351446188083, rel=1e-15)
    u_star = 10.0 * (math.log(0.25 / 0.75) / 2.0 - gamma)
    floor = 10.0 * (gamma + h / (0.25 * 2.0))
    gap = lambda u: _margin(s, LAM - u / s.beta, LAM) - u / s.n  # noqa: E731
    assert gap(u_star) == pytest.approx(floor, rel=1e-9)
    assert min(gap(u_star * f) for f in (0.9, 0.99, 1.01, 1.1)) > gap(u_star)  # the minimum, by hand
    assert min(gap(u) for u in (1e-3, 1e-2, 0.1, 0.3, 1e2)) > 0.5  # positive at the grid's small end and at 1e2
    assert (floor < -3.7) if not certifies else (floor > 1.2)
    assert G.symbolic_row(s)["log2_certifies"] is certifies


def test_grad_factor_text_prints_the_factors_at_u0_2():
    """Pins the numbers the atlas row prints as '(U0 = 2: sigma(m) -> sigma(m - U0/n)' against hand values (a
    survivor of mutation: certificate_at(2.0) -> certificate_at(4.0) printed U0 = 4's factors under 'U0 = 2'):
    cpo_clip has m = U0, so sigma(2) = 0.8808 -> sigma(0) = 0.5; cpo_smooth (beta 0.1, alpha 1, gamma 0.5, tau 2) has
    m = (beta/alpha) softplus(tau (gamma + U0/beta))/tau = 0.05 softplus(41) = 2.05 (to 1e-18), so sigma(2.05) = 0.8859
    -> sigma(0.05) = 0.5125 (docs: 'exit factor sigma(beta gamma) = 0.5125')."""
    import re

    rows = {s.loss + ("" if s.beta == 0.1 else "_released"): s for s in PAPER_CPO_ROWS}
    for loss, m in (("cpo_clip", 2.0), ("cpo_smooth", 0.05 * (41 + math.log1p(math.exp(-41))))):
        text = G.symbolic_row(rows[loss])["grad_factor"]
        got = re.search(r"\(U0 = 2: ([0-9.]+) -> ([0-9.]+);", text)
        assert got, text
        want = (1 / (1 + math.exp(-m)), 1 / (1 + math.exp(-(m - 2.0))))
        assert float(got.group(1)) == pytest.approx(want[0], abs=6e-5), text
        assert float(got.group(2)) == pytest.approx(want[1], abs=6e-5), text
