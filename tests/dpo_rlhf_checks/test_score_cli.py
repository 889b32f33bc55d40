"""``paper_checks.py score`` as a user meets it (issue 17, items 5, 6, 11, 12): every output path checked
before any model loads, no output that overwrites an input, the data read as strictly as ``solve`` and
``audit`` read theirs, one-line errors that name the right thing, and ``--no-progress`` meaning it."""

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from dpo_rlhf_checks import score as S  # noqa: E402
from dpo_rlhf_checks.cli import main as cli_main  # noqa: E402
from dpo_rlhf_checks.integrations import tiny  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    tiny.build_scoring_folder(root, 4, reward_model=False)
    return root


@pytest.fixture
def no_model_load(monkeypatch):
    """A model load fails the test: the check under test must come first."""
    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the output paths were checked")
    monkeypatch.setattr(S, "load_causal_lm", refuse)
    monkeypatch.setattr(S, "load_reward_model", refuse)


def _run(root, *args, model="ref"):
    return cli_main(["score", "--model", str(root / model), "--data", str(root / "data.jsonl"), "--no-progress",
                     *args])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("out, pairs_out, message", [
    ("/proc/nope/o.jsonl", None, "folder /proc/nope does not exist"),
    ("{tmp}/", None, "is a folder; give a file name"),
    ("{tmp}/newdir/", None, "is a folder; give a file name"),  # a trailing slash names a folder even when absent
    ("{tmp}/o.jsonl", "{tmp}/", "--pairs-out"),
    ("{tmp}/o.jsonl", "/proc/nope/f.jsonl", "--pairs-out /proc/nope/f.jsonl: folder /proc/nope does not exist"),
    ("{tmp}/o.jsonl", "{tmp}/o.jsonl", "name the same file"),
])
def test_output_paths_checked_before_any_model_loads(root, tmp_path, capsys, no_model_load, out, pairs_out, message):
    args = ["--out", out.format(tmp=tmp_path)]
    if pairs_out is not None:
        args += ["--audit", "--ref-model", str(root / "pol"), "--pairs-out", pairs_out.format(tmp=tmp_path)]
    assert _run(root, *args) == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "newdir").exists()


def test_pairs_out_without_a_policy_is_one_line(root, tmp_path, capsys, no_model_load):
    assert _run(root, "--out", str(tmp_path / "o.jsonl"), "--audit", "--pairs-out", str(tmp_path / "f.jsonl")) == 2
    assert "--pairs-out" in _one_error_line(capsys) and not (tmp_path / "f.jsonl").exists()


def test_unwritable_folder_is_found_before_scoring(root, tmp_path, capsys, no_model_load):
    if os.geteuid() == 0:  # root writes anywhere, but not into /proc
        target = "/proc/o.jsonl"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = str(locked / "o.jsonl")
    assert _run(root, "--out", target) == 2
    assert "--out" in _one_error_line(capsys)


@pytest.mark.parametrize("how", ["same", "hardlink", "symlink", "datasets-folder", "model-folder"])
def test_output_that_resolves_to_an_input_is_refused(root, tmp_path, capsys, no_model_load, how):
    data = tmp_path / "data.jsonl"
    data.write_bytes((root / "data.jsonl").read_bytes())
    before = data.read_bytes()
    args = ["--data", str(data)]
    if how == "same":
        out = data
    elif how == "hardlink":
        out = tmp_path / "link.jsonl"
        os.link(data, out)
    elif how == "symlink":
        out = tmp_path / "sym.jsonl"
        out.symlink_to(data)
    elif how == "datasets-folder":
        (tmp_path / "ds").mkdir()
        args = ["--data", str(tmp_path / "ds")]
        out = tmp_path / "ds" / "data-00000-of-00001.arrow"
    else:
        out = root / "ref" / "config.json"
        before = out.read_bytes()
    code = cli_main(["score", "--model", str(root / "ref"), *args, "--out", str(out), "--no-progress"])
    assert code == 2
    assert "--out" in _one_error_line(capsys)
    if how == "model-folder":
        assert out.read_bytes() == before
    elif how != "datasets-folder":
        assert data.read_bytes() == before


def test_duplicate_json_keys_are_rejected_naming_the_row(root, tmp_path, capsys):
    path = tmp_path / "dup.jsonl"
    good = json.dumps(tiny.preference_rows(1)[0])
    path.write_text(good + "\n" + '{"prompt": "the", "chosen": " cat", "chosen": " dog", "rejected": " rug"}\n')
    assert cli_main(["score", "--model", str(root / "ref"), "--data", str(path), "--out", str(tmp_path / "o.jsonl"),
                     "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert "row 2 (line 2)" in line and "duplicate key 'chosen'" in line
    assert not (tmp_path / "o.jsonl").exists()


def test_non_utf8_data_is_one_line(root, tmp_path, capsys):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(tiny.preference_rows(1)[0]).encode() + b"\n" +
                     '{"prompt": "caf\u00e9", "chosen": " a", "rejected": " b"}\n'.encode("latin-1"))
    assert cli_main(["score", "--model", str(root / "ref"), "--data", str(path), "--out", str(tmp_path / "o.jsonl"),
                     "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert "line 2: not UTF-8 text" in line and str(path) in line


def test_a_bom_is_accepted_as_audit_accepts_it(root, tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (root / "data.jsonl").read_bytes())
    rows, _ = S.load_rows(path)
    assert rows == [json.loads(line) for line in open(root / "data.jsonl")]


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "0"], "batch_size must be a whole number >= 1"),
    (["--batch-size", "x"], "invalid int value"),
    (["--truncation-mode", "middle"], "invalid choice"),
    (["--beta", "0.1"], "--beta needs --audit"),
    (["--audit", "--beta", "-1"], "beta"),
    (["--bogus"], "unrecognized arguments"),
])
def test_argument_errors_are_one_line(root, tmp_path, capsys, no_model_load, argv, message):
    assert _run(root, "--out", str(tmp_path / "o.jsonl"), *argv) == 2
    line = _one_error_line(capsys)
    assert message in line and "usage:" not in line


