"""The TRL integration on a tiny local GPT-2: the library's losses train inside TRL's DPOTrainer, the new
metrics are logged and obey the exact accuracy split, DPO's loss equals TRL's own on the same batch,
and ``score`` reproduces TRL's reference log-probabilities."""

import math

import numpy as np
import pytest

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")
import torch  # noqa: E402

from dpo_rlhf_checks import losses as L  # noqa: E402
from dpo_rlhf_checks import score as S  # noqa: E402
from dpo_rlhf_checks.integrations import tiny  # noqa: E402
from dpo_rlhf_checks.integrations.trl import (  # noqa: E402
    LibraryLossDPOTrainer, ScoreAuditCallback, batch_diagnostics, resolve_loss)

N = 20
BETA = 0.5
NEW_KEYS = ("diagnostics/policy_ranking_accuracy", "diagnostics/implicit_reward_accuracy",
            "diagnostics/frac_in_undesirable", "diagnostics/frac_right_below_reference",
            "diagnostics/reference_ranking_accuracy", "diagnostics/certified_fraction",
            "diagnostics/frac_chosen_logp_fell", "frac_in_U", "frac_ref_logratios_below_gamma")


def _config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=N,
                per_device_eval_batch_size=N, logging_steps=1, learning_rate=1e-2, beta=BETA, report_to="none",
                save_strategy="no", use_cpu=True, seed=0, max_length=64, disable_tqdm=True, dataset_num_proc=None)
    base.update(kw)
    return trl.DPOConfig(**base)


def _model_and_data(seed=0, conversational=False):
    model, tok = tiny.build_causal_lm(seed=seed)
    ref, _ = tiny.build_causal_lm(seed=seed)
    rows = tiny.preference_rows(N, seed=3, conversational=conversational)
    return model, ref, tok, rows


def _train(tmp_path, loss_name, loss_params=None, **kw):
    model, ref, tok, rows = _model_and_data()
    trainer = LibraryLossDPOTrainer(model=model, ref_model=ref, args=_config(tmp_path, **kw),
                                    train_dataset=datasets.Dataset.from_list(rows), processing_class=tok,
                                    loss_name=loss_name, loss_params=loss_params)
    trainer.train()
    return trainer, rows, tok, ref


def _step_logs(trainer):
    return [h for h in trainer.state.log_history if "loss" in h and "step" in h]


@pytest.mark.parametrize("loss_name, params", [("dpo", None), ("cpo_clip", {"margin": 0.0}), ("hypo", None)])
def test_two_steps_log_the_new_metrics(tmp_path, loss_name, params):
    trainer, rows, tok, ref = _train(tmp_path, loss_name, params)
    logs = _step_logs(trainer)
    assert [h["step"] for h in logs] == [1, 2]
    for h in logs:
        for k in NEW_KEYS:
            assert 0.0 <= h[k] <= 1.0, k
        assert h["frac_in_U"] == h["diagnostics/frac_in_undesirable"]
        # the exact split, per batch and so for the logged averages
        assert h["diagnostics/implicit_reward_accuracy"] - h["diagnostics/policy_ranking_accuracy"] == pytest.approx(
            h["diagnostics/frac_in_undesirable"] - h["diagnostics/frac_right_below_reference"], abs=1e-12)
        assert h["rewards/accuracies"] == pytest.approx(h["diagnostics/implicit_reward_accuracy"], abs=1e-6)
    # Step 1 sees the untrained policy (= the reference): its loss is the library loss at delta = delta_ref, from
    # log-probabilities that score computes independently of the trainer.
    res = S.score_pairs(ref, tok, rows, config=S.ScoreConfig(max_length=64), device=torch.device("cpu")).columns
    rc, rr = torch.tensor(res["ref_chosen_logps"]), torch.tensor(res["ref_rejected_logps"])
    name, p = resolve_loss(loss_name, params)
    expected = L.get_loss(name)(rc, rr, rc, rr, beta=BETA, **p).losses.mean().item()
    assert logs[0]["loss"] == pytest.approx(expected, abs=2e-4)
    first = logs[0]
    assert first["diagnostics/policy_ranking_accuracy"] == pytest.approx(first["diagnostics/reference_ranking_accuracy"])
    assert first["diagnostics/frac_in_undesirable"] == 0.0  # delta = delta_ref: nobody in U yet
    if name == "cpo_clip":
        # the clip target max(delta_ref, 0) lifts every pair with delta_ref < 0 above log 2
        frac_neg = float(np.mean(res["ref_chosen_logps"] - res["ref_rejected_logps"] < 0))
        assert frac_neg > 0
        assert logs[0]["loss"] > math.log(2) - 1e-4
        assert first["frac_ref_logratios_below_gamma"] == pytest.approx(frac_neg)
    else:
        assert logs[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert logs[1]["loss"] != pytest.approx(logs[0]["loss"], abs=1e-6)  # it trained


def test_dpo_loss_equals_trls_own_on_the_same_batch(tmp_path):
    model, ref, tok, rows = _model_and_data()
    # a policy that differs from the reference, so the loss is not log 2 everywhere
    model2, _ = tiny.build_causal_lm(seed=5)
    ds = datasets.Dataset.from_list(rows)
    ours = LibraryLossDPOTrainer(model=model2, ref_model=ref, args=_config(tmp_path), train_dataset=ds,
                                 processing_class=tok, loss_name="dpo")
    theirs = trl.DPOTrainer(model=ours.model, ref_model=ours.ref_model, args=_config(tmp_path), train_dataset=ds,
                            processing_class=tok)
    batch = next(iter(theirs.get_train_dataloader()))
    with torch.no_grad():
        a = ours.compute_loss(ours.model, batch).item()
        b = theirs.compute_loss(theirs.model, batch).item()
    assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
    assert abs(a - math.log(2)) > 1e-3
    for k in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected",
              "rewards/accuracies"):
        mode = "train" if ours.model.training else "eval"  # both trainers log under the same mode
        assert ours._metrics[mode][k][-1] == pytest.approx(theirs._metrics[mode][k][-1], rel=1e-5, abs=1e-6), k


