"""The LM claims' methods on a tiny configuration: one shared training, scientific outcomes, decisions that follow
the pre-registered comparisons, amended statements from the registry, planted bugs."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dpo_rlhf_checks.result import CheckContext, MethodResult
from toy_lm import claims, stage as stage_mod

TINY = {"n_train_prompts": 12, "n_heldout_prompts": 4, "n_embd": 16, "sft_steps": 150, "steps": 30, "seeds": [0, 1],
        "max_seeds": 4, "seed_step": 2, "heldout_every": 10,
        "methods": ["dpo", "dpo_bt", "cpo_clip", "cpo_clip_bt", "cpo_easy"]}
REGIME_KEYS = {"beta", "beta_delta_ref_scale", "optimizer", "labels", "method", "seeds", "predicted_frac_in_U",
               "observed_frac_in_U", "mean_final_loss", "compared", "reason_not_compared", "agreement",
               "frac_loss_below_log2", "heldout_ranking_accuracy", "time_in_U_n_censored"}
METHOD_FUNCS = (claims.lm_dpo_failure_training, claims.lm_dpo_failure_tabular, claims.lm_cpo_fix_training,
                claims.lm_cpo_fix_tabular, claims.lm_dpo_failure_comparison)


def _ctx(tmp, name, data):
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(data))
    return CheckContext(seed=0, out_dir=tmp / f"out_{name}", lm_config=str(path), device="cpu")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    ctx = _ctx(tmp_path_factory.mktemp("lm"), "tiny", TINY)
    calls = []
    original = stage_mod.run_stage

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    import figures.lm as figures_lm
    from dpo_rlhf_checks import deferred

    draws = []
    original_figures = figures_lm.lm_figures

    def counting_figures(*args, **kwargs):
        draws.append(1)
        return original_figures(*args, **kwargs)

    stage_mod.run_stage = counting
    figures_lm.lm_figures = counting_figures
    try:
        out = [f(ctx) for f in METHOD_FUNCS]
        assert not draws and deferred.pending() == 1  # promised by every method, drawn by none of them
        deferred.flush()  # what the runner does after a claim's last method
        FIGURE_DRAWS.append(len(draws))
    finally:
        stage_mod.run_stage = original
        figures_lm.lm_figures = original_figures
    return out, calls, ctx, stage_mod.get_stage(ctx)


FIGURE_DRAWS = []


def test_the_stage_trains_once_for_all_four_methods(results):
    out, calls, _, _ = results
    assert len(calls) == 1  # later looks extend the one stage (toy_lm.stage.extend); nothing is trained twice
    assert all(isinstance(r, MethodResult) for r in out)
    seeds = [len(r.evidence["reference"]) for r in out]
    assert seeds == sorted(seeds) and seeds[0] >= len(TINY["seeds"])


def test_slow_regime_sgd_dpo_stays_in_U_at_low_loss_and_cpo_clip_does_not(results):
    *_, stage = results
    dpo = stage.regime(2.5, "sgd", "dpo")
    clip = stage.regime(2.5, "sgd", "cpo_clip")
    assert dpo["regime"] == "slow" and dpo["beta_delta_ref_scale"] >= stage_mod.SLOW_SCALE
    # The paper's failure, in real training: a quarter or more of the misranked pairs still in U ...
    assert dpo["misranked_in_U_at_end"] >= 0.25
    # ... at a loss far below log 2 (every pair's loss below log 2).
    assert dpo["mean_final_loss"] < 0.05 * math.log(2) and dpo["frac_loss_below_log2"] == 1.0
    # The clipped target max(delta_ref, 0) leaves nobody in U and ranks every pair right.
    assert clip["misranked_in_U_at_end"] == 0.0 and clip["frac_delta_ge_margin_worst_seed"] == 1.0
    # In the fast cell the same DPO leaves fewer misranked pairs in U than in the slow one.
    assert stage.regime(0.5, "sgd", "dpo")["misranked_in_U_at_end"] < dpo["misranked_in_U_at_end"]


def test_bt_labels_end_in_U_as_predicted(results):
    *_, stage = results
    for opt in ("sgd", "adam"):
        r = stage.regime(2.5, opt, "dpo_bt")
        assert r["compared"] and r["observed_frac_in_U"] >= 0.2
        assert abs(r["observed_frac_in_U"] - r["predicted_frac_in_U"]) <= 0.1


def test_regimes_and_law_have_the_required_keys_and_counts(results):
    out, *_ = results
    ev = out[0].evidence
    assert len(ev["regimes"]) == 2 * 2 * len(TINY["methods"])
    for r in ev["regimes"]:
        assert REGIME_KEYS <= set(r)
        assert (r["agreement"] is None) == (not r["compared"]) == (r["reason_not_compared"] is not None)
    assert {r["labels"] for r in ev["regimes"]} == {"ordered", "bt"}
    for opt in ("sgd", "adam"):
        law = ev["time_in_U_law"][opt]
        assert law["descriptive"] is True
        assert {"fitted_slope", "stderr", "theory_slope", "n_pairs", "n_censored", "n_theory_censored"} <= set(law)
        assert law["n_pairs"] > 0
    assert ev["time_in_U_law_role"].startswith("descriptive")
    assert ev["design"]["fix_margin"] == 0.05 and ev["looks"]["seeds_per_look"] == [2, 4]


def test_decisions_follow_the_recorded_comparisons(results):
    """literal / amended are the three-valued AND of the comparisons the docstrings name; a method is inconclusive
    exactly when what it must decide is undecided; an amended statement is the registry's text, verbatim."""
    from dpo_rlhf_checks.registry import get_claim
    from toy_lm.design import and3

    out, *_ = results
    parts = {0: (["fail"], ["fail"]), 1: (["predicted_slow_ordered", "predicted_fast_ordered", "predicted_bt"],
                                          ["predicted_slow_ordered", "predicted_bt"]),
             2: (["ordered", "bt_vs_one"], ["ordered", "bt_vs_ceiling"]),
             3: (["pred_ordered", "pred_bt_vs_one"], ["pred_ordered", "pred_bt_vs_ceiling"]),
             4: (["fail", "amount_ordered", "amount_bt"], ["fail", "amount_bt"])}
    claim_of = {0: "lm-dpo-failure", 1: "lm-dpo-failure", 4: "lm-dpo-failure", 2: "lm-cpo-fix", 3: "lm-cpo-fix"}
    for i, (lit_parts, amd_parts) in parts.items():
        r = out[i]
        comps = r.evidence["comparisons"]
        assert r.literal is and3(o["decided"] for p in lit_parts for o in comps[p])
        assert r.amended is and3(o["decided"] for p in amd_parts for o in comps[p])
        assert (r.inconclusive is not None) == (r.literal is None or (r.literal is False and r.amended is None))
        assert (r.counterexample is None) == (r.literal is not False)
        if r.amended_statement is not None:
            assert r.amended_statement == get_claim(claim_of[i]).amendment
        for p in comps.values():
            for o in p:
                lo, hi = o["interval"]
                assert o["decided"] is None or o["n_seeds"] >= 2
                if o["decided"] is True and o["test"] == "at_least":
                    assert lo > o["bound"]
                if o["decided"] is True and o["test"] == "at_most":
                    assert hi < o["bound"]
        assert r.depends_on and all("." in d for d in r.depends_on)


