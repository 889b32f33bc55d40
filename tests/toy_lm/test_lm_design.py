"""The LM claims' pre-registered design: intervals, decisions, looks, the BT ceiling, the registry's text."""

import math
import re

import numpy as np
import pytest
import torch
from scipy.stats import t as student_t

from dpo_rlhf_checks.losses import get_loss
from dpo_rlhf_checks.registry import get_claim
from toy_lm import decide as decide_mod
from toy_lm.ceiling import minimiser_reaches
from toy_lm.config import LMConfig, load_config
from toy_lm.design import (BUDGET_CAP, DESIGN, PILOT, POWER_TARGET, Spec, and3, cpo_fix_specs, decide_bound,
                           decision_power, dpo_failure_specs, family_power, look_sizes, n_looks, power_budget,
                           rule_budget, seed_interval)
from toy_lm.tabular import tabular_minimiser_reaches


def test_seed_interval_is_the_student_t_interval_with_the_resolution_floor():
    x = [0.40, 0.47, 0.41, 0.52]
    iv = seed_interval(x, 0.95)
    half = student_t.ppf(0.975, 3) * np.std(x, ddof=1) / 2
    assert iv["lo"] == pytest.approx(np.mean(x) - half, abs=1e-12) and iv["hi"] == pytest.approx(np.mean(x) + half)
    # the reported sd, by hand: squared deviations from 0.45 sum to 0.0094, / 3 -> sd 0.0559762 (it came back None
    # for every n >= 2 under a flipped comparison, a survivor of mutation); one value has none
    assert iv["sd"] == pytest.approx(math.sqrt(0.0094 / 3), rel=1e-12) and iv["sd"] == pytest.approx(0.0559762, rel=1e-6)
    assert iv["sd_used"] == iv["sd"] and iv["n"] == 4 and iv["mean"] == pytest.approx(0.45, rel=1e-15)
    # Seeds that agree to the last pair: the sd is floored at the rounding's, 1 / (P sqrt 12), never 0.
    flat = seed_interval([0.0, 0.0, 0.0], 0.95, resolution=1 / 32)
    assert flat["sd_used"] == pytest.approx(1 / (32 * math.sqrt(12)))
    assert flat["hi"] == pytest.approx(student_t.ppf(0.975, 2) * flat["sd_used"] / math.sqrt(3))
    one = seed_interval([0.3], 0.95)
    assert one["lo"] == -math.inf and one["hi"] == math.inf and one["sd"] is None and one["sd_used"] is None
    with pytest.raises(ValueError, match="finite"):
        seed_interval([0.1, float("nan")], 0.95)


@pytest.mark.parametrize("test, bound, lo, hi, expected", [
    ("at_least", 0.1, 0.11, 0.5, True), ("at_least", 0.1, 0.0, 0.09, False), ("at_least", 0.1, 0.05, 0.2, None),
    ("at_least", 0.1, 0.1, 0.2, None),  # touching the bound is not clearing it
    ("at_most", 0.05, -0.01, 0.049, True), ("at_most", 0.05, 0.06, 0.2, False), ("at_most", 0.05, 0.0, 0.05, None),
    ("within", 0.1, -0.09, 0.09, True), ("within", 0.1, 0.11, 0.3, False), ("within", 0.1, -0.3, -0.11, False),
    ("within", 0.1, -0.05, 0.12, None), ("within", 0.1, -0.2, 0.2, None),
    # every other touching edge, each side of each test: touching is not clearing
    ("at_least", 0.1, 0.0, 0.1, None), ("at_most", 0.05, 0.05, 0.2, None), ("within", 0.1, 0.1, 0.3, None),
    ("within", 0.1, -0.3, -0.1, None), ("within", 0.1, -0.1, 0.05, None), ("within", 0.1, -0.05, 0.1, None),
])
def test_decide_bound_truth_table(test, bound, lo, hi, expected):
    assert decide_bound(test, bound, lo, hi) is expected


def test_looks_and_three_valued_and():
    assert look_sizes(3, 3, 9) == [3, 6, 9] and n_looks(3, 3, 9) == 3
    assert look_sizes(3, 3, 8) == [3, 6, 8] and look_sizes(3, 3, 3) == [3] and look_sizes(2, 2, 6) == [2, 4, 6]
    assert and3([True, True]) is True and and3([True, None]) is None and and3([None, False]) is False
    assert and3([]) is True


