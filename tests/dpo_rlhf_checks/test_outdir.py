"""The output folder of a run (issue 17, item 7): the lock, the staging folder, the renames at the end."""

import os
import signal

import pytest

from dpo_rlhf_checks import outdir
from dpo_rlhf_checks.outdir import LOCK_NAME, STAGING_PREFIX, OutputBusy, StagedOutput


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_commit_moves_everything_reports_last_and_leaves_no_staging(tmp_path, monkeypatch):
    order = []
    real_replace = os.replace
    monkeypatch.setattr(outdir.os, "replace", lambda a, b: (order.append(os.path.basename(b)), real_replace(a, b)))
    with StagedOutput(tmp_path) as staged:
        (staged.staging / "figures").mkdir()
        for name in ("report.json", "report.md", "figures/a.png", "figures/b.pdf", "lm_records.npz"):
            (staged.staging / name).write_text(name)
        moved = staged.commit(last=("report.json", "report.md"))
    assert order[-2:] == ["report.json", "report.md"] and len(order) == 5 == len(moved)
    assert _files(tmp_path) == [LOCK_NAME, "figures/a.png", "figures/b.pdf", "lm_records.npz", "report.json",
                                "report.md"]
    assert (tmp_path / "figures" / "a.png").read_text() == "figures/a.png"


def test_an_exception_inside_leaves_the_folder_as_it_was(tmp_path):
    (tmp_path / "report.json").write_text("old")
    with pytest.raises(RuntimeError):
        with StagedOutput(tmp_path) as staged:
            (staged.staging / "report.json").write_text("new")
            raise RuntimeError("a check crashed the runner")
    assert _files(tmp_path) == [LOCK_NAME, "report.json"] and (tmp_path / "report.json").read_text() == "old"


def test_a_second_run_into_the_folder_is_refused_while_the_first_holds_it(tmp_path):
    with StagedOutput(tmp_path):
        with pytest.raises(OutputBusy, match=f"another run \\(pid {os.getpid()}\\) is writing into {tmp_path}"):
            StagedOutput(tmp_path).__enter__()
    with StagedOutput(tmp_path):  # released on leaving
        pass


def test_a_staging_folder_left_by_a_killed_run_is_removed_by_the_next(tmp_path):
    stale = tmp_path / f"{STAGING_PREFIX}dead"
    stale.mkdir()
    (stale / "report.json").write_text("half a run")
    with StagedOutput(tmp_path) as staged:
        assert not stale.exists() and staged.staging.name.startswith(STAGING_PREFIX)


def test_sigint_during_the_renames_waits_until_they_are_done(tmp_path, monkeypatch):
    """Planted: SIGINT arrives at the first rename; every file still moves, and the interrupt comes after."""
    real_replace = os.replace
    sent = []

    def replace(a, b):
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)
        real_replace(a, b)

    monkeypatch.setattr(outdir.os, "replace", replace)
    with StagedOutput(tmp_path) as staged:
        for name in ("a.png", "report.json"):
            (staged.staging / name).write_text(name)
        with pytest.raises(KeyboardInterrupt):
            staged.commit(last=("report.json",))
            for _ in range(1000):  # the pending SIGINT is delivered once unblocked, at the next bytecode
                pass
        assert staged.committed
    assert _files(tmp_path) == [LOCK_NAME, "a.png", "report.json"]