def test_the_time_in_U_law_decides_nothing(results):
    """c9d097b's simulation method required a positive SGD theory slope (true by construction); now nothing reads the
    law: planting negative slopes changes no method's booleans."""
    out, _, ctx, stage = results
    saved = stage.time_in_U_law
    try:
        stage.time_in_U_law = {o: {**v, "theory_slope": -1.0, "theory_slope_all_pairs": -1.0, "fitted_slope": -1.0}
                               for o, v in saved.items()}
        again = claims.lm_dpo_failure_tabular(ctx)
    finally:
        stage.time_in_U_law = saved
    assert (again.literal, again.amended, again.inconclusive) == (out[1].literal, out[1].amended, out[1].inconclusive)


def test_figures_and_records_are_written(results):
    out, _, ctx, _ = results
    assert FIGURE_DRAWS == [1]  # five methods, one drawing (it used to be one per method and look)
    assert all(r.figures == out[0].figures for r in out)
    names = {Path(p).name for p in out[0].figures}
    for stem in ("lm_regime_map", "lm_time_in_U_law", "lm_loss_vs_frac_in_U", "lm_delta_trajectories"):
        assert {f"{stem}.pdf", f"{stem}.png"} <= names
    assert all(Path(p).stat().st_size > 1000 for p in out[0].figures)
    records = np.load(Path(ctx.out_dir) / "lm_records.npz")
    delta = records["seed0/b2.5/sgd/dpo_bt/delta_sum"]
    assert delta.shape == (31, 12)  # steps + 1 recorded steps, 12 train pairs
    np.testing.assert_allclose(delta[0], records["seed0/delta_ref"], atol=1e-4)  # training starts at the reference


def test_a_planted_bug_in_cpo_clip_is_caught(tmp_path, monkeypatch):
    # Mutation: cpo_clip silently trains with DPO's loss. The cpo-fix training method must then decide its ordered
    # comparisons as failing.
    from toy_lm import train

    original = train.pair_losses

    def buggy(method, beta, params, q, pc, pr, rc, rr):
        if method == "cpo_clip":
            return original("dpo", beta, {}, q, pc, pr, rc, rr)
        return original(method, beta, params, q, pc, pr, rc, rr)

    monkeypatch.setattr(train, "pair_losses", buggy)
    ctx = _ctx(tmp_path, "mutant", {**TINY, "betas": [2.5], "optimizers": ["sgd"]})
    res = claims.lm_cpo_fix_training(ctx)
    (clip,) = [o for o in res.evidence["comparisons"]["ordered"] if o["cell"][2] == "cpo_clip"]
    assert clip["decided"] is False and res.literal is False
    assert any("cpo_clip" in line for line in res.counterexample["comparisons_that_fail"])


def test_without_the_bug_cpo_clip_fixes_the_slow_sgd_cell(results):
    *_, stage = results
    rows = stage.regime(2.5, "sgd", "cpo_clip")
    assert rows["frac_delta_ge_margin_worst_seed"] == 1.0
