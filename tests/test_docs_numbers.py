"""Numbers the documentation quotes, against the code that computes them (sections 10, 12, 13 and the README's
U-atlas table; the theory sections' own runs are read in tests/theory/test_theory_claims.py).

Each test reads the number from the documentation's text, so a change of either the text or the code fails it, and
checks the code's value against that text and, where a short computation gives it, against a value worked out
here by hand. A planted error that moves only a documented number (a verdict unchanged) is caught here.
"""

from __future__ import annotations

import math
import re

import pytest
from scipy import integrate
from scipy.optimize import brentq, minimize_scalar
from scipy.stats import chi2, norm
from scipy.stats import t as student_t

from conftest import docs_finding as _finding
from dpo_rlhf_checks.result import CheckContext

def _sigma(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_docs_section_10_certifying_regimes_and_c_star(tmp_path):
    """docs/theory.md §10: `loss < log 2` certifies `delta > 0` in 9 of the derived method's 23 regimes, and cpo_eq17
    certifies iff gamma/beta >= c* = 0.223872. By hand from the regimes' list (toy_bandits/map_claims.py): eq17 2
    (1.1 c*, the code defaults), clip 2 (margin 0, 0.5), smooth 4 (both code settings, alpha 1 with gamma 0, alpha
    0.5 with gamma -0.6), easy 1 (the bounded NLL at 1.05 times its bound), DPO none. c* = max_p p(1-p) log((1-p)/p)
    by a bounded scalar search here. A moved boundary in a derived condition (>= for >, a wrong c*) changes the count
    without changing the verdict (the literal fails either way)."""
    from toy_bandits.map_claims import C_STAR_STATED, cpo_loss_certificates_derived

    found = _finding("docs/theory.md", "§10", r"`loss < log 2` certifies `delta > 0` in\s+(\d+) of (\d+) regimes\..*?"
                                              r"`cpo_eq17` iff `gamma / beta >= c\* = ([0-9.]+)`", re.S)
    res = cpo_loss_certificates_derived(CheckContext(seed=0, out_dir=tmp_path))
    rows = res.evidence["regimes"]
    per_variant = {}
    for r in rows:
        per_variant[r["variant"]] = per_variant.get(r["variant"], 0) + r["predicted_certifies"]
    assert per_variant == {"dpo": 0, "cpo_eq17": 2, "cpo_clip": 2, "cpo_smooth": 4, "cpo_easy": 1}
    assert (sum(per_variant.values()), len(rows)) == (int(found.group(1)), int(found.group(2)))
    best = minimize_scalar(lambda p: -p * (1 - p) * math.log((1 - p) / p), bounds=(1e-6, 0.5), method="bounded",
                           options={"xatol": 1e-10})
    assert round(-best.fun, 6) == float(found.group(3)) == C_STAR_STATED
    assert res.evidence["eq17_c_star"]["c_star_brent"] == pytest.approx(-best.fun, abs=1e-9)


def _power_by_integration(sd: float, distance: float, n: int, k: int, alpha: float = 0.05) -> float:
    """P(interval over n seeds at level 1 - alpha/k clears a bound ``distance`` away), from the definition: the
    statistic (Z + ncp)/sqrt(V/(n-1)), Z normal, V chi-square with n - 1 degrees of freedom, integrated over V (not
    scipy's noncentral t, which the toolkit uses)."""
    df, ncp = n - 1, math.sqrt(n) * distance / sd
    crit = student_t.ppf(1 - alpha / (2 * k), df)
    value, _ = integrate.quad(lambda v: norm.sf(crit * math.sqrt(v / df) - ncp) * chi2.pdf(v, df), 0, math.inf,
                              epsabs=1e-12, limit=200)
    return value


def test_docs_section_12_power_numbers_are_the_design():
    """docs/theory.md §12 states the power rule's numbers: pilot sds 0.051, 0.036 and 0.049; the rule asks 24, 12 and
    96 seeds; at 12 seeds (looks 3, 6, 12) the power at half the margin is 0.72 (fractions in U, margin 0.10), 0.96
    (amounts, 0.10) and 0.19 (shortfalls, 0.05), and 0.74 for a shortfall a whole margin away. toy_lm.design
    computes them with scipy's noncentral t; here the same probabilities by integration over the chi-square. A
    changed pilot sd, margin, level or look count moves them."""
    from toy_lm.design import DESIGN, PILOT, decision_power, family_power, rule_budget

    found = _finding("docs/theory.md", "§12", r"1000-1008: sd ([0-9.]+), ([0-9.]+) and ([0-9.]+)\).*?The rule asks\s+"
                                              r"(\d+), (\d+) and (\d+) seeds; at 12 the power at half the margin is "
                                              r"([0-9.]+) \(fractions in `U`\), ([0-9.]+) \(amounts\) and ([0-9.]+)\s+"
                                              r"\(shortfalls;.*?\), and ([0-9.]+) for a shortfall a whole margin",
                     re.S)
    families = ("fraction_in_U", "amount", "shortfall")
    assert [round(PILOT[f][0], 3) for f in families] == [float(found.group(i)) for i in (1, 2, 3)]
    wanted = rule_budget()["wanted"]
    assert [wanted[f] for f in families] == [int(found.group(i)) for i in (4, 5, 6)]
    margins = {"fraction_in_U": 0.10, "amount": 0.10, "shortfall": 0.05}
    assert (DESIGN.min_fail_frac, DESIGN.tol_frac_in_U, DESIGN.fix_margin) == tuple(margins.values())
    power = family_power(12, 3)
    for f, group in zip(families, (7, 8, 9)):
        by_integration = _power_by_integration(PILOT[f][0], margins[f] / 2, 12, 3)
        assert power[f] == pytest.approx(by_integration, abs=1e-6)
        assert round(power[f], 2) == float(found.group(group)), (f, power[f])
    whole = decision_power(PILOT["shortfall"][0], margins["shortfall"], 12, 3)
    assert whole == pytest.approx(_power_by_integration(PILOT["shortfall"][0], 0.05, 12, 3), abs=1e-6)
    assert round(whole, 2) == float(found.group(10))


def test_docs_section_12_power_of_the_pooled_slow_cells():
    """docs/theory.md §12 quotes, for the two comparisons that decide lm-dpo-failure (ordered amount -0.142, sd 0.060,
    0.042 past its bound; BT amount -0.048, sd 0.052, 0.052 inside it) and lm-cpo-fix's BT shortfall (0.086, sd 0.074,
    0.036 past 0.05), the probability that one seed set decides them at 12, 24 and 48 seeds (3, 4, 5 looks of the
    doubling schedule from 3), the chance both are decided, and the agreement of two seed sets p^2 + (1 - p)^2. Here
    they are read from the text and recomputed (by integration over the chi-square, not scipy's noncentral t)."""
    from toy_lm.design import decision_power, n_looks

    found = _finding("docs/theory.md", "§12", r"decides them is ([0-9.]+) and ([0-9.]+) at 12 seeds \(3 looks\), "
                                              r"([0-9.]+) and ([0-9.]+) at 24 \(4 looks\), ([0-9.]+) and ([0-9.]+) "
                                              r"at 48\s+\(5 looks\).*?both are decided \(about ([0-9.]+) at 12 "
                                              r"seeds\).*?agree with probability about ([0-9.]+)\..*?"
                                              r"0\.036 above 0\.05: "
                                              r"decided \(and the amendment false\) with probability ([0-9.]+) at\s+"
                                              r"12 seeds, ([0-9.]+) at 48", re.S)
    quoted = [float(found.group(i)) for i in range(1, 11)]
    got = []
    for n in (12, 24, 48):
        k = n_looks(3, 1, n, "double")
        assert k == {12: 3, 24: 4, 48: 5}[n]
        for sd, dist in ((0.060, 0.042), (0.052, 0.052)):
            p = decision_power(sd, dist, n, k)
            assert p == pytest.approx(_power_by_integration(sd, dist, n, k), abs=1e-6)
            got.append(round(p, 2))
    both = decision_power(0.060, 0.042, 12, 3) * decision_power(0.052, 0.052, 12, 3)
    got += [round(both, 2), round(both ** 2 + (1 - both) ** 2, 2)]
    got += [round(decision_power(0.074, 0.036, 12, 3), 2), round(decision_power(0.074, 0.036, 48, 5), 2)]
    assert got == quoted


def test_docs_section_13_listwise_example_loss(tmp_path):
    """docs/theory.md §13 (listwise-equivalence): with pi_ref proportional to (1, e^-1, e^-2) a misordered policy has
    Plackett-Luce loss 1.3875 < log 6. By hand at the example's u = (10, 0, 1.1), beta 1: -[10 - log(e^10 + 1 +
    e^1.1)] - [0 - log(1 + e^1.1)] = 1.8e-4 + 1.38734 = 1.38752. The method's own test recomputes the loss from the
    u it reports, so a changed u (loss still below log 6) passed it; the documented loss does not."""
    from theory.sec13_dataset import listwise_symbolic

    found = _finding("docs/theory.md", "§13", r"\(`pi_ref ∝ \(1, e\^-1, e\^-2\)`, loss ([0-9.]+) < log 6\)")
    ex = listwise_symbolic(CheckContext(seed=0, quick=True, out_dir=tmp_path)).evidence["example"]
    by_hand = -(10 - math.log(math.exp(10) + 1 + math.exp(1.1))) + math.log(1 + math.exp(1.1))
    assert round(by_hand, 4) == float(found.group(1)) == 1.3875
    assert ex["loss"] == pytest.approx(by_hand, rel=1e-12)
    assert ex["u = log pi - log pi_ref"] == [10.0, 0.0, 1.1] and ex["beta"] == 1


def test_docs_section_13_cpo_population_numbers(tmp_path):
    """docs/theory.md §13 (cpo-population-alignment) quotes the numeric method's largest thresholds in dr (clip 0.691
    and smooth at the code defaults 0.666, both at beta delta_ref = -6; the released smooth setting 0.0171 at 2.62;
    Eq. 17 0.165 at -0.25) and, on the quick grid, the repaired and misranked fractions (80% and 81%, 7.8% and 7.4%;
    100% and 99.7%) and the counterexample (-6, 0.05; the full grid's at dr = 0.1; the docs gave 0.1 for the quick
    grid). By hand at beta delta_ref = -6 (beta 0.1, delta_ref = -60): clip log(2 sigma(6)) = 0.69067; smooth
    log sigma(beta T(60)) - log sigma(beta T(-60)), T(d) = d + softplus(2 (0.5 - d))/2, = log sigma(6) - log
    sigma(0.05) = 0.66598. The fractions are descriptive (they decide nothing), so only this test sees them move."""
    from toy_bandits.dataset_claims import cpo_population_numeric

    text = (r"largest thresholds: clip ([0-9.]+) and smooth\s+at the code defaults ([0-9.]+), both at "
            r"`beta delta_ref = (-?[0-9.]+)`; the released\s+smooth setting ([0-9.]+) at\s+([0-9.]+), below the "
            r"grid's smallest positive `dr` of ([0-9.]+); Eq\. 17 ([0-9.]+) at (-?[0-9.]+)\)\..*?"
            r"on the quick grid clip and smooth at the\s+code defaults repair (\d+)% and (\d+)% of DPO's failure "
            r"region and leave ([0-9.]+)% and ([0-9.]+)% of the `dr > 0`\s+half-plane ranked the wrong way "
            r"\(counterexample: `beta delta_ref = (-?[0-9.]+), dr = ([0-9.]+)`; the full grid's is at\s+"
            r"`dr = ([0-9.]+)`, its smallest positive `dr`\); the released\s+smooth setting and Eq\. 17 repair "
            r"(\d+)% and ([0-9.]+)% of it\.")
    g = [float(x) for x in _finding("docs/theory.md", "§13", text, re.S).groups()]
    res = cpo_population_numeric(CheckContext(seed=0, quick=True, out_dir=tmp_path))
    thr = res.evidence["cpo_thresholds_in_dr"]
    clip, smooth = thr["CPO clip (m=0; HyPO)"], thr["CPO smooth (code defaults)"]
    released, eq17 = thr["CPO smooth (released: beta=2.5, alpha=0.25)"], thr["CPO Eq. 17 (gamma=0.05)"]
    softplus = lambda x: max(x, 0.0) + math.log1p(math.exp(-abs(x)))  # noqa: E731
    smooth_target = lambda d: d + softplus(2 * (0.5 - d)) / 2  # noqa: E731  tau 2, gamma 0.5, alpha 1
    by_hand = {"clip": math.log(2 * _sigma(6.0)),
               "smooth": math.log(_sigma(0.1 * smooth_target(60.0))) - math.log(_sigma(0.1 * smooth_target(-60.0)))}
    assert clip["max_threshold"] == pytest.approx(by_hand["clip"], rel=1e-12)
    assert smooth["max_threshold"] == pytest.approx(by_hand["smooth"], rel=1e-9)
    assert [round(clip["max_threshold"], 3), round(smooth["max_threshold"], 3)] == g[0:2]
    assert clip["at_beta_delta_ref"] == smooth["at_beta_delta_ref"] == g[2]
    assert [round(released["max_threshold"], 4), round(released["at_beta_delta_ref"], 2)] == g[3:5]
    assert released["max_threshold"] < g[5]
    assert [round(eq17["max_threshold"], 3), round(eq17["at_beta_delta_ref"], 2)] == g[6:8]
    f = res.evidence["fractions"]
    clip_f, smooth_f = f["CPO clip (m=0; HyPO)"], f["CPO smooth (code defaults)"]
    assert [round(100 * clip_f["repaired_of_dpo_failure"]), round(100 * smooth_f["repaired_of_dpo_failure"])] == g[8:10]
    misranked = [clip_f["misranked_where_dr>0"], smooth_f["misranked_where_dr>0"]]
    assert [round(100 * x, 1) for x in misranked] == g[10:12]
    assert [round(100 * f["CPO smooth (released: beta=2.5, alpha=0.25)"]["repaired_of_dpo_failure"]),
            round(100 * f["CPO Eq. 17 (gamma=0.05)"]["repaired_of_dpo_failure"], 1)] == g[15:17]
    cex = res.counterexample["cpo_misranks_with_dr_positive"]
    assert [cex["beta_delta_ref"], round(cex["dr"], 12)] == g[12:14] and g[13] == g[5]
    full = cpo_population_numeric(CheckContext(seed=0, out_dir=tmp_path)).counterexample
    assert round(full["cpo_misranks_with_dr_positive"]["dr"], 12) == g[14]


def _fdiv_end_points(c: float) -> dict[str, float]:
    """D = delta_end - delta_ref where the free log-ratio flow stops for an absorbing loss with t_f/beta = c, by hand
    (docs/theory.md §16: the invariant n G(r_w) + n G(r_l) = 0 and s(r_w) - s(r_l) = c). forward KL: a = e^r_w,
    a = ((c - 1) + sqrt(1 + c^2))/c, D = log(a/(2 - a)). alpha 0.5: s = 2 (1 - e^(-r/2)), G = 2 (e^(r/2) - 1), so with
    a = e^(r_w/2), b = 2 - a: 1/b - 1/a = c/2, i.e. (c/2) a^2 - (c - 2) a - 2 = 0, D = 2 log(a/b). JS: s = log 2 + log
    sigma(r), G = r + e^r - 1; r_l from the invariant (monotone) and r_w by a root search."""
    a = ((c - 1) + math.sqrt(1 + c * c)) / c
    forward = math.log(a / (2 - a))
    h = c / 2
    a = ((c - 2) + math.sqrt((c - 2) ** 2 + 8 * h)) / (2 * h)
    alpha = 2 * math.log(a / (2 - a))

    def r_l_of(r_w):
        return brentq(lambda r: r + math.exp(r) - 1 + r_w + math.exp(r_w) - 1, -200.0, 50.0, xtol=1e-15)

    log_sig = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
    r_w = brentq(lambda r: log_sig(r) - log_sig(r_l_of(r)) - c, 0.0, 5.0, xtol=1e-15)
    return {"forward_kl": forward, "js_divergence": r_w - r_l_of(r_w), "alpha_divergence": alpha}


def test_readme_atlas_f_divergence_end_points():
    """README's U-atlas table: under forward KL / JS / alpha (a = 0.5) the absorbing losses end at beta D = 0.300 /
    1.238 / 0.462 (hinge, t_f = 1) and 0.231 / 0.686 / 0.329 (ipo, t_f = 1/2), beta 0.1 (c = t_f/beta = 10 and 5).
    theory.gpo_atlas solves the two symbolic equations with mpmath; here the closed forms and a root search by hand.
    The forward-KL hinge value had a test; the other five, which only the README states, did not (and the README
    had 0.463 for alpha hinge, 0.46249 by hand and in the code)."""
    from dpo_rlhf_checks.atlas_rows import ROWS
    from theory import gpo_atlas as G

    found = _finding("README.md", "(the U-atlas table)",
                     r"\| as the loss \| hinge: `beta D = ([0-9.]+) / ([0-9.]+) / ([0-9.]+)`; ipo: "
                     r"`([0-9.]+) / ([0-9.]+) / ([0-9.]+)` \(not `t_f`\)")
    documented = [float(x) for x in found.groups()]
    order = ("forward_kl", "js_divergence", "alpha_divergence")
    got = []
    for loss, t_f in (("hinge", 1.0), ("ipo", 0.5)):
        rows = {s.f_div: s for s in ROWS if s.loss == loss and s.f_div != "reverse_kl"}
        assert set(rows) == set(order) and rows["alpha_divergence"].alpha_coef == 0.5
        assert all(s.beta == 0.1 and s.n == 1 for s in rows.values())
        by_hand = _fdiv_end_points(t_f / 0.1)
        for f_div in order:
            beta_d = G.symbolic_row(rows[f_div])["beta_D"]
            assert beta_d == pytest.approx(0.1 * by_hand[f_div], rel=1e-9), (loss, f_div)
            got.append(round(beta_d, 3))
    assert got == documented


def test_docs_section_9a_certificate_tolerances_are_the_code_s():
    """docs/theory.md §9(a) quotes the dual-certificate tolerances (<= 1e-8 with CLARABEL's duals, an L1 radius of
    1.4e-4; <= 5e-4 with SCS's, 3.2e-2) and the rounding floor -1e-11 max(1, KL); the method reads TOL_GAP and
    GAP_ROUNDING. Pins the text to the code, and the radii to sqrt(2 gap) worked here (a helper's finding while
    reviewing seed 1120: doubling SCS's tolerance left the text stale)."""
    from toy_bandits import solver_claims as sc

    m = _finding("docs/theory.md", "§9(a)", r"requires `-([0-9.e-]+) max\(1, KL\(pi \|\| pi\*\)\) <= gap <= ([0-9.e-]+)` "
                 r"with CLARABEL's duals \(an L1\s+radius of ([0-9.e-]+)\) and `<= ([0-9.e-]+)` with SCS's \(([0-9.e-]+):")
    floor, clarabel, r_clarabel, scs, r_scs = (float(x) for x in m.groups())
    assert sc.GAP_ROUNDING == floor
    assert sc.TOL_GAP == {"cvxpy:CLARABEL": clarabel, "cvxpy:SCS": scs}
    assert math.sqrt(2 * clarabel) == pytest.approx(r_clarabel, rel=0.02)
    assert math.sqrt(2 * scs) == pytest.approx(r_scs, rel=0.02)
