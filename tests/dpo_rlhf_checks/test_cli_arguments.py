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
