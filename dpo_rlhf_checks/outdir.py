"""The output folder of one run (``--all``, ``--only``, ``lm-map``): a lock and a staging folder.

A run takes an exclusive lock on ``OUT/.paper_checks.lock`` (``fcntl.flock``, released by the kernel when the
process ends, however it ends), so a second run into the same folder is refused with one line instead of
interleaving its files with the first's. Everything the run writes goes to a hidden staging folder inside
``OUT`` (``OUT/.paper_checks-run-*``, on the same file system, so every move is a rename); only when the run
has finished are its files renamed into place, the reports last, with SIGINT held back for those few
renames. An interrupted or crashed run therefore leaves ``OUT`` as it was: never a ``report.json`` of one run
next to the figures of another. A staging folder left by a killed run (SIGKILL) is removed by the next run
into the same folder (it holds the lock, so no live run owns it).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Iterable

LOCK_NAME = ".paper_checks.lock"
STAGING_PREFIX = ".paper_checks-run-"


def blocked_outputs(out: Path, files: tuple[str, ...], folders: tuple[str, ...] = ("figures",)) -> str | None:
    """Why the run's final renames into ``out`` would fail (a folder where a file goes, or the reverse), or None;
    checked before the run, so that the renames at its end cannot lose its results."""
    out = Path(out)
    for name in files:
        if (out / name).is_dir():
            return f"{out / name} is a folder; the run writes a file there"
    for name in folders:
        if (out / name).exists() and not (out / name).is_dir():
            return f"{out / name} is not a folder; the run writes its figures there"
    return None


class OutputBusy(Exception):
    """Another live run holds the lock of this output folder."""


class StagedOutput:
    """``with StagedOutput(out) as staged:`` write into ``staged.staging``, then ``staged.commit(last=...)``.

    Leaving the block without a commit (an exception, SIGINT) discards the staging folder; ``OUT`` keeps what it
    had. The lock is held from entering the block to leaving it.
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.staging: Path | None = None
        self.committed = False
        self._lock_fd: int | None = None

    def __enter__(self) -> "StagedOutput":
        self.out.mkdir(parents=True, exist_ok=True)
        lock_path = self.out / LOCK_NAME
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise OutputBusy(f"another run (pid {holder or '?'}) is writing into {self.out}; wait for it to "
                             "finish or choose another --out") from None
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        for stale in self.out.glob(STAGING_PREFIX + "*"):  # left by a killed run; we hold the lock, so no run owns it
            shutil.rmtree(stale, ignore_errors=True)
        self.staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.out))
        return self

    def commit(self, last: Iterable[str] = ()) -> list[Path]:
        """Rename every file of the staging folder to the same place under ``OUT`` (files named in ``last``,
        relative to the staging folder, after all others, in that order); return the final paths.

        SIGINT is held back until the renames are done, so an interrupt cannot split them.
        """
        assert self.staging is not None, "commit() outside the with block"
        last = [Path(p) for p in last]
        files = sorted(p.relative_to(self.staging) for p in self.staging.rglob("*") if p.is_file() or p.is_symlink())
        order = [p for p in files if p not in last] + [p for p in last if p in files]
        held: list[int] = []
        try:  # hold SIGINT back: a Python-level handler runs in the main thread, whichever thread the signal hit
            old_handler = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
        except ValueError:  # not the main thread: signal handlers cannot be changed here, and the renames go on
            old_handler = None
        try:
            moved = []
            for rel in order:
                dest = self.out / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.staging / rel, dest)
                moved.append(dest)
            self.committed = True
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        if held and callable(old_handler):
            old_handler(signal.SIGINT, None)  # the interrupt that came during the renames, now (KeyboardInterrupt)
        elif held and old_handler == signal.SIG_DFL:
            raise KeyboardInterrupt
        return moved

    def __exit__(self, *exc) -> None:
        try:
            if self.staging is not None:
                shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None
