"""``paper_checks.py`` argument errors (issue 11): each one line, exit 2, before any check runs."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dpo_rlhf_checks.cli import main, output_dir_problem

REPO = Path(__file__).resolve().parents[2]


def _argument_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "usage:" not in err, err
    return err


def test_out_at_an_existing_file_is_rejected_before_any_check(tmp_path, capsys):
    target = tmp_path / "report"
    target.write_text("not a folder")
    err = _argument_error(["--only", "benchmark-table", "--out", str(target)], capsys)
    assert "--out" in err and "exists and is not a folder" in err
    assert target.read_text() == "not a folder"


def test_out_at_an_unwritable_place_is_rejected(tmp_path, capsys):
    err = _argument_error(["--only", "benchmark-table", "--out", "/proc/no-such/x"], capsys)
    assert "--out: cannot write into /proc/no-such/x" in err
    assert output_dir_problem(tmp_path / "new" / "deeper") is None and (tmp_path / "new" / "deeper").is_dir()


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_out_of_range(tmp_path, capsys, seed):
    err = _argument_error(["--only", "benchmark-table", "--seed", seed, "--out", str(tmp_path)], capsys)
    assert f"--seed: must be an integer in [0, 4294967295], got {seed}" in err
    assert not (tmp_path / "report.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without a GPU")
def test_cuda_without_gpu_is_one_error_before_any_check(tmp_path, capsys):
    err = _argument_error(["--only", "lm-dpo-failure", "--device", "cuda", "--out", str(tmp_path)], capsys)
    assert "--device: cuda requested but no CUDA device is available" in err
    assert not (tmp_path / "report.json").exists()


def test_negative_number_values_are_values_and_long_values_are_cut(capsys):
    err = _argument_error(["--only", "benchmark-table", "--seed", "-1e5"], capsys)
    assert "invalid int value: '-1e5'" in err  # read as the value of --seed, not as an unknown option
    err = _argument_error(["--only", "benchmark-table", "--seed", "9" * 2000], capsys)
    assert len(err) < 700 and "chars)" in err


def test_end_to_end_one_line(tmp_path):
    target = tmp_path / "f"
    target.write_text("x")
    run = subprocess.run([sys.executable, "paper_checks.py", "--only", "benchmark-table", "--out", str(target)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stdout == "" and run.stderr.count("\n") == 1
    assert "Traceback" not in run.stderr


# ------------------------------------------------------------------------------------------------
# issue 17: lm-map's up-front checks (item 8), TOY_LM_THREADS (10), --lm-config strictness (11), messages (12),
# small things (13)


class _Trained(Exception):
    """Raised in place of the LM training: a bad argument must be refused before it."""


@pytest.fixture
def no_training(monkeypatch):
    import toy_lm.stage

    def refuse(*args, **kwargs):
        raise _Trained("training started")

    monkeypatch.setattr(toy_lm.stage, "run_stage", refuse)
    monkeypatch.setattr(toy_lm.stage, "get_stage", refuse)


def _lm_map_error(argv, capsys) -> str:
    """``lm-map argv`` exits 2 with one line ``paper_checks.py lm-map: error: ...`` and no usage block, untrained."""
    try:
        code = main(["lm-map", *argv])
    except SystemExit as exc:  # argparse's own exit (the usage block) on an old commit
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "usage:" not in err, (code, err)
    assert err.startswith("paper_checks.py lm-map: error: "), err
    return err


@pytest.mark.parametrize("argv, message", [
    (["--out", "/proc/no-such/x"], "--out: cannot write into /proc/no-such/x"),
    (["--out", "README.md"], "--out: README.md exists and is not a folder"),
    (["--out", ""], "--out: must name a folder, got an empty string"),
    (["--seed", "99999999999999999999"], "--seed: must be an integer in [0, 4294967295], got 99999999999999999999"),
    (["--seed", "-1"], "--seed: must be an integer in [0, 4294967295], got -1"),
    (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--lm-config", "nope"], "--lm-config: LM config 'nope' is neither one of"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
])
def test_lm_map_argument_errors_are_one_line_before_any_training(argv, message, no_training, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # README.md is a file here
    err = _lm_map_error(argv, capsys)
    assert message in err, err


def test_lm_map_refuses_an_output_file_that_is_a_folder(tmp_path, no_training, capsys):
    (tmp_path / "lm_map.json").mkdir()
    err = _lm_map_error(["--out", str(tmp_path)], capsys)
    assert f"--out: {tmp_path / 'lm_map.json'} is a folder; the run writes a file there" in err
    (tmp_path / "lm_map.json").rmdir()
    (tmp_path / "figures").write_text("a file")
    err = _lm_map_error(["--out", str(tmp_path)], capsys)
    assert f"--out: {tmp_path / 'figures'} is not a folder" in err


@pytest.mark.parametrize("blocker", ["report.json", "report.md", "figures"])
def test_all_refuses_an_output_folder_whose_final_renames_would_fail(blocker, tmp_path, capsys):
    """Checked before the run: a folder named report.json (or a file named figures) made the renames at the end
    of a finished run fail, and lose it."""
    if blocker == "figures":
        (tmp_path / blocker).write_text("a file")
    else:
        (tmp_path / blocker).mkdir()
    err = _argument_error(["--only", "benchmark-table", "--out", str(tmp_path)], capsys)
    assert f"--out: {tmp_path / blocker} is " in err


def test_lm_map_valid_arguments_reach_the_training(tmp_path, no_training):
    """The checks refuse only bad input: good arguments get as far as the training (the planted stand-in), and
    the run leaves nothing behind in --out."""
    with pytest.raises(_Trained):
        main(["lm-map", "--out", str(tmp_path / "o"), "--seed", "4294967295", "--lm-config", "default"])
    assert [p.name for p in (tmp_path / "o").iterdir()] == [".paper_checks.lock"]


@pytest.mark.parametrize("value", ["abc", "0", "-1", "99999", "", "2.5", "257"])
def test_toy_lm_threads_is_validated_before_any_check(value, tmp_path, no_training, capsys, monkeypatch):
    monkeypatch.setenv("TOY_LM_THREADS", value)
    err = _argument_error(["--only", "lm-dpo-failure", "--out", str(tmp_path)], capsys)
    assert f"TOY_LM_THREADS must be a whole number of CPU threads in [1, 256], got {value!r}" in err, err
    assert not (tmp_path / "report.json").exists()
    err = _lm_map_error(["--out", str(tmp_path)], capsys)
    assert "TOY_LM_THREADS must be a whole number" in err


def test_toy_lm_threads_valid_values():
    from toy_lm.config import lm_threads

    assert lm_threads({}) == 1
    assert lm_threads({"TOY_LM_THREADS": "4"}) == 4 and lm_threads({"TOY_LM_THREADS": " 256 "}) == 256
    for bad in ("abc", "0", "-1", "257", "99999", "٣"):
        with pytest.raises(ValueError, match="TOY_LM_THREADS"):
            lm_threads({"TOY_LM_THREADS": bad})


def test_lm_config_duplicate_keys_are_rejected_and_a_bom_is_skipped(tmp_path, capsys):
    dup = tmp_path / "dup.json"
    dup.write_text('{"steps": 5, "steps": 6}')
    err = _argument_error(["--only", "benchmark-table", "--lm-config", str(dup), "--out", str(tmp_path)], capsys)
    assert f"--lm-config: LM config file {dup}: duplicate key 'steps' in a JSON object" in err
    assert not (tmp_path / "report.json").exists()
    from toy_lm.config import load_config

    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"steps": 7}')
    assert load_config(str(bom)).steps == 7  # as solve and audit read a BOM
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"methods": ["dpö"]}'.encode("latin-1"))
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        load_config(str(latin))


def test_lm_config_seeds_are_bounded(tmp_path):
    from toy_lm.config import load_config

    path = tmp_path / "seeds.json"
    path.write_text('{"seeds": [99999999999999999999]}')  # overflowed torch.manual_seed after the reference SFT
    with pytest.raises(ValueError, match=r"seeds must be distinct integers in \[0, 4294967295\]"):
        load_config(str(path))


def test_only_the_same_id_twice_is_an_error(tmp_path, capsys):
    err = _argument_error(["--only", "benchmark-table", "benchmark-table", "--out", str(tmp_path)], capsys)
    assert "--only: claim id(s) given more than once: benchmark-table" in err
    assert not (tmp_path / "report.json").exists()


def test_empty_out_is_an_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _argument_error(["--only", "benchmark-table", "--out", ""], capsys)
    assert "--out: must name a folder, got an empty string" in err
    assert list(tmp_path.iterdir()) == []  # nothing written into the current folder


def test_no_error_message_names_a_path_twice(tmp_path, capsys, no_training):
    """Each command's one-line error names its file once ("error: x.jsonl: x.jsonl: no data rows" was doubled)."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    dup = tmp_path / "dup.json"
    dup.write_text('{"a": 1, "a": 2}')
    folder = tmp_path / "folder"
    folder.mkdir()
    missing = tmp_path / "missing.json"
    cases = [["audit", str(empty)], ["audit", str(missing)], ["audit", str(folder)],
             ["solve", "--instance", str(dup)], ["solve", "--instance", str(missing)],
             ["solve", "--instance", str(folder)], ["solve", "--instance", str(empty)],
             ["lm-map", "--lm-config", str(dup), "--out", str(tmp_path / "o")],
             ["lm-map", "--out", str(dup)], ["--only", "benchmark-table", "--lm-config", str(dup)],
             ["--only", "benchmark-table", "--lm-config", str(empty)], ["--only", "benchmark-table", "--out", str(dup)]]
    for argv in cases:
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, (argv, err)
        for path in (empty, dup, folder, missing):
            assert err.count(str(path)) <= 1, (argv, err)
        assert str(tmp_path) in err, (argv, err)  # and it does name the file
