"""The audit's columns: their names, the kept rows (in memory, or spooled to a temporary file), read back a chunk
at a time (:class:`PairData`). Second step of read -> columns -> statistics -> report -> cli."""

from __future__ import annotations

import tempfile
import weakref
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np


REQUIRED = ("ref_chosen_logps", "ref_rejected_logps")
OPTIONAL_PAIRS = (
    ("chosen_logps", "rejected_logps"),
    ("chosen_reward", "rejected_reward"),
    ("chosen_length", "rejected_length"),
)
RECOGNIZED = REQUIRED + tuple(c for pair in OPTIONAL_PAIRS for c in pair)
# Other tools' names, read as ours when ours are absent: older TRL (the version the paper authors' code pins).
ALIASES = {"reference_chosen_logps": "ref_chosen_logps", "reference_rejected_logps": "ref_rejected_logps"}
# The paper authors' trainer exports per-sample JSON Lines with these fields; its log-probabilities are per-token
# MEANS (docs/theory.md §15). Any of the last three marks a file as that export.
AUTHORS_EXPORT_FIELDS = ("loss", "chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps",
                         "logratios", "ref_logratios", "ada_margin")
AUTHORS_EXPORT_MARKERS = ("logratios", "ref_logratios", "ada_margin")
NAMES = RECOGNIZED + tuple(ALIASES)  # every column name the audit reads, ours and the aliases
LOGP_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps", "chosen_logps", "rejected_logps") + tuple(ALIASES)
LENGTH_COLUMNS = ("chosen_length", "rejected_length")


# Rows per chunk of the statistics' passes. Fixed, so the numbers do not depend on how the file was read; a power of
# two, so chunk boundaries fall on torch's SIMD blocks: torch computes the last len % 16 elements of a tensor on a
# scalar path (AVX512 here) whose logaddexp can differ in the last bit, and a chunk length that is not a multiple
# of the block would move some per-pair losses, and so a loss quantile, by an ulp from the one-array computation.
STAT_CHUNK = 1 << 18


class AuditInputError(ValueError):
    """Bad input data; the message names the row, line and column."""


class SpoolError(AuditInputError):
    """The kept rows could not be written to the temporary file (no room, no writable TMPDIR)."""


def _close_quietly(file) -> None:
    try:
        file.close()
    except OSError:  # nothing is buffered (the file is unbuffered); the data are being discarded anyway
        pass


class _Spool:
    """Kept rows on disk: an anonymous temporary file of row-major float64 blocks, read back in chunks.

    The file has no name (deleted when closed or when the process ends) and lies in the folder that
    ``TMPDIR`` names (:func:`tempfile.gettempdir`). It is unbuffered: a write that fails (no room) fails
    in :meth:`write`, where it is a :class:`SpoolError`, never later in a flush.
    """

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.n = 0
        try:
            self.file = tempfile.TemporaryFile(prefix="dpo_rlhf_audit_", buffering=0)
        except OSError as err:
            raise SpoolError(f"cannot create the temporary file of the kept rows in {tempfile.gettempdir()} "
                             f"({err.strerror or err}); set TMPDIR to a writable folder") from None
        self._finalizer = weakref.finalize(self, _close_quietly, self.file)  # closed with its owner

    def close(self) -> None:
        """Close (and so delete) the file now."""
        self._finalizer()

    def write(self, block: np.ndarray) -> None:
        """Append rows (m, k), k = len(names); m may be 0 (a chunk whose rows were all skipped)."""
        if not len(block):
            return  # (memoryview cannot cast an empty 2-D view)
        view = memoryview(np.ascontiguousarray(block, dtype=np.float64)).cast("B")
        try:
            while view.nbytes:  # an unbuffered write may take only part of the bytes
                view = view[self.file.write(view):]
        except OSError as err:
            raise SpoolError(f"cannot write the kept rows to a temporary file in {tempfile.gettempdir()} "
                             f"({err.strerror or err}; they take {8 * len(self.names)} bytes a row); set TMPDIR "
                             "to a folder with room") from None
        self.n += len(block)

    def chunks(self, rows: int) -> Iterator[dict[str, np.ndarray]]:
        """The rows in order, ``rows`` at a time, as name -> (m,) float64. Several readers may interleave."""
        k = len(self.names)
        for start in range(0, self.n, rows):
            m = min(rows, self.n - start)
            block = np.empty((m, k), dtype=np.float64)
            view, offset = memoryview(block).cast("B"), 8 * k * start
            try:
                while view.nbytes:  # each read from its own place: another reader may have moved the file
                    self.file.seek(offset)
                    got = self.file.readinto(view)
                    if not got:
                        raise SpoolError("the temporary file of the kept rows is shorter than what was written to it")
                    view, offset = view[got:], offset + got
            except OSError as err:
                raise SpoolError(f"cannot read the temporary file of the kept rows back ({err.strerror or err})"
                                 ) from None
            yield {name: block[:, j].copy() for j, name in enumerate(self.names)}  # contiguous, writable