def test_missing_model_folder_says_so(root, tmp_path, capsys):
    for missing in (tmp_path / "nope", "./no-such-model-folder", "a/b/c"):
        assert cli_main(["score", "--model", str(missing), "--data", str(root / "data.jsonl"), "--out",
                         str(tmp_path / "o.jsonl"), "--no-progress"]) == 2
        line = _one_error_line(capsys)
        assert line == f"error: --model: no model at {missing}: no such folder"
        assert "data.jsonl" not in line and "Repo id" not in line


def test_a_folder_that_is_not_a_model_says_so(root, tmp_path, capfd):
    (tmp_path / "empty").mkdir()
    assert cli_main(["score", "--model", str(root / "ref"), "--ref-model", str(tmp_path / "empty"), "--data",
                     str(root / "data.jsonl"), "--out", str(tmp_path / "o.jsonl"), "--no-progress"]) == 2
    assert _one_error_line(capfd) == f"error: --ref-model: {tmp_path / 'empty'} is a folder but holds no model " \
                                     "(no config.json in it)"
    # A folder with a config that transformers cannot read: its whole message, on one line, not its first line only
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model_type": "no-such-architecture"}')
    assert cli_main(["score", "--model", str(tmp_path / "broken"), "--data", str(root / "data.jsonl"), "--out",
                     str(tmp_path / "o.jsonl"), "--no-progress"]) == 2
    line = _one_error_line(capfd)  # the whole stderr (capfd): no logged warning beside the error
    assert line.startswith(f"error: --model: cannot load {tmp_path / 'broken'}: ") and "data.jsonl" not in line
    assert "no-such-architecture" in line  # the reason, not a tokenizer error that follows from it


def test_no_progress_silences_the_libraries_bars(root, tmp_path, capfd):
    import transformers.utils.logging as tl

    assert cli_main(["score", "--model", str(root / "pol"), "--ref-model", str(root / "ref"), "--data",
                     str(root / "data.jsonl"), "--out", str(tmp_path / "o.jsonl"), "--no-progress"]) == 0
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "it/s" not in err and "%|" not in err
    assert err.startswith("score: 4 pairs")
    assert tl.is_progress_bar_enabled()  # restored for the caller
    # and without the flag they show (so the assertion above can fail)
    assert cli_main(["score", "--model", str(root / "ref"), "--data", str(root / "data.jsonl"), "--out",
                     str(tmp_path / "o2.jsonl")]) == 0
    assert "%|" in capfd.readouterr().err


def _fires(columns, n):
    seqs = S.Sequences([[1, 2]] * (2 * n), np.ones(2 * n, int), np.ones(2 * n, int), np.zeros(2 * n, bool))
    return any(f["check"] == "reference_looks_trained" for f in S.integrity_checks(columns, seqs, 0))


def test_reference_looks_trained_does_not_fire_on_noise():
    """Two untrained models: four independent log-probability columns. The flag's tests at level 0.01 fire on
    at most ~1% of such draws; the old rule (h positive on < half, reference ahead of the policy) on ~20%."""
    rng = np.random.default_rng(0)
    n, draws = 40, 400
    fired = 0
    for _ in range(draws):
        cols = {k: -rng.uniform(10, 30, n) for k in ("ref_chosen_logps", "ref_rejected_logps", "chosen_logps",
                                                     "rejected_logps")}
        fired += _fires(cols, n)
    assert fired <= 0.02 * draws, fired
    # and it still fires where the models are swapped: every h < 0, the reference right where the policy is not
    rr = -rng.uniform(10, 20, n)
    rc = rr + np.where(np.arange(n) < 30, 1.0, -1.0)  # the reference ranks 75% right
    swapped = {"ref_chosen_logps": rc, "ref_rejected_logps": rr, "chosen_logps": rc - 2.0, "rejected_logps": rr}
    assert _fires(swapped, n)


def test_six_untrained_models_raise_no_flag(tmp_path):
    rows = tiny.preference_rows(40, seed=11)
    tok = tiny.build_tokenizer()
    for seed in range(6):
        pol, _ = tiny.build_causal_lm(seed=100 + seed, tokenizer=tok)
        ref, _ = tiny.build_causal_lm(seed=200 + seed, tokenizer=tok)
        res = S.score_pairs(pol, tok, rows, config=S.ScoreConfig(max_length=None), ref_model=ref,
                            device=torch.device("cpu"))
        assert [f["check"] for f in res.flags] == [], (seed, res.flags)


def test_an_empty_data_file_names_its_path_once(root, tmp_path, capsys, no_model_load):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    # (the data are read before any model loads: no_model_load would fail otherwise)
    assert cli_main(["score", "--model", str(root / "ref"), "--data", str(path), "--out", str(tmp_path / "o.jsonl"),
                     "--no-progress"]) == 2
    assert _one_error_line(capsys) == f"error: {path}: no data rows"
