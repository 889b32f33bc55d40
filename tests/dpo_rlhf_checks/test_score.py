"""``paper_checks.py score``: per-pair log-probabilities of a tiny local GPT-2 checked against an
independent forward pass, the prompt/completion boundary, padding and batch-size invariance, the
conversational format, a reward model, the integrity flags and bad rows (exit 2 naming the row)."""

import json

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
import torch  # noqa: E402

from dpo_rlhf_checks import score as S  # noqa: E402
from dpo_rlhf_checks.cli import main as cli_main  # noqa: E402
from dpo_rlhf_checks.integrations import tiny  # noqa: E402

N = 20


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    tiny.build_scoring_folder(root, N)
    tiny.write_jsonl(root / "conv.jsonl", tiny.preference_rows(N, seed=4, conversational=True))
    return root


def _load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _read(path):
    return [json.loads(line) for line in open(path)]


def _manual_sum(model, ids, start):
    """Independent: one unpadded sequence, float64 log-softmax, sum of tokens [start, len)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids)))


def _score(models, *extra, data="data.jsonl", out="pairs.jsonl", capsys=None):
    args = ["score", "--model", str(models / "ref"), "--data", str(models / data), "--out", str(models / out),
            "--no-progress", *extra]
    assert cli_main(args) == 0
    return _read(models / out)


def test_logps_and_lengths_match_a_manual_forward_pass(models):
    rows = _score(models)
    model, tok = _load(models / "ref")
    data = _read(models / "data.jsonl")
    assert len(rows) == N
    for row, d in zip(rows, data):
        prompt_ids = tok(d["prompt"])["input_ids"]
        for side in ("chosen", "rejected"):
            full = tok(d["prompt"] + d[side] + tok.eos_token)["input_ids"]
            assert full[:len(prompt_ids)] == prompt_ids
            assert row[f"{side}_length"] == len(full) - len(prompt_ids)
            assert row[f"ref_{side}_logps"] == pytest.approx(_manual_sum(model, full, len(prompt_ids)), abs=2e-4)
            assert row[f"ref_{side}_logps"] < 0


def test_boundary_prompt_tokens_never_counted(models):
    """score = log p(prompt + completion) - log p(prompt), each from its own forward pass (causality)."""
    rows = _score(models)
    model, tok = _load(models / "ref")
    for row, d in zip(rows, _read(models / "data.jsonl")):
        prompt_ids = tok(d["prompt"])["input_ids"]
        full = tok(d["prompt"] + d["chosen"] + tok.eos_token)["input_ids"]
        whole = _manual_sum(model, full, 1)
        prompt_only = _manual_sum(model, prompt_ids, 1)
        assert row["ref_chosen_logps"] == pytest.approx(whole - prompt_only, abs=2e-4)
        # Off by one either way is a whole token's log-probability away (each is < -1 nats at random weights).
        assert abs(row["ref_chosen_logps"] - _manual_sum(model, full, len(prompt_ids) + 1)) > 0.5
        assert abs(row["ref_chosen_logps"] - _manual_sum(model, full, len(prompt_ids) - 1)) > 0.5


@pytest.mark.parametrize("batch_size", [1, 3, 20])
def test_batch_size_and_padding_invariance(models, batch_size):
    base = _score(models, "--batch-size", "7", out="base.jsonl")
    rows = _score(models, "--batch-size", str(batch_size), out=f"b{batch_size}.jsonl")
    for a, b in zip(base, rows):
        for k in ("ref_chosen_logps", "ref_rejected_logps"):
            assert a[k] == pytest.approx(b[k], abs=1e-5)


def test_dedicated_pad_token_batches_match_unbatched(models):
    model, _ = _load(models / "ref")
    tok = tiny.build_tokenizer(pad_token="<pad>")  # a pad token of its own (the default pads with EOS)
    model.resize_token_embeddings(len(tok))
    assert tok.pad_token_id != tok.eos_token_id
    data = tiny.preference_rows(N, seed=3)
    padded = S.score_pairs(model, tok, data, config=S.ScoreConfig(batch_size=5), device=torch.device("cpu")).columns
    single = S.score_pairs(model, tok, data, config=S.ScoreConfig(batch_size=1), device=torch.device("cpu")).columns
    np.testing.assert_allclose(padded["ref_chosen_logps"], single["ref_chosen_logps"], atol=1e-5)
    np.testing.assert_allclose(padded["ref_rejected_logps"], single["ref_rejected_logps"], atol=1e-5)


def test_policy_and_reference_columns(models):
    rows = _score(models, "--ref-model", str(models / "ref"), out="same.jsonl")
    rows_pol = _score(models, "--ref-model", str(models / "ref"), out="pol.jsonl")
    base = _score(models, out="base.jsonl")
    for r, b in zip(rows, base):
        assert r["ref_chosen_logps"] == pytest.approx(b["ref_chosen_logps"], abs=1e-6)
        assert r["chosen_logps"] == pytest.approx(r["ref_chosen_logps"], abs=1e-6)
    # --model is the policy when --ref-model is given
    args = ["score", "--model", str(models / "pol"), "--ref-model", str(models / "ref"), "--data",
            str(models / "data.jsonl"), "--out", str(models / "pol2.jsonl"), "--no-progress"]
    assert cli_main(args) == 0
    pol = _read(models / "pol2.jsonl")
    pmodel, tok = _load(models / "pol")
    d = _read(models / "data.jsonl")[0]
    full = tok(d["prompt"] + d["chosen"] + tok.eos_token)["input_ids"]
    n_prompt = len(tok(d["prompt"])["input_ids"])
    assert pol[0]["chosen_logps"] == pytest.approx(_manual_sum(pmodel, full, n_prompt), abs=2e-4)
    assert pol[0]["ref_chosen_logps"] == pytest.approx(base[0]["ref_chosen_logps"], abs=1e-6)
    assert abs(pol[0]["chosen_logps"] - pol[0]["ref_chosen_logps"]) > 1e-3
    assert rows_pol[0]["chosen_logps"] == pytest.approx(rows[0]["chosen_logps"], abs=1e-6)


def test_conversational_format_uses_the_chat_template(models):
    rows = _score(models, data="conv.jsonl", out="conv_pairs.jsonl")
    model, tok = _load(models / "ref")
    for row, d in zip(rows, _read(models / "conv.jsonl")):
        prompt_text = tok.apply_chat_template(d["prompt"], tokenize=False, add_generation_prompt=True)
        assert prompt_text.endswith("<|assistant|> ")
        prompt_ids = tok(prompt_text)["input_ids"]
        for side in ("chosen", "rejected"):
            full_text = tok.apply_chat_template(d["prompt"] + d[side], tokenize=False)
            full = tok(full_text)["input_ids"]
            assert full[:len(prompt_ids)] == prompt_ids
            assert full[-1] == tok.convert_tokens_to_ids("<|end|>")  # the template closes the turn; no EOS added
            assert row[f"{side}_length"] == len(full) - len(prompt_ids)
            assert row[f"ref_{side}_logps"] == pytest.approx(_manual_sum(model, full, len(prompt_ids)), abs=2e-4)


def test_datasets_folder_gives_the_same_scores(models):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(_read(models / "data.jsonl")).save_to_disk(str(models / "ds"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(_read(models / "conv.jsonl"))}).save_to_disk(
        str(models / "dsd"))
    a = _score(models, data="ds", out="ds.jsonl")
    b = _score(models, out="base.jsonl")
    assert [r["ref_chosen_logps"] for r in a] == pytest.approx([r["ref_chosen_logps"] for r in b], abs=1e-6)
    c = _score(models, data="dsd", out="dsd.jsonl")
    d = _score(models, data="conv.jsonl", out="conv_pairs.jsonl")
    assert [r["ref_rejected_logps"] for r in c] == pytest.approx([r["ref_rejected_logps"] for r in d], abs=1e-6)


def test_reward_model_scores_match_a_manual_forward(models):
    rows = _score(models, "--reward-model", str(models / "rm"), "--batch-size", "4", out="rm.jsonl")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rm = AutoModelForSequenceClassification.from_pretrained(models / "rm").eval()
    tok = AutoTokenizer.from_pretrained(models / "rm")
    for row, d in zip(rows, _read(models / "data.jsonl")):
        for side in ("chosen", "rejected"):
            ids = tok(d["prompt"] + d[side] + tok.eos_token)["input_ids"]
            with torch.no_grad():
                expected = float(rm(torch.tensor([ids])).logits[0, 0])
            assert row[f"{side}_reward"] == pytest.approx(expected, abs=1e-5)
    assert len({round(r["chosen_reward"], 6) for r in rows}) > N // 2  # not a constant


def test_truncation_keep_start_and_keep_end(models):
    data = _read(models / "data.jsonl")
    model, tok = _load(models / "ref")
    cut = _score(models, "--max-length", "10", out="cut.jsonl")
    kept_end = _score(models, "--max-length", "10", "--truncation-mode", "keep_end", out="cut_end.jsonl")
    n_cut = 0
    for row, row_end, d in zip(cut, kept_end, data):
        prompt_ids = tok(d["prompt"])["input_ids"]
        full = tok(d["prompt"] + d["chosen"] + tok.eos_token)["input_ids"]
        if len(full) > 10:
            n_cut += 1
            assert row["chosen_truncated"]
            assert row["chosen_length"] == 10 - len(prompt_ids)
            assert row["ref_chosen_logps"] == pytest.approx(_manual_sum(model, full[:10], len(prompt_ids)), abs=2e-4)
            start = len(full) - 10  # keep_end drops the start of the prompt
            n_completion = min(len(full) - len(prompt_ids), 10)
            exp = _manual_sum(model, full[start:], 10 - n_completion if n_completion < 10 else 1)
            assert row_end["ref_chosen_logps"] == pytest.approx(exp, abs=2e-4)
        else:
            assert not row["chosen_truncated"]
    assert n_cut > 0


def test_integrity_flags(models, capsys):
    _score(models, "--ref-model", str(models / "ref"), out="same.jsonl")
    assert "identical_models" in capsys.readouterr().out
    _score(models, "--ref-model", str(models / "pol"), "--model", str(models / "pol"), out="same2.jsonl")
    assert "identical_models" in capsys.readouterr().out
    _score(models, "--max-length", "10", out="cut.jsonl")
    out = capsys.readouterr().out
    assert "truncated" in out and "identical_models" not in out
    _score(models, "--ref-model", str(models / "pol"), out="diff.jsonl")
    assert "integrity: no flags" in capsys.readouterr().out


def test_integrity_heuristics_on_planted_columns():
    n = 40
    seqs = S.Sequences([[1, 2]] * (2 * n), np.ones(2 * n, int), np.ones(2 * n, int), np.zeros(2 * n, bool))
    rng = np.random.default_rng(0)
    rr = -rng.uniform(10, 20, n)
    trained_ref = {"ref_chosen_logps": rr + 1.0, "ref_rejected_logps": rr}  # reference ranks every pair right
    assert [f["check"] for f in S.integrity_checks(trained_ref, seqs, 0)] == ["reference_looks_trained"]
    half = {"ref_chosen_logps": rr + np.where(np.arange(n) < n // 2, 1.0, -1.0), "ref_rejected_logps": rr}
    assert S.integrity_checks(half, seqs, 0) == []
    # swapped: the "policy" is the untrained one, h < 0 on most pairs, the reference ranks more pairs right
    swapped = dict(half, chosen_logps=half["ref_chosen_logps"] - 2.0, rejected_logps=rr)
    assert [f["check"] for f in S.integrity_checks(swapped, seqs, 0)] == ["reference_looks_trained"]
    fine = dict(half, chosen_logps=half["ref_chosen_logps"] + 2.0, rejected_logps=rr)
    assert S.integrity_checks(fine, seqs, 0) == []


def test_prompt_not_a_prefix_is_flagged_and_handled_like_trl(models, tmp_path):
    data = [{"prompt": "the cat", "chosen": "s sat", "rejected": " ran"}] * 3  # "cat" + "s" -> a different word
    path = tiny.write_jsonl(tmp_path / "merge.jsonl", data)
    model, tok = _load(models / "ref")
    rows, where = S.load_rows(path)
    res = S.score_pairs(model, tok, rows, config=S.ScoreConfig(), where=where, device=torch.device("cpu"))
    assert [f["check"] for f in res.flags] == ["prompt_not_prefix"]
    # the completion starts where prompt and prompt + completion diverge: after "the"
    assert res.columns["chosen_length"][0] == len(tok("the cats sat" + tok.eos_token)["input_ids"]) - 1


@pytest.mark.parametrize("row, message", [
    ({"prompt": "the", "chosen": " cat"}, "row 2 (line 2): missing field 'rejected'"),
    ({"prompt": "the", "chosen": [{"role": "assistant", "content": "cat"}], "rejected": " cat"},
     "row 2 (line 2): prompt, chosen and rejected must all be strings or all be message lists"),
    ({"prompt": "the", "chosen": 3, "rejected": " cat"}, "row 2 (line 2): field 'chosen' must be a string, got int"),
    ({"prompt": [{"role": "user"}], "chosen": [{"role": "assistant", "content": "a"}],
      "rejected": [{"role": "assistant", "content": "b"}]}, "row 2 (line 2): field 'prompt', message 1"),
])
def test_bad_rows_exit_2_naming_the_row(models, tmp_path, capsys, row, message):
    first = tiny.preference_rows(1, conversational=isinstance(row["prompt"], list))[0]
    path = tiny.write_jsonl(tmp_path / "bad.jsonl", [first, row])
    code = cli_main(["score", "--model", str(models / "ref"), "--data", str(path), "--out", str(tmp_path / "o.jsonl"),
                     "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not (tmp_path / "o.jsonl").exists()


def test_strict_stops_where_trl_drops_or_scores_an_empty_completion(models, tmp_path, capsys):
    path = tiny.write_jsonl(tmp_path / "long.jsonl", [{"prompt": "the " * 12, "chosen": " cat", "rejected": " dog"}])
    code = cli_main(["score", "--model", str(models / "ref"), "--data", str(path), "--out", str(tmp_path / "o.jsonl"),
                     "--max-length", "8", "--no-progress", "--strict"])
    assert code == 2
    assert "row 1 (line 1): the prompt (12 tokens) fills max_length 8" in capsys.readouterr().err
    path = tiny.write_jsonl(tmp_path / "empty.jsonl", [{"prompt": "the", "chosen": " cat", "rejected": " dog"},
                                                       {"prompt": "the", "chosen": " ", "rejected": " cat"}])
    code = cli_main(["score", "--model", str(models / "ref"), "--data", str(path), "--out", str(tmp_path / "o.jsonl"),
                     "--no-progress", "--strict"])
    assert code == 2
    assert "row 2 (line 2): empty completion in field 'chosen'" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_bad_arguments_exit_2(models, tmp_path, capsys):
    base = ["score", "--data", str(models / "data.jsonl"), "--out", str(tmp_path / "o.jsonl"), "--no-progress"]
    assert cli_main(base + ["--model", str(tmp_path / "nope")]) == 2
    assert "no model at" in capsys.readouterr().err
    assert cli_main(base + ["--model", str(models / "ref"), "--batch-size", "0"]) == 2
    assert cli_main(base + ["--model", str(models / "ref"), "--pairs-out", str(tmp_path / "f.jsonl")]) == 2
    assert cli_main(base[:2] + [str(tmp_path / "missing.jsonl")] + base[3:] + ["--model", str(models / "ref")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)


def test_score_audit_reports_the_written_columns(models, capsys):
    args = ["--ref-model", str(models / "ref"), "--model", str(models / "pol"), "--reward-model", str(models / "rm"),
            "--audit", "--beta", "0.1", "--json", "--pairs-out", str(models / "flags.jsonl")]
    rows = _score(models, *args, out="audited.jsonl")
    out = json.loads(capsys.readouterr().out)
    pc = np.array([r["chosen_logps"] for r in rows])
    pr = np.array([r["rejected_logps"] for r in rows])
    rc = np.array([r["ref_chosen_logps"] for r in rows])
    rr = np.array([r["ref_rejected_logps"] for r in rows])
    a = out["audit"]
    assert a["n_pairs"] == N
    assert a["policy_ranking_accuracy"] == pytest.approx(np.mean(pc - pr >= 0))
    assert a["frac_in_undesirable"] == pytest.approx(np.mean((rc - rr < pc - pr) & (pc - pr < 0)))
    assert a["diagnostics"]["frac_chosen_logp_fell"] == pytest.approx(np.mean(pc < rc))
    assert a["per_token_mean"] is not None
    flags = _read(models / "flags.jsonl")
    assert sum(f["in_U"] for f in flags) == round(a["frac_in_undesirable"] * N)


def test_implicit_prompt_format_is_extracted_like_trl(models, tmp_path):
    conv = _read(models / "conv.jsonl")
    implicit = [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in conv]
    tiny.write_jsonl(tmp_path / "implicit.jsonl", implicit)
    rows, _ = S.load_rows(tmp_path / "implicit.jsonl")
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in conv]
    trl_extract = pytest.importorskip("trl.data_utils").extract_prompt

    strings = [{"chosen": "the cat sat on the mat", "rejected": "the cat ran"}, {"chosen": "a b", "rejected": "a c"}]
    for r in strings + implicit:
        assert S.extract_prompt(r) == trl_extract(r)
    a = _score(models, data="conv.jsonl", out="conv_pairs.jsonl")
    args = ["score", "--model", str(models / "ref"), "--data", str(tmp_path / "implicit.jsonl"), "--out",
            str(tmp_path / "imp.jsonl"), "--no-progress"]
    assert cli_main(args) == 0
    b = _read(tmp_path / "imp.jsonl")
    assert [r["ref_chosen_logps"] for r in a] == pytest.approx([r["ref_chosen_logps"] for r in b], abs=1e-6)


def test_split_with_a_jsonl_file_is_refused_not_ignored(tmp_path):
    """A JSON Lines file has no splits: --split with one was silently ignored (every row scored)."""
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "a", "chosen": " b", "rejected": " c"}) + "\n")
    assert len(S.load_rows(path)[0]) == 1
    with pytest.raises(S.ScoreInputError, match=r"--split 'test' given, but this is a JSON Lines file"):
        S.load_rows(path, split="test")