class SpooledColumns(Mapping):
    """The columns of a spooled :class:`PairData`: names as a mapping's keys; ``columns[name]`` reads one
    whole column into memory (8 bytes a row); :meth:`PairData.chunks` reads them a chunk at a time."""

    def __init__(self, spool: _Spool):
        self.spool = spool

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.spool.names:
            raise KeyError(name)
        parts = [c[name] for c in self.spool.chunks(STAT_CHUNK)]
        return np.concatenate(parts) if parts else np.empty(0)

    def __contains__(self, name) -> bool:  # Mapping's would read the whole column (__getitem__)
        return name in self.spool.names

    def __iter__(self) -> Iterator[str]:
        return iter(self.spool.names)

    def __len__(self) -> int:
        return len(self.spool.names)


@dataclass
class PairData:
    """The numeric columns of the kept rows (float64, one length) and what was read.

    columns: name -> (n,) array in memory, or :class:`SpooledColumns` (kept on disk; ``read_pairs(spool=True)``).
    Read the rows a chunk at a time with :meth:`chunks`, whichever the kind.
    """

    path: Path
    fmt: str
    columns: Mapping[str, np.ndarray]
    rows_read: int  # data rows seen, kept or skipped
    blank_lines: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> rows
    skipped_examples: list[str] = field(default_factory=list)
    logps_kind: str = "sum"  # "mean" for the paper authors' export (per-token means)
    aliases_used: dict[str, str] = field(default_factory=dict)  # file column -> our column

    @property
    def n_pairs(self) -> int:
        if isinstance(self.columns, SpooledColumns):
            return self.columns.spool.n
        return len(self.columns[REQUIRED[0]])

    def chunks(self, rows: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """The kept rows in file order, ``rows`` (default :data:`STAT_CHUNK`) at a time, as name -> (m,) float64;
        the same chunks at every call."""
        rows = STAT_CHUNK if rows is None else rows
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        if isinstance(self.columns, SpooledColumns):
            yield from self.columns.spool.chunks(rows)
            return
        for start in range(0, self.n_pairs, rows):
            yield {name: col[start:start + rows] for name, col in self.columns.items()}

    @classmethod
    def from_arrays(cls, columns: Mapping[str, Any], *, skip_invalid: bool = False, name: str = "<arrays>"
                    ) -> "PairData":
        """The columns of pairs a Python caller already holds, checked as a file's rows are.

        columns: column name -> a 1-D array (or sequence) of numbers, one entry per pair, all of one length, named
        as in a file (``ref_chosen_logps``, ``ref_rejected_logps`` required, or older TRL's ``reference_*``; the
        optional columns in pairs; other names are ignored). Every value passes the checks a file's values pass
        (finite, log-probabilities <= 0, whole lengths > 0): a bad one is an :class:`AuditInputError` naming its
        row (1-based) and column, or with ``skip_invalid`` its row is dropped and counted. The kept columns are
        float64 copies in memory; ``name`` stands for the file name in the audit's output.
        """
        from dpo_rlhf_checks.audit.read import _pairs_from_arrays  # (read imports this module)

        return _pairs_from_arrays(columns, skip_invalid=skip_invalid, name=name)

    def close(self) -> None:
        """Delete the temporary file of spooled data now (it goes with the object otherwise); nothing in memory."""
        if isinstance(self.columns, SpooledColumns):
            self.columns.spool.close()
