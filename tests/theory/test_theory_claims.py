"""Each theory check returns its computed verdict and the key numbers behind it."""

import math

import numpy as np
import pytest
from scipy.special import expit

from dpo_rlhf_checks.registry import CLAIMS
from dpo_rlhf_checks.result import CheckContext, CheckResult, to_jsonable
from theory import claims as C

THEORY_CHECKS = {
    "rlhf-closed-form": "check_rlhf_closed_form", "dpo-reparam": "check_dpo_reparam",
    "assumption-iff": "check_assumption_iff", "equiv-population": "check_equiv_population",
    "equiv-ordered-pair": "check_equiv_ordered_pair", "relative-advantage": "check_relative_advantage",
    "undesirable-space": "check_undesirable_space", "gradient-weakening": "check_gradient_weakening",
    "loss-delta-bridge": "check_loss_delta_bridge", "soft-margin-ranking": "check_soft_margin_ranking",
    "cpo-constrained-kkt": "check_cpo_constrained_kkt", "cpo-penalized-eq10": "check_cpo_penalized_eq10",
    "cpo-stationary-margin": "check_cpo_stationary_margin", "benchmark-table": "check_benchmark_table",
}
EXPECTED = {
    "rlhf-closed-form": "holds", "dpo-reparam": "holds", "assumption-iff": "holds",
    "equiv-population": "holds-amended", "equiv-ordered-pair": "holds-amended", "relative-advantage": "holds",
    "undesirable-space": "holds-amended", "gradient-weakening": "holds", "loss-delta-bridge": "holds",
    "soft-margin-ranking": "holds", "cpo-constrained-kkt": "holds", "cpo-penalized-eq10": "holds-amended",
    "cpo-stationary-margin": "holds", "benchmark-table": "holds",
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    ctx = CheckContext(seed=0, quick=True, out_dir=tmp_path_factory.mktemp("theory"))
    return {cid: getattr(C, name)(ctx) for cid, name in THEORY_CHECKS.items()}


def test_registry_names_every_theory_check():
    for claim in CLAIMS:
        if claim.id in THEORY_CHECKS:
            assert f"theory.claims:{THEORY_CHECKS[claim.id]}" in claim.checks


@pytest.mark.parametrize("cid", list(THEORY_CHECKS))
def test_verdict_and_result_structure(results, cid):
    res = results[cid]
    assert isinstance(res, CheckResult)
    assert res.verdict == EXPECTED[cid], res.summary
    assert res.summary and res.evidence
    to_jsonable(res.evidence)  # serialisable
    if res.verdict == "holds-amended":
        assert res.counterexample and res.amended_statement
    else:
        assert res.counterexample is None and res.amended_statement is None
    symbolic = res.evidence.get("symbolic", {})
    assert all(v is True for k, v in symbolic.items() if "without" not in k)


def test_equiv_population_numbers(results):
    ev, ce = results["equiv-population"].evidence, results["equiv-population"].counterexample
    assert ev["max_minimiser_error_h_units"] < 1e-6
    assert ev["n_assumption_fails"] > 0 and ev["minimiser_equals_delta_star_where_assumption_fails"] is True
    assert ev["iff_reading_holds"] is False
    assert ce["delta_star"] == pytest.approx(math.log(1 / 9) + 1.0, abs=1e-15)  # -1.1972
    assert ce["population_minimiser_delta"] == pytest.approx(ce["delta_star"], abs=1e-9)
    assert ce["assumption_holds"] is False
    assert ev["three_responses_all_pairs_bt_max_grad_at_pi_star"] < 1e-12


def test_equiv_ordered_pair_numbers(results):
    res = results["equiv-ordered-pair"]
    ev, ce = res.evidence, res.counterexample
    assert ev["pi_star_stationary_count"] == 0 and ev["n_assumption_fails"] > 0
    assert ce["dl_ddelta_at_delta_star"] == pytest.approx(-float(expit(-1.0)), rel=1e-12)  # -beta sigma(-dr)
    assert ce["loss_at_delta_star_plus_5"] < ce["loss_at_delta_star"]
    assert ev["max_grad_err_over_cond_tol"] <= 1.0
    assert ev["flow_time_to_delta_0_examples"]["beta=1,delta_ref=-1"]["t"] == pytest.approx(math.e, rel=1e-14)
    assert ev["flow_time_to_delta_0_examples"]["beta=1000,delta_ref=-1"]["log_t"] == pytest.approx(
        1000 - 2 * math.log(1000), rel=1e-12)
    assert ev["dl_ddelta_at_beta=-1,delta_ref=0,delta=1"] > 0


def test_undesirable_space_numbers(results):
    res = results["undesirable-space"]
    ev = res.evidence
    assert ev["max_loss_minus_log2_on_U"] < 0
    assert ev["pi_star_in_U_for_all_of_them"] and ev["plane_samples_assumption_fails_and_dr_positive"] > 0
    assert ev["dr_positive_is_needed"]["in_U"] is False
    assert res.counterexample["tie"]["delta_star"] == 0.0 and res.counterexample["tie"]["pi_star_in_U"] is False
    assert "strictly" in res.amended_statement


def test_gradient_weakening_numbers(results):
    ev = results["gradient-weakening"].evidence
    assert ev["max_err_over_cond_tol"] <= 1.0 and ev["factor_nonincreasing_through_U"]
    assert ev["n_float64_underflow"] > 0  # beta |delta_ref| > 745 reads 0.0 in float64
    for case in ev["float64_underflow_cases"]:
        assert case["log_exact_factor"] < -700


@pytest.mark.parametrize("beta,delta_ref", [(1.0, -1.0), (0.1, -3.0), (10.0, -0.2), (1e-3, -5.0), (1.0, -1e-6)])
def test_gradient_factor_at_boundary_equals_sigma_beta_delta_ref(beta, delta_ref):
    _, g = C.dpo_value_and_grad([0.0], [delta_ref], beta)
    assert -g[0] / beta == pytest.approx(float(expit(beta * delta_ref)), rel=1e-12)


def test_cpo_constrained_kkt_numbers(results):
    ev = results["cpo-constrained-kkt"].evidence
    assert ev["n_active"] > 0 and ev["n_inactive_mu_0"] > 0
    assert max(ev["max_kkt_residuals"].values()) < 1e-9
    assert ev["J_pi_c_below_a_feasible_policy"] == 0 and ev["random_feasible_policies_compared"] > 100


def test_cpo_constrained_closed_form_known_instance():
    # pi_ref uniform, r = (0, 1): delta_ref = 0, dr = -1, m = 0: mu = (0 - 0 + 1)/2 = 1/2 and pi_c uniform
    log_pc, mu = C.constrained_single_pair(np.log([0.5, 0.5]), np.array([0.0, 1.0]), 1.0, 0.0)
    assert mu == pytest.approx(0.5, abs=1e-15)
    np.testing.assert_allclose(np.exp(log_pc), [0.5, 0.5], atol=1e-15)


def test_cpo_penalized_eq10_numbers(results):
    res = results["cpo-penalized-eq10"]
    ev, ce = res.evidence, res.counterexample
    assert ev["F_is_unbounded_above"] is True
    assert np.all(np.diff(ce["F"]) > 0) and ce["F"][-1] > 60
    assert ce["J_bounds_on_simplex"][0] <= min(ce["J"]) and max(ce["J"]) <= ce["J_bounds_on_simplex"][1]
    assert ev["with_two_stationary_points"] > 0 and ev["with_none"] > 0
    ex = ev["gamma_equals_kkt_multiplier_example"]
    mu = (1.0 * 2.0 - 0.0 + 10.0) / (1 + math.e ** 2)
    assert ex["mu"] == pytest.approx(mu, rel=1e-14)
    assert ex["mu(e^m-1)-beta"] == pytest.approx(mu * (math.e ** 2 - 1) - 1, rel=1e-12)
    assert ex["kind_of_pi_c_for_eq10"] == "local min" and ex["stationarity_residual"] < 1e-9
    assert ex["other_stationary_point"][0]["kind"] == "local max" and ex["other_stationary_point"][0]["delta"] < 0


def test_cpo_stationary_margin_numbers(results):
    ev = results["cpo-stationary-margin"].evidence
    assert ev["max_rel_err_eq13_16"] < 1e-10 and ev["two_response_stationary_points"] > 0
    assert ev["max_eq10_stationarity_residual_at_pi_c_with_gamma=nu*"] < 1e-9 and ev["active_instances"] > 0


def test_benchmark_table_numbers(results):
    res = results["benchmark-table"]
    ev = res.evidence
    assert [g["from_table"] for g in ev["stated_gains"]] == pytest.approx([0.55, 0.66, 2.6, 3.7], abs=1e-12)
    assert ev["arena_hard_intervals"]["DPO"] == pytest.approx([27.2, 30.4])
    assert ev["arena_hard_intervals_overlap"] == {"DPO-SimPO": True, "DPO-CPO": False, "SimPO-CPO": True}
    assert "not re-run" in res.summary and "8B" in ev["not_rerun"]


def test_benchmark_table_mismatch_fails(monkeypatch):
    table = dict(C.BENCHMARK_TABLE)
    table["CPO"] = ("25.16",) + table["CPO"][1:]
    monkeypatch.setattr(C, "BENCHMARK_TABLE", table)
    res = C.check_benchmark_table(CheckContext(quick=True))
    assert res.verdict == "fails"
    assert res.counterexample["failed_conditions"] == ["CPO-DPO AE2 WR = 0.55"]


def test_other_holds_numbers(results):
    assert results["rlhf-closed-form"].evidence["negative_beta_example"]["gibbs_is_not_maximiser"] is True
    assert results["rlhf-closed-form"].evidence["lbfgs_vs_closed_form_max_abs_err"] < 1e-6
    assert results["assumption-iff"].evidence["without_beta_positive"]["forms_disagree"] is True
    assert results["assumption-iff"].evidence["forms_disagree_count"] == 0
    rel = results["relative-advantage"].evidence["same_loss_opposite_alignment"]
    assert rel["A"]["loss"] == rel["B"]["loss"] == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-15)
    br = results["loss-delta-bridge"].evidence
    assert br["equivalence_disagreements"] == 0 and br["mean_loss_bound_holds_on_random_sets"]
    assert br["mean_loss_example"]["mean_loss"] < math.log(2)
    sm = results["soft-margin-ranking"].evidence
    assert sm["max_gap_over_log2_div_beta"] == pytest.approx(1.0, abs=1e-12)
    dp = results["dpo-reparam"].evidence
    assert dp["max_abs_err_loss_at_reference_minus_log2"] < 1e-15
    assert dp["naive_-log(sigmoid(-800))_float64"] == math.inf


@pytest.mark.parametrize("cid", ["equiv-population", "equiv-ordered-pair", "undesirable-space", "cpo-penalized-eq10"])
def test_amended_verdicts_do_not_depend_on_the_seed(cid):
    res = getattr(C, THEORY_CHECKS[cid])(CheckContext(seed=7, quick=True))
    assert res.verdict == EXPECTED[cid]