@pytest.mark.parametrize("conversational", [False, True])
def test_score_matches_trls_reference_logps(tmp_path, conversational):
    model, ref, tok, rows = _model_and_data(conversational=conversational)
    rows[0] = dict(rows[0], chosen="s " + rows[0]["chosen"].strip()) if not conversational else rows[0]  # merges
    # bf16=False: DPOConfig's default bf16=True runs TRL's reference pass under bf16 autocast (~1e-3 nats off
    # float32 on this model); score runs the model in its own dtype.
    trainer = trl.DPOTrainer(model=model, ref_model=ref, args=_config(tmp_path, per_device_train_batch_size=7,
                                                                      bf16=False),
                             train_dataset=datasets.Dataset.from_list(rows), processing_class=tok)
    ids = trainer.train_dataset
    ours = S.score_pairs(ref, tok, rows, config=S.ScoreConfig(max_length=64), device=torch.device("cpu"))
    for i, r in enumerate(ids):
        pair = S.tokenize_pair(tok, rows[i])
        assert (pair.prompt_ids, pair.chosen_ids, pair.rejected_ids) == (r["prompt_ids"], r["chosen_ids"],
                                                                         r["rejected_ids"])
    collator = trainer.data_collator
    batch = collator([ids[i] for i in range(N)])
    with torch.no_grad():
        rc, rr = trainer.compute_ref_log_probs(trainer.ref_model, batch)
    np.testing.assert_allclose(ours.columns["ref_chosen_logps"], rc.double().numpy(), atol=1e-4)
    np.testing.assert_allclose(ours.columns["ref_rejected_logps"], rr.double().numpy(), atol=1e-4)
    np.testing.assert_array_equal(ours.columns["chosen_length"], batch["completion_mask"][:N].sum(1).numpy())


def test_eval_callback_scores_and_audits(tmp_path):
    model, ref, tok, rows = _model_and_data()
    ds = datasets.Dataset.from_list(rows)
    trainer = LibraryLossDPOTrainer(model=model, ref_model=ref, args=_config(tmp_path, eval_strategy="steps",
                                                                             eval_steps=2),
                                    train_dataset=ds, eval_dataset=ds, processing_class=tok, loss_name="cpo_smooth",
                                    loss_params={"gamma": 0.5, "tau": 2.0, "alpha": 1.0})
    cb = ScoreAuditCallback(trainer)
    trainer.add_callback(cb)
    trainer.train()
    assert cb.last_audit is not None and cb.last_audit["step"] == 2
    assert cb.last_audit["n_pairs"] == N
    assert (tmp_path / "out" / "audit-step2.json").exists()
    evals = [h for h in trainer.state.log_history if "eval_audit/policy_ranking_accuracy" in h]
    assert evals and 0 <= evals[-1]["eval_audit/policy_ranking_accuracy"] <= 1
    # the callback's policy accuracy agrees with the trainer's own eval metric on the same set and weights
    eval_logs = [h for h in trainer.state.log_history if "eval_diagnostics/policy_ranking_accuracy" in h]
    assert eval_logs[-1]["eval_diagnostics/policy_ranking_accuracy"] == pytest.approx(
        evals[-1]["eval_audit/policy_ranking_accuracy"])


def test_batch_diagnostics_split_is_exact_with_ties():
    rng = np.random.default_rng(0)
    d = torch.tensor(rng.integers(-3, 4, 500).astype(float))
    dref = torch.tensor(rng.integers(-3, 4, 500).astype(float))
    rr = torch.full((500,), -10.0)
    pr = torch.full((500,), -10.0)
    out = batch_diagnostics(pr + d, pr, rr + dref, rr, torch.ones(500), loss_name="dpo", params={}, beta=1.0)
    assert out["diagnostics/implicit_reward_accuracy"] - out["diagnostics/policy_ranking_accuracy"] == pytest.approx(
        out["diagnostics/frac_in_undesirable"] - out["diagnostics/frac_right_below_reference"], abs=1e-12)
    assert out["diagnostics/frac_in_undesirable"] == pytest.approx(float(((dref < d) & (d < 0)).double().mean()))


