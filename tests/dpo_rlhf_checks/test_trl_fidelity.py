"""Fidelity of ``LibraryLossDPOTrainer`` to TRL 1.16's own ``DPOTrainer`` on one batch (issue 20, section 1):
TRL's metrics under TRL's names, the per-token-mean variants under their own names, the MoE router loss,
and bf16-autocast gradients equal to TRL's (the same order of arithmetic)."""

import math

import pytest

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")
import torch  # noqa: E402

from dpo_rlhf_checks.integrations import tiny  # noqa: E402
from dpo_rlhf_checks.integrations.trl import LibraryLossDPOTrainer  # noqa: E402

N = 12
BETA = 0.5
TRL_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
            "logps/rejected", "entropy", "logits/chosen", "logits/rejected", "mean_token_accuracy", "num_tokens")


def _config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=N, logging_steps=1,
                learning_rate=1e-2, beta=BETA, report_to="none", save_strategy="no", use_cpu=True, seed=0,
                max_length=64, disable_tqdm=True, dataset_num_proc=None, bf16=False)
    base.update(kw)
    return trl.DPOConfig(**base)


def _pair_of_trainers(tmp_path, *, model=None, ref=None, tok=None, ours_kw=None, theirs_cfg=None, cfg=None):
    if model is None:
        model, tok = tiny.build_causal_lm(seed=5)
        ref, _ = tiny.build_causal_lm(seed=0)
    ds = datasets.Dataset.from_list(tiny.preference_rows(N, seed=3))
    ours = LibraryLossDPOTrainer(model=model, ref_model=ref, args=_config(tmp_path, **(cfg or {})), train_dataset=ds,
                                 processing_class=tok, **(ours_kw or {}))
    theirs = trl.DPOTrainer(model=ours.model, ref_model=ours.ref_model,
                            args=_config(tmp_path, **{**(cfg or {}), **(theirs_cfg or {})}), train_dataset=ds,
                            processing_class=tok)
    batch = next(iter(theirs.get_train_dataloader()))
    return ours, theirs, batch


def _last(trainer, key):
    return trainer._metrics["train"][key][-1]


def test_trl_metrics_are_logged_and_equal_trls(tmp_path):
    ours, theirs, batch = _pair_of_trainers(tmp_path, ours_kw={"loss_name": "dpo"})
    ours.model.train()
    with torch.no_grad():
        a = ours.compute_loss(ours.model, batch).item()
        b = theirs.compute_loss(theirs.model, batch).item()
    assert a == pytest.approx(b, rel=1e-6)
    for k in TRL_KEYS:
        assert _last(ours, k) == pytest.approx(_last(theirs, k), rel=1e-6, abs=1e-7), k
    assert 0 < _last(ours, "mean_token_accuracy") < 1 and _last(ours, "entropy") > 1  # not a constant


def test_mean_logps_keep_trls_names_for_trls_quantities(tmp_path):
    """logps='mean' trains TRL's sigmoid_norm; TRL's names hold TRL's (summed) quantities, the means their own."""
    ours, theirs, batch = _pair_of_trainers(tmp_path, ours_kw={"loss_name": "dpo", "logps": "mean"},
                                            theirs_cfg={"loss_type": ["sigmoid_norm"]})
    ours.model.train()
    with torch.no_grad():
        a = ours.compute_loss(ours.model, batch).item()
        b = theirs.compute_loss(theirs.model, batch).item()
    assert a == pytest.approx(b, rel=1e-5)
    for k in TRL_KEYS:
        assert _last(ours, k) == pytest.approx(_last(theirs, k), rel=1e-6, abs=1e-7), k
    # the per-token-mean variants, under their own names, from the means
    mask = batch["completion_mask"][:, 1:].sum(1).double()
    n = N
    assert _last(ours, "logps_per_token/chosen") == pytest.approx(
        _last(ours, "logps/chosen") / float(mask[:n].mean()), rel=0.5)  # order of magnitude: a mean, not a sum
    assert abs(_last(ours, "logps_per_token/chosen")) < 10 < abs(_last(ours, "logps/chosen"))
    for k in ("rewards_per_token/chosen", "rewards_per_token/rejected", "rewards_per_token/margins",
              "rewards_per_token/accuracies", "logps_per_token/rejected"):
        assert k in ours._metrics["train"], k


def _tiny_mixtral(seed, tok):
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(seed)
    cfg = MixtralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1, num_local_experts=4, num_experts_per_tok=2,
                        max_position_embeddings=256, router_aux_loss_coef=0.02, output_router_logits=False,
                        bos_token_id=1, eos_token_id=1)
    return MixtralForCausalLM(cfg).eval()


