"""Both LM checks on a tiny configuration: one shared training, the evidence the issue asks for, figures."""

import json
import math
from pathlib import Path

import pytest

from dpo_rlhf_checks.result import VERDICTS, CheckContext
from toy_lm import stage as stage_mod
from toy_lm.claims import check_lm_cpo_fix, check_lm_dpo_failure

KEYS = {"predicted_frac_in_U", "observed_frac_in_U", "agreement", "certified_fraction", "heldout_ranking_accuracy",
        "seeds"}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm")
    cfg = tmp / "tiny.json"
    cfg.write_text(json.dumps({"n_train_prompts": 6, "n_heldout_prompts": 4, "n_embd": 16, "sft_steps": 30,
                               "steps": 6, "tabular_steps": 50, "heldout_every": 3}))
    ctx = CheckContext(seed=0, out_dir=tmp / "out", lm_config=str(cfg), device="cpu")
    calls = []
    original = stage_mod.run_stage

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    stage_mod.run_stage = counting
    try:
        out = check_lm_dpo_failure(ctx), check_lm_cpo_fix(ctx)
    finally:
        stage_mod.run_stage = original
    return out, calls, ctx


def test_training_runs_once_and_is_shared(results):
    (a, b), calls, _ = results
    assert len(calls) == 1
    assert a.evidence["methods"] == b.evidence["methods"]


def test_evidence_per_method_has_the_required_numbers(results):
    (a, b), _, _ = results
    for res in (a, b):
        assert res.verdict in VERDICTS[:3]
        methods = res.evidence["methods"]
        assert set(methods) == {"dpo", "dpo_bt", "cpo_eq17", "cpo_clip", "cpo_smooth", "cpo_easy", "ipo", "dpop",
                                "cpo_clip_bt", "cpo_smooth_bt"}
        for name, m in methods.items():
            assert KEYS <= set(m), name
            assert m["seeds"] == [0, 1, 2]
            for key in KEYS - {"seeds"}:
                assert 0.0 <= m[key] <= 1.0, (name, key)
            assert m["spread"]["agreement"]["min"] <= m["agreement"] <= m["spread"]["agreement"]["max"]
        assert methods["cpo_easy"]["delta"] == "per-token mean" and methods["dpo"]["delta"] == "summed"
        assert res.evidence["config"]["beta"] == 1.0 and res.evidence["config"]["n_embd"] == 16
        # No certificate for the losses without a target form.
        assert methods["ipo"]["certified_fraction"] == 0.0 and methods["dpop"]["certified_fraction"] == 0.0


def test_verdicts_follow_the_recorded_tests(results):
    (a, b), _, _ = results
    t = a.evidence["tests"]
    literal = all(all(v.values()) for v in t.values())
    assert (a.verdict == "holds") == literal
    if a.verdict != "holds":
        assert a.counterexample and "failing_tests" in a.counterexample
    tb = b.evidence["tests"]
    ok = bool(tb["carriers"]) and all(tb["per_variant"][c]["ok"] for c in tb["carriers"] + tb["bt_carriers"])
    assert (b.verdict == "holds") == ok
    assert tb["bt_carriers"] == ["cpo_clip_bt", "cpo_smooth_bt"]
    if b.verdict != "holds":
        assert b.counterexample["per_variant"] == tb["per_variant"]
    # cpo_clip (target max(delta_ref, 0)) and cpo_smooth (target > gamma > 0) always carry a certificate of delta > 0.
    assert {"cpo_clip", "cpo_smooth"} <= set(tb["carriers"]) and "cpo_easy" not in tb["carriers"]


def test_figures_are_written(results):
    (a, _), _, ctx = results
    names = {Path(p).name for p in a.figures}
    for stem in ("lm_delta_trajectories", "lm_predicted_vs_observed", "lm_loss_vs_aligned", "lm_chosen_logp"):
        assert {f"{stem}.pdf", f"{stem}.png"} <= names
    assert all(Path(p).stat().st_size > 1000 for p in a.figures)
    assert math.isfinite(a.evidence["stage_seconds"])
    import numpy as np

    records = np.load(Path(ctx.out_dir) / "lm_records.npz")
    delta = records["seed0/dpo_bt/delta_sum"]
    assert delta.shape == (7, 6)  # steps + 1 recorded steps, 6 train pairs
    np.testing.assert_allclose(delta[0], records["seed0/delta_ref"], atol=1e-5)  # training starts at the reference
