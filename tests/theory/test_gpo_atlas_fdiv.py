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