def test_bad_options_are_errors(tmp_path):
    model, ref, tok, rows = _model_and_data()
    ds = datasets.Dataset.from_list(rows)
    with pytest.raises(ValueError, match="unknown loss 'cpo'"):
        LibraryLossDPOTrainer(model=model, ref_model=ref, args=_config(tmp_path), train_dataset=ds,
                              processing_class=tok, loss_name="cpo")
    with pytest.raises(ValueError, match="missing"):
        LibraryLossDPOTrainer(model=model, ref_model=ref, args=_config(tmp_path), train_dataset=ds,
                              processing_class=tok, loss_name="cpo_smooth")
    with pytest.raises(ValueError, match="logps='mean'"):
        LibraryLossDPOTrainer(model=model, ref_model=ref, args=_config(tmp_path), train_dataset=ds,
                              processing_class=tok, loss_name="cpo_easy", loss_params={"gamma": 0.5})
    with pytest.raises(ValueError, match="loss_type"):
        LibraryLossDPOTrainer(model=model, ref_model=ref, args=_config(tmp_path, loss_type=["ipo"]), train_dataset=ds,
                              processing_class=tok)


def test_readme_trl_snippet_runs_on_the_tiny_model(tmp_path, monkeypatch):
    """README.md's TRL example, as written, with the hub loaders pointed at local tiny stand-ins."""
    import re
    from pathlib import Path

    import transformers

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "LibraryLossDPOTrainer" in b]
    assert len(blocks) == 1
    _, tok = tiny.build_causal_lm(tmp_path / "tiny", seed=0)
    load = transformers.AutoModelForCausalLM.from_pretrained  # a fresh local copy per call (TRL loads the reference)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: load(tmp_path / "tiny"))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tok)
    local = datasets.DatasetDict({"train": datasets.Dataset.from_list(tiny.preference_rows(16, seed=1)),
                                  "test": datasets.Dataset.from_list(tiny.preference_rows(500, seed=2))})
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: local)
    monkeypatch.chdir(tmp_path)
    real_config = trl.DPOConfig  # the snippet targets a GPU; here: the CPU (as its comment says), 3 steps
    monkeypatch.setattr(trl, "DPOConfig", lambda **k: real_config(**k, use_cpu=True, max_steps=3, report_to="none"))
    namespace: dict = {}
    exec(compile(blocks[0], "README.md TRL example", "exec"), namespace)  # the snippet as documented
    history = namespace["trainer"].state.log_history  # 3 steps < logging_steps: the final evaluation logs
    evals = [h for h in history if "eval_diagnostics/policy_ranking_accuracy" in h]
    assert evals and 0 <= evals[-1]["eval_frac_in_U"] <= 1
    audits = [h for h in history if "eval_audit/policy_ranking_accuracy" in h]
    # the trainer averages per-batch means (500 = 62 x 8 + 4 pairs), the callback counts all 500 pairs at once
    assert audits[-1]["eval_audit/policy_ranking_accuracy"] == pytest.approx(
        evals[-1]["eval_diagnostics/policy_ranking_accuracy"], abs=0.01)


def test_precomputed_reference_logps_give_the_same_first_loss(tmp_path):
    """precompute_ref_log_probs=True: the reference comes from TRL's precomputed columns (no ref model kept)."""
    model, _, tok, rows = _model_and_data()
    ds = datasets.Dataset.from_list(rows)
    trainer = LibraryLossDPOTrainer(model=model, args=_config(tmp_path, precompute_ref_log_probs=True, bf16=False,
                                                              eval_strategy="steps", eval_steps=2),
                                    train_dataset=ds, eval_dataset=ds, processing_class=tok, loss_name="cpo_clip")
    assert trainer.ref_model is None
    cb = ScoreAuditCallback(trainer)
    trainer.add_callback(cb)
    trainer.train()
    first = _step_logs(trainer)[0]
    ref, _ = tiny.build_causal_lm(seed=0)
    res = S.score_pairs(ref, tok, rows, config=S.ScoreConfig(max_length=64), device=torch.device("cpu")).columns
    rc, rr = torch.tensor(res["ref_chosen_logps"]), torch.tensor(res["ref_rejected_logps"])
    assert first["loss"] == pytest.approx(L.cpo_clip_loss(rc, rr, rc, rr, beta=BETA).losses.mean().item(), abs=2e-4)
    assert cb.last_audit["reference_ranking_accuracy"] == pytest.approx(float(np.mean(res["ref_chosen_logps"] >=
                                                                                      res["ref_rejected_logps"])))
