"""The f-divergence rows of loss-population-optimum: the sigmoid loss under forward KL, at the beta of its pi*
comparison, solved here independently (SciPy root of the two stated equations)."""

import math

import pytest
from scipy.optimize import brentq

from dpo_rlhf_checks.result import CheckContext
from theory.gpo_atlas import population_symbolic


def _forward_kl_delta(beta, p_w, p_l, dr):
    # s(r) = 1 - e^-r: e^-r_l - e^-r_w = dr / beta, with p_w e^r_w + p_l e^r_l = 1 (r_l < -log p_l)
    def r_w(r_l):
        return math.log((1.0 - p_l * math.exp(r_l)) / p_w)

    r_l = brentq(lambda c: math.exp(-c) - math.exp(-r_w(c)) - dr / beta, -50.0, -math.log(p_l) - 1e-12,
                 xtol=1e-15, rtol=1e-15)
    return (math.log(p_w) + r_w(r_l)) - (math.log(p_l) + r_l)


def test_forward_kl_row_is_at_the_beta_of_its_pi_star(tmp_path):
    ev = population_symbolic(CheckContext(seed=0, quick=True, out_dir=tmp_path)).evidence["f_divergence_sigmoid"]
    row = ev["forward_kl"]
    beta = 0.1  # pi*'s log-odds: log(0.3 / 0.7) + dr / beta with dr = 1
    assert row["delta_pi_star"] == pytest.approx(math.log(0.3 / 0.7) + 1.0 / beta, abs=1e-12)
    assert row["delta_f"] == pytest.approx(_forward_kl_delta(beta, 0.3, 0.7, 1.0), abs=1e-9)
    assert abs(row["delta_f"] - row["delta_pi_star"]) > 1e-3  # it does not recover pi*


def _delta_by_score(score, beta, p_w, p_l, dr):
    # the sigmoid loss's BT population optimum under an f-divergence score s: beta (s(r_w) - s(r_l)) = dr, with
    # r_y = log(pi(y) / pi_ref(y)) and pi = (sigma(delta), sigma(-delta)) on two responses; root in delta by Brent
    def g(d):
        log_pw, log_pl = -math.log1p(math.exp(-d)), -math.log1p(math.exp(d))
        return beta * (score(log_pw - math.log(p_w)) - score(log_pl - math.log(p_l))) - dr

    return brentq(g, -50.0, 50.0, xtol=1e-14)


def test_all_three_f_divergence_rows_by_hand(tmp_path):
    """Every f-divergence row of population_symbolic (the symbolic method of loss-population-optimum), not only forward
    KL: pi_ref = (0.3, 0.7), beta 0.1, dr = 1, solved here by Brent with the f-DPO scores written out, constants
    dropped (forward KL s = -e^-r, JS s = -log(1 + e^-r), alpha divergence at TRL's a = 1/2 s = -2 e^(-r/2)):
    delta_f = 2.6207, 10.6190, 3.7628 (the values README gives for population_numeric; the two methods must agree).
    Pins the alpha row at a = 1/2, the coefficient README's table names: a survivor of mutation
    (theory/gpo_atlas.py::population_symbolic::const-half::f3cb9a1954, a = 0.5 -> 0.25, gave 3.0704 under the
    name alpha_divergence and no test noticed, since 3.0704 still differs from pi*'s 9.1527)."""
    scores = {"forward_kl": lambda r: -math.exp(-r), "js_divergence": lambda r: -math.log1p(math.exp(-r)),
              "alpha_divergence": lambda r: -2.0 * math.exp(-r / 2)}
    ev = population_symbolic(CheckContext(seed=0, quick=True, out_dir=tmp_path)).evidence["f_divergence_sigmoid"]
    assert set(ev) == set(scores)
    d_star = math.log(0.3 / 0.7) + 1.0 / 0.1
    for f_div, s in scores.items():
        d_f = _delta_by_score(s, 0.1, 0.3, 0.7, 1.0)
        assert ev[f_div]["delta_f"] == pytest.approx(d_f, abs=1e-9), f_div
        assert ev[f_div]["delta_pi_star"] == pytest.approx(d_star, abs=1e-12)
        assert abs(d_f - d_star) > 1.0  # none recovers pi*
    assert [round(_delta_by_score(s, 0.1, 0.3, 0.7, 1.0), 4) for s in scores.values()] == [2.6207, 10.619, 3.7628]