def test_moe_router_aux_loss_is_added_and_logged_as_trl_does(tmp_path):
    tok = tiny.build_tokenizer()
    model, ref = _tiny_mixtral(5, tok), _tiny_mixtral(0, tok)
    ours, theirs, batch = _pair_of_trainers(tmp_path, model=model, ref=ref, tok=tok, ours_kw={"loss_name": "dpo"})
    assert ours.aux_loss_enabled and ours.router_aux_loss_coef == pytest.approx(0.02)
    ours.model.train()
    with torch.no_grad():
        a = ours.compute_loss(ours.model, batch).item()
        b = theirs.compute_loss(theirs.model, batch).item()
    assert a == pytest.approx(b, rel=1e-6)
    aux = _last(ours, "aux_loss")
    assert aux == pytest.approx(_last(theirs, "aux_loss"), rel=1e-6)
    assert 0.02 * aux > 1e-3  # the term is not negligible: dropping it would fail the equality above


@pytest.mark.parametrize("loss_name", ["dpo", "sigmoid"])
def test_bf16_autocast_gradients_equal_trls(tmp_path, loss_name):
    """Under TRL's default bf16 autocast, one backward pass of ours and of TRL's on one batch: the same gradients.

    Long sequences (sums of ~100-300 token log-probs) and a policy near the reference, where the order of the
    subtractions decides the rounding: the library's order gave a 2.5e-3 relative gradient difference here ("dpo"),
    and pref_losses' softplus(-beta h) 8.4e-4 ("sigmoid" by TRL's name, now computed as TRL's -logsigmoid(beta h)).
    """
    model, tok = tiny.build_causal_lm(seed=5)
    ref, _ = tiny.build_causal_lm(seed=0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p, q in zip(model.parameters(), ref.parameters()):
            p.copy_(q + 0.01 * torch.randn(q.shape, generator=gen))
    ds = datasets.Dataset.from_list(tiny.preference_rows(8, seed=3, prompt_words=(20, 60), completion_words=(20, 120)))
    cfg = dict(per_device_train_batch_size=8, max_length=512, beta=0.1)
    ours = LibraryLossDPOTrainer(model=model, ref_model=ref, args=_config(tmp_path, **cfg), train_dataset=ds,
                                 processing_class=tok, loss_name=loss_name)
    theirs = trl.DPOTrainer(model=ours.model, ref_model=ours.ref_model, args=_config(tmp_path, **cfg),
                            train_dataset=ds, processing_class=tok)
    batch = next(iter(theirs.get_train_dataloader()))
    model.train()

    def grads(trainer):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = trainer.compute_loss(model, batch)
        loss.backward()
        return loss.item(), [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]

    la, ga = grads(ours)
    lb, gb = grads(theirs)
    assert la == lb
    assert len(ga) == len(gb) > 0
    worst = max(float((x - y).abs().max() / y.abs().max().clamp(min=1e-30)) for x, y in zip(ga, gb))
    assert worst == 0.0
    assert max(float(g.abs().max()) for g in gb) > 1e-6  # a gradient that is not zero


TOOL_TEMPLATE = ("{% if enable_thinking is defined and enable_thinking %}<|system|> why how <|end|> {% endif %}"
                 "{% if tools %}<|system|> {% for t in tools %}{{ t['name'] }} {% endfor %}<|end|> {% endif %}"
                 "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def test_per_row_tools_and_chat_template_kwargs_tokenize_as_trl(tmp_path):
    """Conversational rows with their own ``tools`` (a list, or a JSON string of one) and ``chat_template_kwargs``:
    score's token ids equal TRL's, row by row, and differ from ignoring the columns."""
    import json

    from dpo_rlhf_checks import score as S

    tok = tiny.build_tokenizer()
    tok.chat_template = TOOL_TEMPLATE
    model, _ = tiny.build_causal_lm(seed=0, tokenizer=tok)
    ref, _ = tiny.build_causal_lm(seed=1, tokenizer=tok)
    rows = tiny.preference_rows(N, seed=4, conversational=True)
    for i, r in enumerate(rows):
        r["tools"] = json.dumps([{"name": "cat"}, {"name": "dog"}][: i % 3]) if i % 3 else None
        r["chat_template_kwargs"] = {"enable_thinking": i % 2 == 0}
    trainer = trl.DPOTrainer(model=model, ref_model=ref, args=_config(tmp_path), processing_class=tok,
                             train_dataset=datasets.Dataset.from_list(rows))
    changed = 0
    for r, t in zip(rows, trainer.train_dataset):
        pair = S.tokenize_pair(tok, r)
        assert (pair.prompt_ids, pair.chosen_ids, pair.rejected_ids) == (t["prompt_ids"], t["chosen_ids"],
                                                                         t["rejected_ids"])
        bare = S.tokenize_pair(tok, {k: r[k] for k in ("prompt", "chosen", "rejected")})
        changed += bare.prompt_ids != pair.prompt_ids
    assert changed >= N // 2  # the columns matter on these rows
    # and through the command: the columns reach the scores (a datasets folder keeps them)
    path = tiny.write_jsonl(tmp_path / "tools.jsonl", rows)
    loaded, _ = S.load_rows(path)
    res = S.score_pairs(ref, tok, loaded, config=S.ScoreConfig(max_length=64), device=torch.device("cpu"))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(N)])
    with torch.no_grad():
        rc, rr = trainer.compute_ref_log_probs(trainer.ref_model, batch)
    assert res.columns["ref_chosen_logps"] == pytest.approx(rc.double().numpy(), abs=1e-4)
    assert res.columns["ref_rejected_logps"] == pytest.approx(rr.double().numpy(), abs=1e-4)