class _FakeStage:
    """What evaluate() reads of a stage: the config, planned seeds and the decisions cache."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.decisions = {}
        self.planned_seeds = list(range(cfg.max_seeds))


def _planted(monkeypatch, values):
    monkeypatch.setattr(decide_mod, "extend", lambda *a, **k: None)
    monkeypatch.setattr(decide_mod, "seed_value", lambda stage, spec, seed: values[spec.name][seed])


def test_sequential_evaluation_decides_at_the_first_clearing_look_with_bonferroni_over_looks(monkeypatch):
    cfg = LMConfig(seeds=(0, 1, 2), seed_step=3, max_seeds=9)
    spread = [0.40, 0.10, 0.30, 0.30, 0.31, 0.30, 0.29, 0.30, 0.30]  # wide at 3 seeds, narrow by 6
    values = {"a": spread, "b": [0.101] * 9, "c": [0.5, 0.52, 0.49] + [0.0] * 6}
    _planted(monkeypatch, values)
    specs = [Spec("a", (2.5, "sgd", "dpo"), "obs_frac_in_U", "at_least", 0.10),
             Spec("b", (2.5, "sgd", "dpo"), "obs_frac_in_U", "at_least", 0.10),
             Spec("c", (2.5, "sgd", "dpo"), "obs_frac_in_U", "at_least", 0.10)]
    out = decide_mod.evaluate(_FakeStage(cfg), specs)
    level = 1 - DESIGN.alpha / 3
    assert all(o["level"] == pytest.approx(level) for o in out.values())
    iv3 = seed_interval(spread[:3], level, 1 / cfg.n_train_prompts)
    assert iv3["lo"] < 0.10  # undecided at the first look ...
    assert out["a"]["decided"] is True and out["a"]["look"] == 2 and out["a"]["n_seeds"] == 6  # ... decided at the second
    assert out["b"]["decided"] is None and out["b"]["n_seeds"] == 9  # at the bound: never cleared, budget spent
    assert out["c"]["decided"] is True and out["c"]["look"] == 1  # fixed at look 1; the later zeros are never seen


def test_an_undecided_comparison_makes_the_method_inconclusive(monkeypatch):
    from toy_lm import claims

    n = LMConfig().max_seeds
    values = {s.name: [0.10] * n for p in dpo_failure_specs(LMConfig()).values() for s in p}
    _planted(monkeypatch, values)
    d = claims._decide(_FakeStage(LMConfig()), dpo_failure_specs(LMConfig()), ["fail"], ["fail"])
    assert d["literal"] is None and f"undecided after the seed budget ({n} seeds)" in d["inconclusive"]


def test_judged_cells_are_fixed_by_the_design_alone():
    cfg = LMConfig()
    parts = cpo_fix_specs(cfg)
    assert {s.key for s in parts["ordered"]} == {(2.5, o, m) for o in ("sgd", "adam") for m in ("cpo_clip", "cpo_smooth")}
    assert {s.key for s in parts["bt_vs_ceiling"]} == {(b, o, m) for b in (0.5, 2.5) for o in ("sgd", "adam")
                                                       for m in ("cpo_clip_bt", "cpo_smooth_bt")}
    fail = dpo_failure_specs(cfg)
    assert {s.key for s in fail["fail"]} == {(2.5, "sgd", "dpo"), (2.5, "adam", "dpo")}
    assert len(fail["amount_ordered"]) == len(fail["amount_bt"]) == 4


def test_registry_text_states_the_designs_numbers_and_methods_report_it_verbatim():
    for claim_id in ("lm-dpo-failure", "lm-cpo-fix"):
        claim = get_claim(claim_id)
        text = claim.statement + " " + claim.amendment
        assert "beta 2.5" in text and "1 - 0.05/K" in claim.statement or claim_id == "lm-cpo-fix"
        assert f"{DESIGN.alpha:g}" in claim.statement
    dpo = get_claim("lm-dpo-failure")
    assert f">= {DESIGN.min_fail_frac:.2f}" in dpo.statement and "<= 0.5 log 2" in dpo.statement
    assert f"+-{DESIGN.tol_frac_in_U:.2f}" in dpo.statement and f"+-{DESIGN.tol_frac_in_U:.2f}" in dpo.amendment
    assert DESIGN.low_loss == pytest.approx(0.5 * math.log(2))
    cpo = get_claim("lm-cpo-fix")
    assert f"<= {DESIGN.fix_margin:.2f}" in cpo.statement and f"at most {DESIGN.fix_margin:.2f}" in cpo.amendment
    cfg = LMConfig()
    sizes = look_sizes(len(cfg.seeds), cfg.seed_step, cfg.max_seeds, cfg.look_schedule)
    looks = ", ".join(str(n) for n in sizes)
    assert f"up to {cfg.max_seeds}" in dpo.statement and f"{len(cfg.seeds)} seeds, doubled at each look" in dpo.statement
    assert f"({looks})" in dpo.statement and f"{looks} seeds" in cpo.statement
    confirm = load_config("confirm")
    looks_c = ", ".join(str(n) for n in look_sizes(len(confirm.seeds), confirm.seed_step, confirm.max_seeds,
                                                   confirm.look_schedule))
    assert f"confirm the rule's uncapped budget, looks {looks_c})" in dpo.statement.replace("\n", " ")
    assert f"{looks_c} with --lm-config confirm" in cpo.statement
    for name in DESIGN.carriers + DESIGN.carriers_bt:
        assert name in cpo.statement
    # No number in the amendments comes from a run: every decimal in them is a design number.
    design_numbers = {"0.10", "0.5", "2.5", "0.05", "16"}
    for claim in (dpo, cpo):
        structural = {"0", "1", "2", "12", "13", "14"}  # "1 - fraction", log 2, section numbers
        assert set(re.findall(r"\d+\.\d+|\b\d+\b", claim.amendment)) - structural <= design_numbers


def test_bt_ceiling_is_the_sign_of_the_exact_population_minimiser():
    """The closed form against a brute-force minimisation of the toolkit's own loss, and against the tabular
    derivative test (three independent writings of one fact)."""
    cfg = LMConfig()
    rng = np.random.default_rng(0)
    d = torch.linspace(-40, 40, 40001, dtype=torch.float64)
    for name in ("cpo_clip_bt", "cpo_smooth_bt"):
        base, params = name[:-3], cfg.loss_params(name)
        beta = rng.choice([0.5, 2.5], 60)
        dref = rng.uniform(-8, 8, 60)
        q = rng.integers(0, 17, 60) / 16
        for i in range(60):
            rc = torch.full_like(d, -20.0)
            rr = rc - dref[i]
            pr = torch.full_like(d, -120.0)
            fwd = get_loss(base)(pr + d, pr, rc, rr, beta=float(beta[i]), **params).losses
            bwd = get_loss(base)(pr, pr + d, rr, rc, beta=float(beta[i]), **params).losses
            dstar = float(d[(q[i] * fwd + (1 - q[i]) * bwd).argmin()])
            closed = bool(minimiser_reaches(name, float(beta[i]), params, q[i:i + 1], dref[i:i + 1], 0.0)[0])
            tab = bool(tabular_minimiser_reaches(name, float(beta[i]), params, q[i:i + 1], np.array([-20.0]),
                                                 np.array([-20.0 - dref[i]]), 0.0)[0])
            assert closed == tab, (name, beta[i], dref[i], q[i])
            if abs(dstar) > 4e-3:  # the grid's resolution
                assert closed == (dstar >= 0), (name, beta[i], dref[i], q[i], dstar)
    # Ordered labels: every pair can reach delta >= m; all labels against y_w: none can.
    assert minimiser_reaches("cpo_clip", 2.5, {"margin": 0.0}, np.ones(3), np.array([-9.0, 0.0, 4.0]), 0.0).all()
    assert not minimiser_reaches("cpo_clip_bt", 2.5, {"margin": 0.0}, np.zeros(2), np.array([-1.0, 3.0]), 0.0).any()


def test_bt_ceiling_of_clip_follows_the_condition_of_section_13():
    """docs/theory.md §13: with delta_ref < 0, cpo_clip's BT minimiser ranks y_w first iff
    logit(q) > log(2 sigma(beta |delta_ref|)); on both sides of that line."""
    beta, dref = 2.5, np.array([-6.0, -0.2, -1.0])
    line = np.log(2 / (1 + np.exp(-beta * -dref)))
    for eps, expected in ((0.05, True), (-0.05, False)):
        q = 1 / (1 + np.exp(-(line + eps)))
        got = minimiser_reaches("cpo_clip_bt", beta, {"margin": 0.0}, q, dref, 0.0)
        assert (got == expected).all(), (eps, got)


# ----------------------------------------------------------------------------------------------
# The seed budget's power rule


def test_look_schedules_double_or_step_and_reject_anything_else():
    assert look_sizes(3, 3, 12) == [3, 6, 12] and n_looks(3, 3, 12) == 3
    assert look_sizes(3, 3, 12, "step") == [3, 6, 9, 12] and look_sizes(3, 3, 10) == [3, 6, 10]
    assert look_sizes(5, 3, 11) == [5, 10, 11] and look_sizes(2, 2, 6) == [2, 4, 6]
    with pytest.raises(ValueError, match="look schedule"):
        look_sizes(3, 3, 12, "triple")
    with pytest.raises(ValueError, match="look_schedule"):
        LMConfig(look_schedule="triple")


def test_decision_power_matches_a_simulation_of_the_final_look():
    # Normal seed-level values, sd 0.05, true mean 0.03 above a bound: the fraction of draws whose interval over
    # 12 seeds (level 1 - 0.05/3) clears the bound against decision_power.
    rng = np.random.default_rng(0)
    sd, distance, n, k = 0.05, 0.03, 12, 3
    x = rng.normal(distance, sd, size=(20000, n))
    half = student_t.ppf(1 - 0.05 / (2 * k), n - 1) * x.std(axis=1, ddof=1) / math.sqrt(n)
    simulated = float(np.mean(x.mean(axis=1) - half > 0))
    assert decision_power(sd, distance, n, k) == pytest.approx(simulated, abs=0.03)
    assert decision_power(sd, 0.0, n, k) < 0.01 and decision_power(sd, 1.0, n, k) > 0.999
    assert decision_power(sd, distance, 1, 1) == 0.0


def test_the_default_budget_is_the_power_rule_on_the_pilot_capped_by_time():
    rule = rule_budget()
    assert rule["wanted"] == {"fraction_in_U": 24, "amount": 12, "shortfall": 96}
    assert LMConfig().max_seeds == rule["budget"] == BUDGET_CAP == 12 and LMConfig().look_schedule == "double"
    # at the budget: the amounts reach the power target at half their margin, the other families do not
    assert rule["power"]["amount"] >= POWER_TARGET > rule["power"]["fraction_in_U"] > rule["power"]["shortfall"]
    # the rule is the smallest schedule size that reaches the target: one look less does not
    sd = PILOT["amount"][0]
    assert decision_power(sd, DESIGN.tol_frac_in_U / 2, 6, 2) < POWER_TARGET
    assert power_budget(sd, DESIGN.tol_frac_in_U / 2, 3, cap=6) is None


def test_pilot_sds_pool_within_a_family():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "pilot_sd.py"
    spec = importlib.util.spec_from_file_location("pilot_sd", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    comp = (lambda name, q, v: {"name": name, "quantity": q, "values": v})
    report = {"claims": [{"methods": [{"evidence": {"comparisons": {"a": [
        comp("x", "obs_minus_pred_frac_in_U", [0.0, 0.2]), comp("y", "obs_minus_pred_frac_in_U", [1.0, 1.0, 1.3]),
        comp("z", "final_loss", [0.1, 0.9]), comp("w", "shortfall_vs_one", [0.5])]}}},
        {"evidence": {"comparisons": {"b": [comp("x", "obs_minus_pred_frac_in_U", [0.0, 0.2])]}}}]}]}
    sds = mod.pooled_sds([report])
    # x counted once: ss 0.02 + 0.06 over df 1 + 2
    assert sds == {"amount": (pytest.approx(math.sqrt(0.08 / 3)), 3, 2)}


def test_confirm_preset_is_the_default_stage_with_the_uncapped_rule_budget():
    """--lm-config confirm: only max_seeds differs from the default preset, and it is the power rule's own budget
    without the time cap (96 with the pilot's sds: the shortfall family asks the most), so every family reaches
    POWER_TARGET at half its margin there, which the capped default budget does not."""
    import dataclasses

    default, confirm = LMConfig(), load_config("confirm")
    diff = {f.name for f in dataclasses.fields(LMConfig) if getattr(default, f.name) != getattr(confirm, f.name)}
    assert diff == {"max_seeds"}
    rule = rule_budget(len(default.seeds), cap=None)
    assert confirm.max_seeds == rule["budget"] == max(rule["wanted"].values()) == 96
    assert min(rule["power"].values()) >= POWER_TARGET
    assert min(family_power(default.max_seeds, len(default.seeds)).values()) < POWER_TARGET
    assert look_sizes(3, 1, confirm.max_seeds) == [3, 6, 12, 24, 48, 96]


@pytest.mark.parametrize("schedule, expected", [("double", [5, 10, 11]), ("step", [5, 8, 11])])
def test_every_reader_of_the_look_plan_follows_the_config(schedule, expected, monkeypatch):
    """5 first seeds, seed step 3, budget 11 (the map preset's), either schedule: config_looks, the LM claims' report
    field (claims._evidence_common), lm-kernel-prediction's looks and the atlas's LM column read one plan. A seed count
    equal to the step (the default preset's 3 and 3) cannot tell those two arguments apart: a swap of them survived
    mutation (the report said [3, 6, 11] for the map preset); and the atlas's column read "double" whatever the config
    said (here, under "step": [5, 10, 11] instead of [5, 8, 11])."""
    from types import SimpleNamespace

    from toy_lm import atlas_lm, claims, kernel_claim
    from toy_lm.design import config_looks

    cfg = load_config("map").replace(look_schedule=schedule)
    assert len(cfg.seeds) == 5 and cfg.seed_step == 3 and cfg.max_seeds == 11
    assert config_looks(cfg) == expected
    stub = SimpleNamespace(cfg=cfg, planned_seeds=list(range(11)), looks=[], device="cpu", threads=1, seconds=0.0,
                           seconds_training=0.0, seconds_prediction=0.0, runs=[], regimes={}, time_in_U_law={})
    assert claims._evidence_common(stub)["looks"]["seeds_per_look"] == expected
    assert kernel_claim.kernel_looks(cfg) == (expected, len(expected))

    class Stop(Exception):
        pass

    seen = []

    def spy(c):
        seen.append(config_looks(c))
        return seen[-1]

    def no_training(*args, **kwargs):  # the plan is made before the first training: stop there
        raise Stop

    monkeypatch.setattr(atlas_lm, "config_looks", spy)
    monkeypatch.setattr(atlas_lm, "train_reference_batched", no_training)
    with pytest.raises(Stop):
        atlas_lm.run_atlas_lm(["sigmoid"], cfg=cfg, progress=False)
    assert seen == [expected]


def test_a_single_first_seed_is_a_valid_first_look():
    """look_sizes accepts n_initial = 1 (LMConfig allows one seed): doubling 1, 2, 4; stepping by 2 to 5 gives
    1, 3, 5; a budget of 1 is one look; a config of one seed and budget 4 plans 1, 2, 4; 0 seeds is refused.
    A first-look minimum of 2 (a survivor of mutation) refused every one-seed config with "needs at least one
    seed, got 1"."""
    from toy_lm.design import config_looks, look_sizes

    assert look_sizes(1, 1, 4, "double") == [1, 2, 4]
    assert look_sizes(1, 2, 5, "step") == [1, 3, 5]
    assert look_sizes(1, 1, 1, "double") == [1]
    assert config_looks(LMConfig(seeds=(0,), max_seeds=4)) == [1, 2, 4]
    with pytest.raises(ValueError, match="at least one seed"):
        look_sizes(0, 1, 4, "double")


def test_bt_ceiling_at_a_positive_margin_is_the_tabular_derivative_test():
    """With margin m > 0 (LMConfig.margin, the certification level) the closed form asks delta* >= m: it must agree
    with the tabular derivative test at delta = m (an independent writing) on random pairs, and by hand: cpo_clip_bt
    with q = 1 (labels all y_w) reaches any margin, q = 0 none. Dropping m from the forward term disagreed at 5 to 18
    of 200 pairs for m = 0.5, 1 (a survivor of mutation)."""
    from toy_lm.tabular import tabular_minimiser_reaches

    rng = np.random.default_rng(0)
    for m in (0.5, 1.0):
        cfg = LMConfig(margin=m)
        for name in ("cpo_clip_bt", "cpo_smooth_bt"):
            params = cfg.loss_params(name)
            beta = rng.choice([0.5, 2.5], 200)
            dref = rng.uniform(-8, 8, 200)
            q = rng.integers(0, 17, 200) / 16
            for i in range(200):
                closed = bool(minimiser_reaches(name, float(beta[i]), params, q[i:i + 1], dref[i:i + 1], m)[0])
                tab = bool(tabular_minimiser_reaches(name, float(beta[i]), params, q[i:i + 1], np.array([-20.0]),
                                                     np.array([-20.0 - dref[i]]), m)[0])
                assert closed == tab, (m, name, beta[i], dref[i], q[i])


def test_family_power_default_reads_the_documented_powers_at_12_seeds():
    """family_power(12) with its default first look (3 seeds) gives the powers the design docstring states for
    12 seeds: amount 0.96, fraction in U 0.72, shortfall 0.19 (within 0.005 of the printed rounding). A default of
    1.5 (four looks: 0.949, 0.668, 0.163) changed no call site, all of which pass n_initial (a survivor of
    mutation)."""
    p = family_power(12)
    assert p["amount"] == pytest.approx(0.96, abs=0.005)
    assert p["fraction_in_U"] == pytest.approx(0.72, abs=0.005)
    assert p["shortfall"] == pytest.approx(0.19, abs=0.005)
