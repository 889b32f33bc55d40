"""The LM claims' methods on a tiny configuration: one shared training, scientific outcomes, a planted bug."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dpo_rlhf_checks.result import CheckContext, MethodResult
from toy_lm import claims, stage as stage_mod

TINY = {"n_train_prompts": 12, "n_heldout_prompts": 4, "n_embd": 16, "sft_steps": 150, "steps": 30, "seeds": [0, 1],
        "heldout_every": 10, "methods": ["dpo", "dpo_bt", "cpo_clip", "cpo_clip_bt", "cpo_easy"]}
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

    stage_mod.run_stage = counting
    try:
        out = [f(ctx) for f in METHOD_FUNCS]
    finally:
        stage_mod.run_stage = original
    return out, calls, ctx, stage_mod.get_stage(ctx)


def test_the_stage_trains_once_for_all_four_methods(results):
    out, calls, _, _ = results
    assert len(calls) == 1
    assert all(isinstance(r, MethodResult) for r in out)
    assert all(r.evidence["regimes"] == out[0].evidence["regimes"] for r in out)


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
        assert {"fitted_slope", "stderr", "theory_slope", "n_pairs", "n_censored"} <= set(law)
        assert law["n_pairs"] + law["n_censored"] > 0
    assert ev["time_in_U_law"]["sgd"]["theory_slope"] == pytest.approx(1.0, abs=0.25)
    # Each verdict states the number of genuinely compared cells.
    for r in out:
        assert "compared" in r.summary and r.evidence["n_compared"] <= r.evidence["n_cells"]


def test_verdicts_follow_the_recorded_tests(results):
    out, *_ = results
    train = out[0]
    assert train.literal == all(train.evidence["tests"].values())
    comparison = out[4]
    assert comparison.literal == all(comparison.evidence["tests"].values())
    fix = out[2]
    rows = fix.evidence["tests"]["per_cell"]
    assert fix.literal == (bool(rows) and all(r["ok"] for r in rows))
    assert fix.evidence["tests"]["carriers"] == ["cpo_clip"]  # cpo_easy's target can fall below 0
    for r in out:
        assert (r.counterexample is None) == r.literal
        assert r.amended or not r.literal
        assert r.depends_on and all("." in d for d in r.depends_on)


def test_figures_and_records_are_written(results):
    out, _, ctx, _ = results
    names = {Path(p).name for p in out[0].figures}
    for stem in ("lm_regime_map", "lm_time_in_U_law", "lm_loss_vs_frac_in_U", "lm_delta_trajectories"):
        assert {f"{stem}.pdf", f"{stem}.png"} <= names
    assert all(Path(p).stat().st_size > 1000 for p in out[0].figures)
    records = np.load(Path(ctx.out_dir) / "lm_records.npz")
    delta = records["seed0/b2.5/sgd/dpo_bt/delta_sum"]
    assert delta.shape == (31, 12)  # steps + 1 recorded steps, 12 train pairs
    np.testing.assert_allclose(delta[0], records["seed0/delta_ref"], atol=1e-4)  # training starts at the reference


def test_a_planted_bug_in_cpo_clip_is_caught(tmp_path, monkeypatch):
    # Mutation: cpo_clip silently trains with DPO's loss. The cpo-fix training method must then fail.
    from toy_lm import train

    original = train.pair_losses

    def buggy(method, beta, params, q, pc, pr, rc, rr):
        if method == "cpo_clip":
            return original("dpo", beta, {}, q, pc, pr, rc, rr)
        return original(method, beta, params, q, pc, pr, rc, rr)

    monkeypatch.setattr(train, "pair_losses", buggy)
    ctx = _ctx(tmp_path, "mutant", {**TINY, "betas": [2.5], "optimizers": ["sgd"]})
    res = claims.lm_cpo_fix_training(ctx)
    assert not res.literal
    assert any(r["method"] == "cpo_clip" for r in res.counterexample["cells_not_fixed"])


def test_without_the_bug_cpo_clip_fixes_the_same_cell(results):
    out, *_ = results
    rows = [r for r in out[2].evidence["tests"]["per_cell"] if r["method"] == "cpo_clip"]
    assert rows and all(r["ok"] for r in rows)