def test_bad_template_columns_are_errors_naming_the_row(tmp_path):
    from dpo_rlhf_checks import score as S

    tok = tiny.build_tokenizer()
    row = dict(tiny.preference_rows(1, conversational=True)[0], tools="[not json")
    with pytest.raises(S.ScoreInputError, match="field 'tools' is a string but not JSON"):
        S.tokenize_pair(tok, row)
    row = dict(tiny.preference_rows(1, conversational=True)[0], chat_template_kwargs=[1])
    with pytest.raises(S.ScoreInputError, match="'chat_template_kwargs' must be an object"):
        S.tokenize_pair(tok, row)


def test_rows_trl_drops_or_keeps_are_dropped_or_kept_and_counted(tmp_path):
    """keep_start with a short max_length: TRL drops the rows whose prompt fills it and scores empty completions
    (string: the EOS; conversational: the template's closing tokens). score does the same, and says so."""
    from dpo_rlhf_checks import score as S

    model, tok = tiny.build_causal_lm(seed=0)
    ref, _ = tiny.build_causal_lm(seed=0)
    rows = tiny.preference_rows(N, seed=3)
    rows[2] = dict(rows[2], prompt="the " * 15)  # fills max_length 12
    rows[7] = dict(rows[7], prompt="a big red cat and a small blue dog sat on the mat")  # 13 tokens
    rows[4] = dict(rows[4], chosen="")  # TRL: the EOS alone
    rows[5] = dict(rows[5], rejected=" ")
    trainer = trl.DPOTrainer(model=model, ref_model=ref, args=_config(tmp_path, max_length=12), processing_class=tok,
                             train_dataset=datasets.Dataset.from_list(rows))
    kept = trainer.train_dataset
    assert len(kept) == N - 2
    res = S.score_pairs(ref, tok, rows, config=S.ScoreConfig(max_length=12), device=torch.device("cpu"))
    assert res.pair_numbers.tolist() == [i + 1 for i in range(N) if i not in (2, 7)]
    flags = {f["check"]: f for f in res.flags}
    assert "2 of 12 rows dropped" in flags["dropped_rows"]["message"] and "row 3" in flags["dropped_rows"]["message"]
    assert flags["empty_completion"]["message"].startswith("2 of 12 rows have an empty")
    batch = trainer.data_collator([kept[i] for i in range(len(kept))])
    with torch.no_grad():
        rc, rr = trainer.compute_ref_log_probs(trainer.ref_model, batch)
    assert res.columns["ref_chosen_logps"] == pytest.approx(rc.double().numpy(), abs=1e-4)
    assert res.columns["ref_rejected_logps"] == pytest.approx(rr.double().numpy(), abs=1e-4)
    assert res.columns["chosen_length"][3] == 1  # input row 5 (index 4): its chosen is the EOS alone
    # conversational: an empty assistant message is the template's closing tokens, as in TRL
    conv = tiny.preference_rows(4, seed=4, conversational=True)
    conv[1]["chosen"] = [{"role": "assistant", "content": ""}]
    trainer = trl.DPOTrainer(model=model, ref_model=ref, args=_config(tmp_path), processing_class=tok,
                             train_dataset=datasets.Dataset.from_list(conv))
    pair = S.tokenize_pair(tok, conv[1])
    assert pair.chosen_ids == trainer.train_dataset[1]["chosen_ids"] and len(pair.chosen_ids) >= 1
    res = S.score_pairs(ref, tok, conv, config=S.ScoreConfig(), device=torch.device("cpu"))
    assert res.pair_numbers.tolist() == [1, 2, 3, 4] and res.columns["ref_chosen_logps"][1] < 0


def test_readme_bf16_number_is_what_bf16_autocast_does():
    """README: bf16 autocast moves a summed log-probability 'by between A and B nats'; measure it on long
    completions (21-120 tokens) of the tiny model: the largest move lies in [A, B]."""
    import re
    from pathlib import Path

    import numpy as np

    from dpo_rlhf_checks import score as S

    text = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    m = re.search(r"autocast moves a completion's summed log-probability by between ([0-9.]+) and ([0-9.]+) nats", text)
    assert m, "README's bf16 sentence"
    lo, hi = float(m.group(1)), float(m.group(2))
    tok = tiny.build_tokenizer()
    model, _ = tiny.build_causal_lm(seed=0, tokenizer=tok)
    rows = tiny.preference_rows(32, seed=0, prompt_words=(20, 60), completion_words=(20, 120))
    cfg = S.ScoreConfig(max_length=None)
    f32 = S.score_pairs(model, tok, rows, config=cfg, device=torch.device("cpu")).columns
    with torch.autocast("cpu", dtype=torch.bfloat16):
        b16 = S.score_pairs(model, tok, rows, config=cfg, device=torch.device("cpu")).columns
    moved = np.abs(b16["ref_chosen_logps"] - f32["ref_chosen_logps"])
    assert lo <= moved.max() <= hi, moved.max()
    assert moved.max() > 1e-3  # the old README's "about 1e-3 nats" understated it
