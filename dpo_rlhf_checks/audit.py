"""Audit a preference data set: ``python paper_checks.py audit FILE [options]``.

For people's own data, the questions the common trainers do not log (docs/theory.md §3, §6, §7, §10):
how many pairs violate the implicit assumption ``beta delta_ref + dr > 0``, whether the RLHF
optimum and the trained policy rank the preferred response first, how many pairs sit in the
undesirable space ``U = {delta_ref < delta < 0}``, which loss level certifies alignment per pair,
and how many pairs each CPO variant's loss certifies.

Input: JSON Lines (one object per line) or CSV (a header line), chosen by the file extension
(``.jsonl``, ``.ndjson``, ``.json`` / ``.csv``) or, for any other extension, by the first
character (``{`` means JSON Lines). One preference pair per row; columns as the common trainers
name them:

    ref_chosen_logps, ref_rejected_logps     required; reference log-probabilities (<= 0)
    chosen_logps, rejected_logps             optional; a trained policy's log-probabilities (<= 0)
    chosen_reward, rejected_reward           optional; reward-model scores (finite)
    chosen_length, rejected_length           optional; token counts (whole numbers > 0)

Optional columns come in pairs; which ones a JSON Lines file uses is read from its first row
(CSV: from the header), and every row must then have them. Other columns are ignored. Blank
lines are not rows; they are counted and reported. Log-probabilities are taken as given and
treated as summed sequence log-probabilities (docs/theory.md notation); where lengths are given,
everything is recomputed on the per-token means ``logps / length`` as well (``per_token_mean``).

Bad data (a missing column or value, a malformed line, a non-numeric, NaN or infinite value, a
positive log-probability, a non-positive or fractional length, an empty file) stops the audit
with one line naming the data row (1-based, the header and blank lines not counted), the file
line and the column, and exit code 2. ``--skip-invalid`` drops such rows instead and reports how
many, by reason. Nothing is dropped silently.

Streaming: the file is parsed in chunks of rows straight into numpy (json.loads on a chunk,
numpy.loadtxt for CSV; a slow per-row path only for a chunk with a problem, to name it), and only
the numeric columns are kept, as float64. The command line keeps them on disk, in an anonymous
temporary file (``spool=True``: 8 bytes per used column and row, in the folder ``TMPDIR`` names),
and computes every statistic in passes over chunks of :data:`STAT_CHUNK` rows, so its memory does
not grow with the number of rows: counts are exact integers, quantiles are exactly numpy's
(:mod:`dpo_rlhf_checks.stream_stats`, a few passes), means add per-chunk sums exactly. The library
call ``read_pairs(path)`` keeps the columns in memory; :func:`audit` streams over either. Pairs already held as
arrays: ``PairData.from_arrays(columns)`` (the same checks, rows named by number) or ``audit_arrays(columns, config)``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import operator
import re
import sys
import tempfile
import textwrap
import warnings
import weakref
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple

import numpy as np
import torch

from dpo_rlhf_checks import losses as L
from dpo_rlhf_checks.cli import BadInput, OneLineParser, no_duplicate_keys, output_dir_problem, short_message
from dpo_rlhf_checks.paths import output_overwrites_input
from dpo_rlhf_checks.result import to_jsonable
from dpo_rlhf_checks.stream_stats import ExactQuantiles

try:  # Optional, not a dependency: orjson decodes JSON ~3x faster, to the same float64 numbers (both round
    # correctly). It only serves the fast path; rows with a problem are re-read with json to name it.
    # The parser used is reported in the output.
    import orjson

    _fast_json_loads, JSON_PARSER = orjson.loads, "orjson"
except ImportError:
    _fast_json_loads, JSON_PARSER = json.loads, "json"

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
FORMATS = ("jsonl", "csv")
# Rows per chunk of the statistics' passes. Fixed, so the numbers do not depend on how the file was read; a power of
# two, so chunk boundaries fall on torch's SIMD blocks: torch computes the last len % 16 elements of a tensor on a
# scalar path (AVX512 here) whose logaddexp can differ in the last bit, and a chunk length that is not a multiple
# of the block would move some per-pair losses, and so a loss quantile, by an ulp from the one-array computation.
STAT_CHUNK = 1 << 18
# Characters of text parsed at a time: a chunk of the file holds at most --chunk-rows rows AND about this many
# characters (whole lines: one line more at most), so the reading's memory does not grow with the width of the
# rows either (a 10 KB text column, a 50 MB line). Parsing a chunk takes a few times its size in Python objects
# (the text, its JSON array, the decoded objects): tens of MB, measured in benchmarks/bench_audit.py --wide.
CHUNK_CHARS = 1 << 24
MAX_CHUNK_ROWS = 10_000_000  # --chunk-rows above this is refused: the character bound decides long before
MAX_EXAMPLES = 5  # skipped-row messages kept for the report
# A log-probability below this is rejected (named by row): differences of two log-probabilities and their multiples
# by beta must stay finite in float64. Real sequence log-probabilities are many orders of magnitude smaller.
MIN_LOGP = -1e300
VALUE_CHARS = 40  # a bad value echoed in a message is cut to about this many characters


def _short(value: Any) -> str:
    """repr(value) cut to VALUE_CHARS characters (a 400-digit value does not flood a one-line message)."""
    text = repr(value)
    return text if len(text) <= VALUE_CHARS else f"{text[:VALUE_CHARS - 12]}...({len(text)} chars)"


class AuditInputError(ValueError):
    """Bad input data; the message names the row, line and column."""


class SpoolError(AuditInputError):
    """The kept rows could not be written to the temporary file (no room, no writable TMPDIR)."""


class _SlowPath(Exception):
    """A chunk the fast parser cannot take as is; the per-row parser will name the problem."""


# ----------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class AuditConfig:
    """The scientific settings of one audit; every one is printed with the result.

    betas: the KL weights to evaluate, each finite and > 0, no duplicates (default 0.1, the
        authors' code default).
    margin: the certificate margin m >= 0: a pair is certified when its loss proves delta > m;
        also the cpo_clip margin, ``T = max(delta_ref, m)`` (default 0, the code's clip).
    cpo_gamma: gamma of cpo_eq17, cpo_smooth and cpo_easy (default 0.5, the code's).
    cpo_tau: tau > 0 of cpo_smooth (default 2, the code's).
    cpo_alpha: alpha > 0 of cpo_smooth (default 1, the code's).
    beta_grid: the betas of the violation-rate figure, each > 0.
    """

    betas: tuple[float, ...] = (0.1,)
    margin: float = 0.0
    cpo_gamma: float = 0.5
    cpo_tau: float = 2.0
    cpo_alpha: float = 1.0
    beta_grid: tuple[float, ...] = tuple(float(b) for b in np.logspace(-3, 3, 61))

    def __post_init__(self) -> None:
        if not self.betas:
            raise ValueError("need at least one beta")
        for b in self.betas + self.beta_grid:
            if not (math.isfinite(b) and b > 0):
                raise ValueError(f"every beta must be a finite number > 0, got {b!r}")
        if len(set(self.betas)) != len(self.betas):
            raise ValueError(f"duplicate beta in {self.betas}")
        keys: dict[str, float] = {}
        for b in self.betas:  # results are keyed by beta_key (6 significant digits): two betas must not share one
            if beta_key(b) in keys:
                raise ValueError(f"betas {keys[beta_key(b)]!r} and {b!r} both print as {beta_key(b)!r}: give betas "
                                 "that differ within 6 significant digits")
            keys[beta_key(b)] = b
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0, got {self.margin!r}")
        if not math.isfinite(self.cpo_gamma):
            raise ValueError(f"cpo_gamma must be finite, got {self.cpo_gamma!r}")
        for name in ("cpo_tau", "cpo_alpha"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

    def variants(self) -> dict[str, dict[str, float]]:
        """The target-form losses audited and their parameters (besides beta)."""
        return {
            "dpo": {},
            "cpo_eq17": {"gamma": self.cpo_gamma},
            "cpo_clip": {"margin": self.margin},
            "cpo_smooth": {"gamma": self.cpo_gamma, "tau": self.cpo_tau, "alpha": self.cpo_alpha},
            "cpo_easy": {"gamma": self.cpo_gamma},
        }


def beta_key(beta: float) -> str:
    """The JSON key of a beta (``0.1`` -> ``"0.1"``)."""
    return f"{beta:g}"


# ----------------------------------------------------------------------------------------------
# Reading


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
        return _pairs_from_arrays(columns, skip_invalid=skip_invalid, name=name)

    def close(self) -> None:
        """Delete the temporary file of spooled data now (it goes with the object otherwise); nothing in memory."""
        if isinstance(self.columns, SpooledColumns):
            self.columns.spool.close()


def detect_format(path: Path) -> str:
    """"jsonl" or "csv" from the extension, else from the first non-blank character."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    with open(path, encoding="utf-8-sig") as f:
        head = f.read(1 << 16).lstrip()
    return "jsonl" if head.startswith(("{", "[")) else "csv"


def _where(row: int, line: int | None, column: str | None) -> str:
    place = f"row {row}" if line is None else f"row {row} (line {line})"
    return place if column is None else f"{place}, column {column!r}"


def _line(lines: np.ndarray | None, i: int) -> int | None:
    return None if lines is None else int(lines[i])


class _Collector:
    """Validates chunks of parsed values and keeps the good rows."""

    def __init__(self, columns: tuple[str, ...], skip_invalid: bool, spool: bool = False):
        self.columns = columns
        self.skip_invalid = skip_invalid
        # Kept rows: on disk (spool), or one list of blocks per column; the final columns are joined one at a
        # time, each freeing its blocks, so the peak is the kept data plus one column (not twice the kept data).
        self.spool = _Spool(tuple(ALIASES.get(c, c) for c in columns)) if spool else None
        self.parts: list[list[np.ndarray]] = [[] for _ in columns]
        self.rows_read = 0
        self.skipped: Counter = Counter()
        self.examples: list[str] = []

    def bad_row(self, line: int, column: str | None, reason: str, kind: str) -> None:
        """A row that could not be parsed: raise, or count it when skipping."""
        self.rows_read += 1
        message = f"{_where(self.rows_read, line, column)}: {reason}"
        if not self.skip_invalid:
            raise AuditInputError(message)
        self.skipped[kind] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(message)

    def add(self, values: np.ndarray, lines: np.ndarray | None, rows: np.ndarray | None = None) -> None:
        """Validate parsed rows (n, k) with their file lines (n,; None for arrays, which have none) and keep the
        good ones.

        rows: their 1-based data-row numbers; by default the next n after those read so far.
        """
        n = len(values)
        if rows is None:
            rows = self.rows_read + 1 + np.arange(n)
            self.rows_read += n
        bad = np.zeros(n, dtype=bool)
        problems = []  # (row index, column, reason, kind) of the first problem of each column
        for j, name in enumerate(self.columns):
            col = values[:, j]
            checks = [(~np.isfinite(col), "not a finite number", "non-finite value")]
            if name in LOGP_COLUMNS:
                checks.append((col > 0, "a positive log-probability (a log-probability is <= 0)",
                               "positive log-probability"))
                checks.append((col < MIN_LOGP, f"a log-probability below {MIN_LOGP:g} (differences of log-probabilities "
                               "would overflow float64)", "log-probability out of range"))
            if name in LENGTH_COLUMNS:
                checks.append(((col <= 0) | (col != np.floor(col)), "a length must be a whole number > 0",
                               "non-positive or fractional length"))
            for mask, reason, kind in checks:
                mask = mask & ~bad  # a row is counted once, under its first problem
                if mask.any():
                    idx = np.flatnonzero(mask)
                    problems.append((idx[0], name, f"{reason}, got {float(col[idx[0]])!r}", kind))
                    bad |= mask
                    if self.skip_invalid:
                        self.skipped[kind] += len(idx)
                        for i in idx[: MAX_EXAMPLES - len(self.examples)]:
                            self.examples.append(f"{_where(int(rows[i]), _line(lines, i), name)}: {reason}, "
                                                 f"got {float(col[i])!r}")
        if problems and not self.skip_invalid:
            i, name, reason, _ = min(problems, key=lambda p: (p[0], self.columns.index(p[1])))
            raise AuditInputError(f"{_where(int(rows[i]), _line(lines, i), name)}: {reason}")
        kept = values[~bad] if bad.any() else values
        if self.spool is not None:
            self.spool.write(kept)
            return
        for j, blocks in enumerate(self.parts):
            blocks.append(np.ascontiguousarray(kept[:, j]))

    def result(self, path: Path, fmt: str, blank_lines: int) -> PairData:
        if self.spool is not None:
            return PairData(path, fmt, SpooledColumns(self.spool), self.rows_read, blank_lines, self.skipped,
                            self.examples)
        columns = {}
        for j, name in enumerate(self.columns):
            blocks, self.parts[j] = self.parts[j], []
            columns[ALIASES.get(name, name)] = np.concatenate(blocks) if blocks else np.empty(0)
            del blocks
        return PairData(path, fmt, columns, self.rows_read, blank_lines, self.skipped, self.examples)


def _used_columns(present: Iterable[str], where: str) -> tuple[str, ...]:
    """The recognised columns in use (as the file names them: an alias stands for ours), given the header / first row."""
    present = set(present)
    for alias, name in ALIASES.items():
        if alias in present and name in present:
            raise AuditInputError(f"{where}: both {name!r} and {alias!r} are given ({alias!r} is older TRL's name for "
                                  f"{name!r}); they may differ, so the audit will not choose: keep one")
    used = [next((a for a, c in ALIASES.items() if c == name and a in present and name not in present), name)
            for name in REQUIRED]
    for a, b in OPTIONAL_PAIRS:
        if (a in present) != (b in present):
            have, lack = (a, b) if a in present else (b, a)
            raise AuditInputError(f"{where}: column {have!r} is given without {lack!r}; optional columns come in "
                                  "pairs")
        if a in present:
            used += [a, b]
    return tuple(used)


def _valid_first_row(obj: dict) -> bool:
    """Whether a JSON Lines row would pass every check with the columns it names (used to pick the row that
    decides the columns under --skip-invalid)."""
    try:
        used = _used_columns(obj, "")
    except AuditInputError:
        return False
    for name in used:
        v = obj.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        try:
            v = float(v)
        except OverflowError:
            return False
        if not math.isfinite(v) or (name in LOGP_COLUMNS and not MIN_LOGP <= v <= 0) or (
                name in LENGTH_COLUMNS and (v <= 0 or v != math.floor(v))):
            return False
    return True


def _parse_number(text: str) -> float:
    """A float from a CSV cell, as strict as numpy.loadtxt (no '_' digit separators)."""
    if "_" in text:
        raise ValueError(text)
    return float(text)


_KEY_END = re.compile(r'"[ \t\r]*:')  # the end of an object key: a closing quote, JSON whitespace, a colon
_ESCAPED_KEY_END = re.compile(r'\\"[ \t\r]*:')  # the same after a backslash: inside a string, or a key ending in \\


def _key_count(block: str) -> int | None:
    """The number of object keys written in ``block`` (JSON text), counted on the text; None where the text cannot
    tell (a quote after a backslash before a colon). Every counted match ends a key: inside a JSON string a quote
    is always escaped, and escaped ones are not counted. Nested objects' keys count too, so a row holding an object
    sends its chunk to the per-row parser (which checks every level): slower, never wrong."""
    if '\\"' in block and _ESCAPED_KEY_END.search(block):
        return None
    if '" ' in block or '"\t' in block or '"\r' in block:
        return sum(1 for _ in _KEY_END.finditer(block))
    return block.count('":')


def _read_jsonl(f, collector: _Collector, used: tuple[str, ...], chunk_rows: int, first_line: int,
                line_chars: int) -> int:
    """The rest of a JSON Lines file, in blocks of about ``chunk_rows`` lines (``line_chars`` each), at most about
    :data:`CHUNK_CHARS` characters (and the rest of the last line)."""
    getter = operator.itemgetter(*used)
    unused = [c for c in NAMES if c not in used]
    block_chars = max(1, min(chunk_rows * max(line_chars, 16), CHUNK_CHARS))
    line_no = first_line  # lines consumed so far
    blank = 0
    while True:
        block = f.read(block_chars)
        if not block:
            return blank
        if not block.endswith("\n"):
            block += f.readline()  # complete the last line
        n_lines = block.count("\n") + (not block.endswith("\n"))
        start = line_no
        line_no += n_lines
        try:  # fast path: the whole block as one JSON array; any irregularity goes to the slow path
            # One line per element: a blank line makes ",," and a line with two values makes too many elements.
            objs = _fast_json_loads("[" + block.rstrip("\n").replace("\n", ",") + "]")
            if len(objs) != n_lines:
                raise _SlowPath
            # Each recognised key exactly once per line if used, never if not: a duplicate key (which json would
            # resolve silently to its last value) or a column absent from the first row goes to the slow path.
            if any(block.count(f'"{c}"') != (n_lines if c in used else 0) for c in NAMES):
                raise _SlowPath
            # A duplicate of any other key (json keeps its last value silently; the per-row parser rejects it,
            # as solve does): the objects must hold as many keys as the text names.
            if _key_count(block) != sum(map(len, objs)):
                raise _SlowPath
            rows = list(map(getter, objs))  # KeyError / TypeError for a missing key or a non-object
            if not set(map(type, itertools.chain.from_iterable(rows))) <= {float, int}:
                raise _SlowPath
            values = np.array(rows, dtype=np.float64).reshape(len(rows), len(used))
        except (ValueError, KeyError, TypeError, OverflowError, _SlowPath):
            lines = block.split("\n")
            blank += _slow_jsonl(lines[:-1] if block.endswith("\n") else lines, start, collector, used, unused)
            continue
        collector.add(values, np.arange(start + 1, start + 1 + n_lines))


class _RowBuffer:
    """Rows a slow (row-by-row) parser accepted, in order, flushed to the collector in one block.

    A bad row first flushes the rows parsed before it (without --skip-invalid the bad row raises,
    and the rows before it come first in the file).
    """

    def __init__(self, collector: _Collector):
        self.collector = collector
        self.values: list[list[float]] = []
        self.line_numbers: list[int] = []
        self.row_numbers: list[int] = []

    def flush(self) -> None:
        if self.values:
            self.collector.add(np.array(self.values, dtype=np.float64), np.array(self.line_numbers),
                               np.array(self.row_numbers))
            self.values, self.line_numbers, self.row_numbers = [], [], []

    def bad(self, line: int, column, reason: str, kind: str) -> None:
        if not self.collector.skip_invalid:
            self.flush()
        self.collector.bad_row(line, column, reason, kind)

    def accept(self, line: int, row: list[float]) -> None:
        self.collector.rows_read += 1
        self.values.append(row)
        self.line_numbers.append(line)
        self.row_numbers.append(self.collector.rows_read)


def _slow_jsonl(lines, start, collector: _Collector, used, unused) -> int:
    """Parse line by line, naming the first problem of each bad row."""
    blank = 0
    rows = _RowBuffer(collector)

    for offset, text in enumerate(lines):
        line = start + offset + 1
        if not text.strip():
            blank += 1
            continue
        try:
            obj = json.loads(text, object_pairs_hook=no_duplicate_keys)
        except json.JSONDecodeError as err:
            rows.bad(line, None, f"malformed JSON ({err.msg} at character {err.colno})", "malformed line")
            continue
        except BadInput as err:
            rows.bad(line, None, str(err), "duplicate key")
            continue
        except RecursionError:
            rows.bad(line, None, "malformed JSON (nested too deeply)", "malformed line")
            continue
        if not isinstance(obj, dict):
            rows.bad(line, None, f"not a JSON object but {type(obj).__name__}", "malformed line")
            continue
        row, problem = [], None
        for name in used:
            if name not in obj:
                problem = (name, "missing value (the key is absent)", "missing value")
                break
            v = obj[name]
            if v is None:
                problem = (name, "missing value (null)", "missing value")
                break
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                problem = (name, f"non-numeric value {_short(v)}", "non-numeric value")
                break
            try:
                row.append(float(v))
            except OverflowError:
                problem = (name, f"value {_short(v)} is beyond the float range", "non-finite value")
                break
        if problem is None:
            extra = [c for c in unused if c in obj]
            if extra:
                problem = (extra[0], "this column is absent from the first row; every row needs the same "
                           "columns", "inconsistent columns")
        if problem is not None:
            rows.bad(line, *problem)
            continue
        rows.accept(line, row)
    rows.flush()
    return blank


def _read_csv(f, collector: _Collector, header: list[str], used: tuple[str, ...], first_line: int,
              chunk_rows: int) -> int:
    ncols = len(header)
    idx = tuple(header.index(c) for c in used)
    line_no = first_line  # lines consumed so far
    blank = 0
    batch, taken = [], 0  # whole lines read, about CHUNK_CHARS characters; the first `taken` of them parsed
    while True:
        if taken == len(batch):
            batch, taken = f.readlines(CHUNK_CHARS), 0
            if not batch:
                return blank
        lines = batch[taken:taken + chunk_rows]
        taken += len(lines)
        joined = "".join(lines)
        if '"' in joined:
            # Quoted cells may hold commas or line breaks: the csv module reads the rest of the file.
            return blank + _csv_module_rows(itertools.chain(lines, batch[taken:], f), line_no, collector, ncols,
                                            idx, used, chunk_rows)
        start = line_no
        line_no += len(lines)
        try:  # fast path: every line a record of ncols numeric-where-used fields
            if joined.count(",") != (ncols - 1) * len(lines) or any(c != ncols - 1 for c in
                                                                    map(operator.methodcaller("count", ","), lines)):
                raise _SlowPath
            values = np.loadtxt(lines, delimiter=",", dtype=np.float64, usecols=idx, ndmin=2, comments=None)
            if len(values) != len(lines):
                raise _SlowPath
        except (ValueError, _SlowPath):
            records = [(start + i + 1, next(csv.reader([text]), [])) for i, text in enumerate(lines)]
            blank += _slow_csv(records, collector, ncols, idx, used)
            continue
        collector.add(values, np.arange(start + 1, start + 1 + len(lines)))


def _csv_module_rows(line_iter, line_offset, collector, ncols, idx, used, chunk_rows) -> int:
    reader = csv.reader(line_iter)
    blank = 0
    prev_end = 0

    def records() -> Iterator[tuple[int, list[str]]]:
        nonlocal prev_end
        for rec in reader:
            start = prev_end + 1
            prev_end = reader.line_num
            yield line_offset + start, rec

    it = records()
    while True:
        chunk, chars = [], 0  # at most chunk_rows records and about CHUNK_CHARS characters
        for record in it:
            chunk.append(record)
            chars += sum(map(len, record[1]))
            if len(chunk) == chunk_rows or chars >= CHUNK_CHARS:
                break
        if not chunk:
            return blank
        try:
            if any(len(rec) != ncols for _, rec in chunk):
                raise _SlowPath
            getter = operator.itemgetter(*idx)
            cells = [getter(rec) for _, rec in chunk]
            if any("_" in c or not c.strip() for row in cells for c in row):
                raise _SlowPath
            values = np.array(cells, dtype=np.float64).reshape(len(cells), len(idx))
        except (ValueError, _SlowPath):
            blank += _slow_csv(chunk, collector, ncols, idx, used)
            continue
        collector.add(values, np.array([line for line, _ in chunk]))


def _slow_csv(records, collector: _Collector, ncols, idx, used) -> int:
    """Record by record, naming the first problem of each bad row."""
    blank = 0
    rows = _RowBuffer(collector)

    for line, rec in records:
        if not rec or (len(rec) == 1 and not rec[0].strip()):
            blank += 1
            continue
        if len(rec) != ncols:
            rows.bad(line, None, f"malformed line: {len(rec)} fields, the header has {ncols}", "malformed line")
            continue
        row, problem = [], None
        for name, i in zip(used, idx):
            text = rec[i].strip()
            if not text:
                problem = (name, "missing value (empty cell)", "missing value")
                break
            try:
                row.append(_parse_number(text))
            except ValueError:
                problem = (name, f"non-numeric value {_short(text)}", "non-numeric value")
                break
        if problem is not None:
            rows.bad(line, *problem)
            continue
        rows.accept(line, row)
    rows.flush()
    return blank


def read_pairs(path, *, fmt: str | None = None, skip_invalid: bool = False, chunk_rows: int = 100_000,
               spool: bool = False) -> PairData:
    """Read a preference file (JSON Lines or CSV) into float64 columns, streaming in chunks.

    fmt: "jsonl", "csv", or None to detect it (:func:`detect_format`). skip_invalid: drop bad rows
    (counted in ``PairData.skipped``) instead of raising. chunk_rows: rows parsed at a time, 1 to
    :data:`MAX_CHUNK_ROWS` (a chunk also stops at about :data:`CHUNK_CHARS` characters).
    spool: keep the rows in a temporary file, not in memory (memory then does not grow with the
    file; :class:`SpooledColumns`). Raises :class:`AuditInputError` naming the row, line and column
    of the first bad row, or for a file with no data rows; :class:`SpoolError` when the temporary
    file cannot be written.
    """
    path = Path(path)
    if not 1 <= chunk_rows <= MAX_CHUNK_ROWS:
        raise ValueError(f"chunk_rows must be between 1 and {MAX_CHUNK_ROWS}, got {chunk_rows}")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    field_limit = csv.field_size_limit()
    csv.field_size_limit(max(field_limit, 2**31 - 1))  # a long quoted text cell is data, not an error (restored below)
    try:
        return _read_file(path, fmt, skip_invalid, chunk_rows, spool)
    finally:
        csv.field_size_limit(field_limit)


def _read_file(path: Path, fmt: str, skip_invalid: bool, chunk_rows: int, spool: bool) -> PairData:
    """:func:`read_pairs` once its arguments are checked."""
    with open(path, encoding="utf-8-sig", newline="" if fmt == "csv" else None) as f:
        if fmt == "jsonl":
            # The first row that is a JSON object names the optional columns in use; with --skip-invalid, the
            # first VALID row does (a bad first row must not decide the columns), and bad lines before it are
            # skipped like any other.
            buffered, obj = [], None
            for text in f:
                buffered.append(text)
                if not text.strip():
                    continue
                if text.lstrip().startswith("[") and not any(t.strip() for t in buffered[:-1]):
                    raise AuditInputError(f"line {len(buffered)}: a JSON array, not JSON Lines (one object per line)")
                try:
                    candidate = json.loads(text, object_pairs_hook=no_duplicate_keys)
                except (json.JSONDecodeError, BadInput, RecursionError):
                    candidate = None
                if isinstance(candidate, dict) and (not skip_invalid or _valid_first_row(candidate)):
                    obj = candidate
                    break
                if not skip_invalid:
                    break  # the per-row parser below names the problem
            if not any(t.strip() for t in buffered):
                raise AuditInputError("empty file: no data rows")
            row = sum(1 for t in buffered if t.strip())
            used = _used_columns(obj or {}, _where(row, len(buffered), None))
            present = set(obj or ())
            unused = [c for c in NAMES if c not in used]
            collector = _Collector(used, skip_invalid, spool)
            blank = _slow_jsonl(buffered, 0, collector, used, unused)
            line_chars = max(len(t) for t in buffered)
            blank += _read_jsonl(f, collector, used, chunk_rows, first_line=len(buffered), line_chars=line_chars)
        else:
            reader = csv.reader(f)
            header, blank = None, 0
            for header in reader:
                if header and any(c.strip() for c in header):
                    break
                blank += 1
                header = None
            if header is None:
                raise AuditInputError("empty file: no header and no data rows")
            header_line = reader.line_num
            header = [c.strip() for c in header]
            dup = sorted(c for c, k in Counter(header).items() if k > 1)
            if dup:
                raise AuditInputError(f"line {header_line} (header): duplicate column(s) {dup}")
            missing = [c for c in REQUIRED if c not in header and not any(ALIASES.get(a) == c for a in header)]
            if missing:
                raise AuditInputError(f"line {header_line} (header): missing column {missing[0]!r}; the header has "
                                      f"{header}")
            used = _used_columns(header, f"line {header_line} (header)")
            present = set(header)
            collector = _Collector(used, skip_invalid, spool)
            blank += _read_csv(f, collector, header, used, header_line, chunk_rows)
    data = collector.result(path, fmt, blank)
    data.aliases_used = {a: ALIASES[a] for a in used if a in ALIASES}
    if present & set(AUTHORS_EXPORT_MARKERS):
        data.logps_kind = "mean"
    if data.rows_read == 0:
        raise AuditInputError("no data rows" + (" (only a header)" if fmt == "csv" else ""))
    if data.n_pairs == 0:
        raise AuditInputError(f"all {data.rows_read} data rows are invalid (skipped); nothing to audit")
    return data


def _pairs_from_arrays(columns: Mapping[str, Any], *, skip_invalid: bool, name: str) -> PairData:
    """:meth:`PairData.from_arrays`."""
    if not isinstance(columns, Mapping):
        raise TypeError(f"columns must be a mapping of column name -> array, got {type(columns).__name__}")
    used = _used_columns(columns, "columns")
    missing = [c for c in used if c not in columns]
    if missing:
        raise AuditInputError(f"columns: missing column {missing[0]!r}; given {sorted(map(str, columns))}")
    arrays = []
    for c in used:
        arr = np.asarray(columns[c])
        if arr.ndim != 1:
            raise AuditInputError(f"column {c!r}: a 1-D array of one value per pair is needed, got shape {arr.shape}")
        if arr.dtype.kind not in "iuf":  # bools and strings are no numbers here, as in a file
            raise AuditInputError(f"column {c!r}: numbers are needed, got dtype {arr.dtype}")
        arrays.append(arr.astype(np.float64))
    lengths = {c: len(a) for c, a in zip(used, arrays)}
    if len(set(lengths.values())) > 1:
        raise AuditInputError(f"columns of different lengths: {lengths}")
    n = len(arrays[0])
    if n == 0:
        raise AuditInputError("no pairs: the columns are empty")
    collector = _Collector(used, skip_invalid)
    collector.add(np.column_stack(arrays), None)
    data = collector.result(Path(name), "arrays", 0)
    data.aliases_used = {a: ALIASES[a] for a in used if a in ALIASES}
    if data.n_pairs == 0:
        raise AuditInputError(f"all {n} pairs are invalid (skipped); nothing to audit")
    return data


# ----------------------------------------------------------------------------------------------
# Statistics


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x)  # shares memory; float64


def _count(mask) -> int:
    return int(np.count_nonzero(mask)) if isinstance(mask, np.ndarray) else int(torch.count_nonzero(mask))


class PairChunk(NamedTuple):
    """One chunk of pairs, (m,) float64 each: the reference's log-probabilities of chosen / rejected (rc, rr),
    the policy's (pc, pr; None without them) and the reward gap ``dr = chosen_reward - rejected_reward`` (or None)."""

    rc: np.ndarray
    rr: np.ndarray
    pc: np.ndarray | None
    pr: np.ndarray | None
    dr: np.ndarray | None


def pair_chunk(c: Mapping[str, np.ndarray], *, per_token: bool = False) -> PairChunk:
    """The :class:`PairChunk` of one chunk of columns (:meth:`PairData.chunks`).

    per_token: the log-probabilities divided by the lengths (per-token means); the columns must have them.
    """
    rc, rr = c["ref_chosen_logps"], c["ref_rejected_logps"]
    pc, pr = c.get("chosen_logps"), c.get("rejected_logps")
    if per_token:
        lc, lr = c["chosen_length"], c["rejected_length"]
        rc, rr = rc / lc, rr / lr
        pc, pr = (None, None) if pc is None else (pc / lc, pr / lr)
    dr = c["chosen_reward"] - c["rejected_reward"] if "chosen_reward" in c else None
    return PairChunk(rc, rr, pc, pr, dr)


def pair_chunks(data: PairData, *, per_token: bool = False, rows: int | None = None
                ) -> Callable[[], Iterator[PairChunk]]:
    """A callable that gives the data's :class:`PairChunk` s (:func:`pair_chunk`), the same ones at every call
    (one call, one pass)."""
    def chunks() -> Iterator[PairChunk]:
        for c in data.chunks(rows):
            yield pair_chunk(c, per_token=per_token)

    return chunks


def pair_statistics(chunks: Callable[[], Iterable[PairChunk]], n: int, *, config: AuditConfig,
                    has_policy: bool, has_reward: bool, per_token: bool = False
                    ) -> tuple[dict[str, Any], dict[str, str]]:
    """The audit's numbers for one choice of log-probabilities (sums, or per-token means), streamed.

    chunks: a callable giving the same :class:`PairChunk` s at every call (:func:`pair_chunks`); n: their total
    length. Pass 1 counts everything; the quantiles take a few more passes, which recompute only the losses they
    need, so memory does not grow with n. Fractions are exact counts over n; quantiles equal ``np.quantile``.
    has_policy / has_reward: the chunks carry pc, pr / dr. per_token: the numbers are per-token means (then
    cpo_easy, defined on means, is audited too). Returns (statistics, reasons for the ones that could not be
    computed). Definitions (docs/theory.md): delta_ref = rc - rr; ranking accuracy 1[delta >= 0] (Chen et al.
    2024); the assumption (§3) holds for a pair when beta delta_ref + dr > 0, the RLHF optimum's
    delta* = delta_ref + dr/beta; U = {delta_ref < delta < 0} (§6); l_crit = softplus(beta delta_ref) (§7).
    """
    from dpo_rlhf_checks import audit_diagnostics as D

    betas = config.betas
    keys = [beta_key(b) for b in betas]
    variants = {name: params for name, params in config.variants().items() if per_token or name != "cpo_easy"}
    why: dict[str, str] = {}
    count: Counter = Counter()
    diag: Counter = Counter()
    crit = {k: ExactQuantiles(n=n) for k in keys}  # l_crit per pair, at each beta
    dpo = {k: ExactQuantiles(n=n) for k in keys} if has_policy else {}  # the DPO loss per pair, at each beta
    target_ok = {name: {k: True for k in keys} for name in variants}

    def quantile_pass(ch: PairChunk, pending: set[tuple[str, str]]) -> None:
        """Feed one chunk's losses to the quantile accumulators in ``pending`` ((kind, beta key) pairs)."""
        rc_t, rr_t = _t(ch.rc), _t(ch.rr)
        if any(kind == "crit" for kind, _ in pending):
            target_dpo = L.implicit_target("dpo", rc_t, rr_t, beta=betas[0])  # delta_ref: the same at every beta
            for k, b in zip(keys, betas):
                if ("crit", k) in pending:
                    crit[k].update(L.critical_loss(target_dpo, beta=b).numpy())
        for k, b in zip(keys, betas):
            if ("dpo", k) in pending:
                dpo[k].update(L.dpo_loss(_t(ch.pc), _t(ch.pr), rc_t, rr_t, beta=b).losses.numpy())

    everything = {("crit", k) for k in crit} | {("dpo", k) for k in dpo}
    for ch in chunks():  # pass 1: every count, and the first pass of every quantile
        delta_ref = ch.rc - ch.rr
        count["reference_right"] += _count(delta_ref >= 0)
        if has_reward:
            count["reward_agrees"] += _count(ch.dr > 0)
            for k, b in zip(keys, betas):
                scaled = b * delta_ref + ch.dr  # beta delta*: no division by beta
                count["violated", k] += _count(scaled <= 0)
                count["idealized_right", k] += _count(scaled >= 0)
        quantile_pass(ch, everything)
        rc_t, rr_t = _t(ch.rc), _t(ch.rr)
        if has_policy:
            delta = ch.pc - ch.pr
            count["policy_right"] += _count(delta >= 0)
            count["in_U"] += _count((delta_ref < delta) & (delta < 0))
            above = delta > config.margin
            count["above_margin"] += _count(above)
            pc_t, pr_t, above_t = _t(ch.pc), _t(ch.pr), torch.from_numpy(above)
            diag.update(D.diagnostic_counts(ch.rc, ch.rr, ch.pc, ch.pr))
        for name, params in variants.items():
            for k, b in zip(keys, betas):
                if not target_ok[name][k]:
                    continue
                try:
                    target = L.implicit_target(name, rc_t, rr_t, beta=b, **params)
                except ValueError as err:
                    target_ok[name][k] = False
                    why[f"{name} target"] = str(err)
                    continue
                # loss < log 2 certifies delta > m  <=>  critical_loss >= log 2  <=>  T >= m.
                count["log2_certifies", name, k] += _count(target >= config.margin)
                if not has_policy:
                    continue
                loss = L.get_loss(name)(pc_t, pr_t, rc_t, rr_t, beta=b, **params).losses
                cert = L.alignment_certificate(loss, target, beta=b, margin=config.margin)
                count["certified", name, k] += _count(cert)
                # Exactly 0 in real arithmetic (the certificate is an equivalence); floating point breaks it
                # where beta |T| dwarfs beta |delta - m|.
                count["mismatch", name, k] += _count(cert != above_t)
    for acc in (*crit.values(), *dpo.values()):
        acc.end_pass()
    while True:  # the quantiles' further passes, each over the ones still pending
        pending = {key for key in everything if (crit if key[0] == "crit" else dpo)[key[1]].pending}
        if not pending:
            break
        for ch in chunks():
            quantile_pass(ch, pending)
        for kind, k in pending:
            (crit if kind == "crit" else dpo)[k].end_pass()

    out: dict[str, Any] = {"reference_ranking_accuracy": count["reference_right"] / n}
    if has_reward:
        out["reward_agreement_rate"] = count["reward_agrees"] / n
        out["assumption_violation_rate"] = {k: count["violated", k] / n for k in keys}
        out["idealized_ranking_accuracy"] = {k: count["idealized_right", k] / n for k in keys}
    else:
        for name in ("reward_agreement_rate", "assumption_violation_rate", "idealized_ranking_accuracy"):
            out[name] = None
            why[name] = "needs chosen_reward and rejected_reward"
    out["critical_loss"] = {k: crit[k].result() for k in keys}
    out["log2_certifies_fraction"] = {name: {k: count["log2_certifies", name, k] / n if target_ok[name][k] else None
                                             for k in keys} for name in variants}
    policy_keys = ("policy_ranking_accuracy", "frac_in_undesirable", "dpo_loss", "certified_fraction",
                   "certificate_mismatch_fraction", "uncertified_bound_from_mean_dpo_loss", "fraction_delta_above_margin")
    if not has_policy:
        for name in policy_keys:
            out[name] = None
            why[name] = "needs chosen_logps and rejected_logps (a trained policy)"
        out["diagnostics"] = None
        return out, why
    out["policy_ranking_accuracy"] = count["policy_right"] / n
    out["frac_in_undesirable"] = count["in_U"] / n
    out["dpo_loss"] = {k: dpo[k].result() for k in keys}
    # Markov: the uncertified pairs each have loss >= l_crit >= min l_crit, so their fraction is at most
    # mean(loss) / min(l_crit). What a mean loss bounds; it certifies no single pair.
    out["uncertified_bound_from_mean_dpo_loss"] = {
        k: min(1.0, out["dpo_loss"][k]["mean"] / out["critical_loss"][k]["min"]) if out["critical_loss"][k]["min"] > 0
        else 1.0 for k in keys}
    out["certified_fraction"] = {name: {k: count["certified", name, k] / n if target_ok[name][k] else None
                                        for k in keys} for name in variants}
    out["certificate_mismatch_fraction"] = {name: {k: count["mismatch", name, k] / n if target_ok[name][k] else None
                                                   for k in keys} for name in variants}
    # What an exact certificate gives for every target-form variant (the certificate is equivalent to delta > m).
    out["fraction_delta_above_margin"] = count["above_margin"] / n
    out["diagnostics"] = D.diagnostics_from_counts({"n_pairs": n, **diag})
    return out, why


def _largest_value(data: PairData) -> float:
    """The largest |value| in the data's columns (one pass)."""
    return max((float(np.max(np.abs(v), initial=0.0)) for c in data.chunks() for v in c.values()), default=0.0)


def _require_finite(obj: Any, data: PairData, path: str = "") -> None:
    """Raise AuditInputError naming the first statistic that is not finite (never an inf or nan printed silently).

    Rows are range-checked on reading (MIN_LOGP), so this fires only where beta times a log-probability
    difference overflows float64 (a huge beta with huge log-probabilities).
    """
    if isinstance(obj, dict):
        for k, v in obj.items():
            _require_finite(v, data, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _require_finite(v, data, f"{path}[{i}]")
    elif isinstance(obj, float) and not math.isfinite(obj):
        raise AuditInputError(f"{data.path}: the statistic {path} is {obj} in float64 (the largest |value| in the "
                              f"file is {_largest_value(data):.3g}; beta times a log-probability difference "
                              "overflows): use smaller betas or check the log-probabilities")


def violation_counts(delta_ref: np.ndarray, dr: np.ndarray, betas: Iterable[float]) -> np.ndarray:
    """The pairs that violate the assumption, ``beta delta_ref + dr <= 0``, at each beta (int64, one per beta)."""
    return np.array([_count(b * delta_ref + dr <= 0) for b in betas], dtype=np.int64)


def _figures(data: PairData, config: AuditConfig, rates_at_betas: dict, fig_dir: Path) -> list[str]:
    """The audit's figures, from passes over the data (nothing per row is kept)."""
    from figures.audit import RANGE_QUANTILES, delta_ref_histogram, histogram_bins, violation_rate_figure

    b0 = config.betas[0]
    has_reward, has_len = "chosen_reward" in data.columns, "chosen_length" in data.columns
    views = {"summed log-probabilities": pair_chunks(data)}
    if has_len:
        views["per-token means"] = pair_chunks(data, per_token=True)
    # The histogram's range: the central quantiles of delta_ref and the boundary -dr/beta (finite values), exact.
    span = ExactQuantiles(dict(zip(("lo", "hi"), RANGE_QUANTILES)))
    while span.pending:
        for ch in views["summed log-probabilities"]():
            span.update(ch.rc - ch.rr)  # finite: the rows were checked
            if has_reward:
                boundary = -ch.dr / b0
                span.update(boundary[np.isfinite(boundary)])
        span.end_pass()
    span_values = span.result()
    bins = histogram_bins(span_values["lo"], span_values["hi"])
    counts = {"all": np.zeros(len(bins) - 1, np.int64)} if not has_reward else {
        name: np.zeros(len(bins) - 1, np.int64) for name in ("holds", "violated", "boundary")}
    violated = 0
    for ch in views["summed log-probabilities"]():
        delta_ref = ch.rc - ch.rr
        if not has_reward:
            counts["all"] += np.histogram(delta_ref, bins)[0]
            continue
        boundary = -ch.dr / b0
        bad = delta_ref <= boundary
        violated += _count(bad)
        counts["holds"] += np.histogram(delta_ref[~bad], bins)[0]
        counts["violated"] += np.histogram(delta_ref[bad], bins)[0]
        counts["boundary"] += np.histogram(boundary[np.isfinite(boundary)], bins)[0]
    files = delta_ref_histogram(bins, counts, violated / data.n_pairs if has_reward else None, b0, fig_dir)
    if not has_reward:
        return files
    curves = {}
    for label, chunks in views.items():
        total = np.zeros(len(config.beta_grid), np.int64)
        for ch in chunks():
            total += violation_counts(ch.rc - ch.rr, ch.dr, config.beta_grid)
        curves[label] = total / data.n_pairs
    return files + violation_rate_figure(np.array(config.beta_grid), curves, config.betas, rates_at_betas, fig_dir)


def audit(data: PairData, config: AuditConfig, fig_dir: Path | None = None) -> dict[str, Any]:
    """The audit's result object (the ``--json`` output); figures to ``fig_dir`` when given.

    Streams over ``data.chunks()``: with spooled data (``read_pairs(spool=True)``) memory does not grow with
    the number of pairs.
    """
    c = data.columns  # the names; the numbers are read a chunk at a time
    n = data.n_pairs
    has_policy, has_reward, has_len = "chosen_logps" in c, "chosen_reward" in c, "chosen_length" in c
    variants = config.variants()
    result: dict[str, Any] = {
        "file": str(data.path),
        "format": data.fmt,
        "columns": list(c),
        "rows_read": data.rows_read,
        "n_pairs": n,
        "skipped_rows": {"count": sum(data.skipped.values()), "by_reason": dict(data.skipped),
                         "examples": list(data.skipped_examples)},
        "blank_lines": data.blank_lines,
        "settings": {
            "betas": list(config.betas),
            "margin": config.margin,
            "logps": "as given, treated as summed sequence log-probabilities; per_token_mean divides by the lengths",
            "cpo_variants": {name: {**params, "delta": "per-token mean" if name == "cpo_easy" else "as given"}
                             for name, params in variants.items()},
            "ranking": "a pair is ranked right when delta >= 0; the assumption holds when beta delta_ref + dr > 0",
            "json_parser": JSON_PARSER if data.fmt == "jsonl" else None,
        },
    }
    if data.logps_kind == "mean":
        result["settings"]["logps"] = ("per-token MEAN log-probabilities (the paper authors' per-sample export, "
                                       "fields " + ", ".join(AUTHORS_EXPORT_FIELDS) + ")")
        result["settings"]["cpo_variants"]["cpo_easy"]["delta"] = "as given (per-token means)"
    if data.aliases_used:
        result["settings"]["column_aliases"] = dict(data.aliases_used)
    kinds = {"has_policy": has_policy, "has_reward": has_reward}
    stats, why = pair_statistics(pair_chunks(data), n, config=config, per_token=data.logps_kind == "mean", **kinds)
    result.update(stats)
    if not has_policy:
        why["diagnostics"] = "needs chosen_logps and rejected_logps (a trained policy)"
    result["certified_fraction_note"] = ("the certificate loss < critical_loss(T, m) is equivalent to delta > m for "
                                         "every target-form loss, so certified fractions agree across variants up "
                                         "to floating point (certificate_mismatch_fraction); log2_certifies_fraction "
                                         "is where the variants differ: the pairs whose loss below log 2 proves "
                                         "delta > m")
    if has_len:
        per_token, why_mean = pair_statistics(pair_chunks(data, per_token=True), n, config=config, per_token=True,
                                              **kinds)
        result["per_token_mean"] = per_token
        flips = Counter()
        for c in data.chunks():  # one read gives both views
            s, m = pair_chunk(c), pair_chunk(c, per_token=True)
            flips["reference"] += _count(((s.rc - s.rr) >= 0) != ((m.rc - m.rr) >= 0))
            if has_policy:
                flips["policy"] += _count(((s.pc - s.pr) >= 0) != ((m.pc - m.pr) >= 0))
        result["sum_vs_mean_ranking_disagreement"] = {k: flips[k] / n for k in
                                                      (("reference", "policy") if has_policy else ("reference",))}
        why.update({f"per_token_mean.{k}": v for k, v in why_mean.items()})
    else:
        result["per_token_mean"] = result["sum_vs_mean_ranking_disagreement"] = None
        why["per_token_mean"] = "needs chosen_length and rejected_length"
        if data.logps_kind != "mean":
            why["certified_fraction.cpo_easy"] = "cpo_easy is defined on per-token means: needs the lengths"
    result["unavailable"] = why
    _require_finite(result, data)
    result["figures"] = []
    if fig_dir is not None:
        result["figures"] += _figures(data, config, result["assumption_violation_rate"], fig_dir)
        if not has_reward:
            why["figure audit_violation_rate"] = "needs chosen_reward and rejected_reward"
    return to_jsonable(result)


def audit_arrays(columns: Mapping[str, Any], config: AuditConfig | None = None, *, skip_invalid: bool = False,
                 fig_dir: Path | None = None) -> dict[str, Any]:
    """The audit of pairs held as arrays: ``audit(PairData.from_arrays(columns), config)`` (see both); the default
    :class:`AuditConfig` when ``config`` is None. The same result object as for a file with those columns."""
    return audit(PairData.from_arrays(columns, skip_invalid=skip_invalid), config or AuditConfig(), fig_dir=fig_dir)


# ----------------------------------------------------------------------------------------------
# Printing


NOTE = object()  # a summary line that is text, not a labelled number


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"


def format_summary(result: dict[str, Any]) -> str:
    """The printed summary of an audit result."""
    s = result["settings"]
    keys = [beta_key(b) for b in s["betas"]]
    skipped = result["skipped_rows"]
    lines = [
        f"audit of {result['file']} ({result['format']}): {result['n_pairs']} pairs from {result['rows_read']} data "
        f"rows; {skipped['count']} skipped" + (f" {skipped['by_reason']}" if skipped["count"] else "")
        + (f"; {result['blank_lines']} blank lines" if result["blank_lines"] else ""),
        f"columns: {', '.join(result['columns'])}",
        f"settings: beta = {', '.join(keys)}; certificate margin m = {s['margin']:g}; log-probabilities {s['logps']}",
        "CPO variants: " + "; ".join(f"{n}(" + ", ".join(f"{k}={v}" for k, v in p.items()) + ")"
                                     for n, p in s["cpo_variants"].items()),
        "",
    ]
    blocks = [("summed log-probabilities (as given)", result)]
    if result.get("per_token_mean"):
        blocks.append(("per-token means (logps / length)", result["per_token_mean"]))
    for title, r in blocks:
        rows: list[tuple[str, Any]] = []  # (label, a number, None or beta key -> number) or (text, NOTE)

        def row(label, value):
            rows.append((label, value))

        def note(text):
            rows.append((text, NOTE))

        row("reference ranks the chosen response first", r["reference_ranking_accuracy"])
        row("reward model agrees with the label (dr > 0)", r["reward_agreement_rate"])
        row("assumption violated (beta delta_ref + dr <= 0)", r["assumption_violation_rate"])
        row("RLHF optimum ranks the chosen response first", r["idealized_ranking_accuracy"])
        row("critical loss: median", {k: v["p50"] for k, v in r["critical_loss"].items()})
        row("critical loss: 5th percentile", {k: v["p05"] for k, v in r["critical_loss"].items()})
        note("  (a pair whose loss is below its critical loss is proven ranked right)")
        row("policy ranks the chosen response first", r["policy_ranking_accuracy"])
        row("in U: the policy moved toward the chosen", r["frac_in_undesirable"])
        note("  response, yet still ranks it second")
        if r["dpo_loss"] is not None:
            row("DPO loss: mean", {k: v["mean"] for k, v in r["dpo_loss"].items()})
            row("DPO loss: median", {k: v["p50"] for k, v in r["dpo_loss"].items()})
            row("pairs not proven right: at most the mean", r["uncertified_bound_from_mean_dpo_loss"])
            note("  DPO loss over the smallest critical loss")
            row("policy ranks chosen first by more than m", r.get("fraction_delta_above_margin"))
            note("pairs whose own loss proves the policy ranks them right (by more than m), per loss:")
            floated = []
            for name, by_beta in r["certified_fraction"].items():
                off = any(v for v in r["certificate_mismatch_fraction"][name].values())
                # A variant whose float64 loss cannot resolve delta (cpo_eq17 on summed log-probs: its margin
                # gamma (1/pi_ref(y_w) + 1/pi_ref(y_l)) is ~e^200) certifies a different fraction than delta > m.
                row(f"  {name}" + (" (rounding decides, see *)" if off else ""), by_beta)
                if off:
                    floated.append(name)
            for name in floated:
                row(f"  * {name}: pairs rounding gets wrong", r["certificate_mismatch_fraction"][name])
            if floated:
                note(f"  * {', '.join(floated)}: the loss is computed in float64, where its own target (cpo_eq17's "
                     "margin is about e^200 on summed log-probabilities) swamps the policy's margin; the share "
                     "above is what float64 gives, not the share of pairs ranked right")
        note("pairs that a loss below log 2 would prove ranked right (by more than m), per loss:")
        for name, by_beta in r["log2_certifies_fraction"].items():
            row(f"  {name}", by_beta)
        width = 2 + max(len(label) for label, value in rows if value is not NOTE)
        lines.append(f"{title}:")
        lines.append("".ljust(width) + "  ".join(f"beta={k}".rjust(12) for k in keys))
        for label, value in rows:
            if value is NOTE:
                indent = " " * (len(label) - len(label.lstrip(" *")) if label.lstrip().startswith("*") else
                                len(label) - len(label.lstrip()))
                lines += textwrap.wrap(label, 100, subsequent_indent=indent)
            elif isinstance(value, dict):
                lines.append(label.ljust(width) + "  ".join(_fmt(value.get(k)).rjust(12) for k in keys))
            else:
                lines.append(label.ljust(width) + _fmt(value).rjust(12))
        lines.append("")
    from dpo_rlhf_checks.audit_diagnostics import format_lines

    for title, r in blocks:
        if r.get("diagnostics"):
            lines += format_lines(r["diagnostics"], f"chosen log-prob and accuracy split, {title}") + [""]
    if result.get("sum_vs_mean_ranking_disagreement"):
        lines.append("sum vs per-token mean, pairs ranked differently: " + ", ".join(
            f"{k} {_fmt(v)}" for k, v in result["sum_vs_mean_ranking_disagreement"].items()))
    for k, v in result["unavailable"].items():
        lines.append(f"n/a {k}: {v}")
    if result["figures"]:
        lines.append("figures: " + ", ".join(result["figures"]))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Synthetic data with a known answer (tests, benchmark, a demonstration)


def synthetic_pairs(n: int, *, seed: int = 0, beta: float = 0.1, violation_rate: float = 0.3,
                    reference_accuracy: float = 0.4, undesirable_rate: float = 0.2) -> dict[str, np.ndarray]:
    """Pairs with planted answers at ``beta`` (exact counts, rounded to whole pairs):

    - ``assumption_violation_rate`` = violation_rate (beta delta_ref + dr in [-5 beta, -beta], < 0),
    - ``reference_ranking_accuracy`` = reference_accuracy (delta_ref in [1, 5] on those pairs),
    - ``frac_in_undesirable`` = undesirable_rate (delta = delta_ref / 2 on pairs with delta_ref < 0),
      every other pair has delta in [0.5, 3], so ``policy_ranking_accuracy`` = 1 - undesirable_rate.
    Rewards agree with the labels (dr in [0.5, 2]); lengths are whole numbers in [10, 100].
    Returns the eight columns as float64 arrays (n,), rows in random order.
    """
    rng = np.random.default_rng(seed)
    a = round(n * violation_rate)
    c = round(n * reference_accuracy)
    b = n - a - c
    u = round(n * undesirable_rate)
    if b < 0 or u > a + b:
        raise ValueError(f"inconsistent rates: need violation_rate + reference_accuracy <= 1 and undesirable_rate <= "
                         f"1 - reference_accuracy; got {violation_rate}, {reference_accuracy}, {undesirable_rate}")
    dr = rng.uniform(0.5, 2.0, n)
    delta_ref = np.empty(n)
    delta_ref[:a] = -dr[:a] / beta - rng.uniform(1.0, 5.0, a)  # violates: beta delta_ref + dr < 0
    delta_ref[a:a + b] = -dr[a:a + b] / beta * rng.uniform(0.1, 0.9, b)  # delta_ref < 0, assumption holds
    delta_ref[a + b:] = rng.uniform(1.0, 5.0, c)
    delta = rng.uniform(0.5, 3.0, n)
    wrong = rng.permutation(a + b)[:u]  # pairs with delta_ref < 0 the policy leaves in U
    delta[wrong] = delta_ref[wrong] / 2
    rr = -rng.uniform(20.0, 200.0, n)
    rc = rr + delta_ref
    pr = rr - rng.uniform(0.0, 2.0, n)
    pc = pr + delta
    chosen_reward = rng.normal(0.0, 1.0, n)
    cols = {
        "ref_chosen_logps": rc, "ref_rejected_logps": rr, "chosen_logps": pc, "rejected_logps": pr,
        "chosen_reward": chosen_reward, "rejected_reward": chosen_reward - dr,
        "chosen_length": rng.integers(10, 101, n).astype(np.float64),
        "rejected_length": rng.integers(10, 101, n).astype(np.float64),
    }
    order = rng.permutation(n)
    return {k: v[order] for k, v in cols.items()}


def write_pairs(path, columns: dict[str, np.ndarray]) -> Path:
    """Write columns to ``.jsonl`` or ``.csv`` (by extension), floats at full precision (repr)."""
    path = Path(path)
    names = list(columns)
    as_int = {k for k in names if k in LENGTH_COLUMNS}
    cells = [[int(x) for x in columns[k]] if k in as_int else columns[k].tolist() for k in names]
    with open(path, "w", encoding="utf-8", newline="") as f:
        if path.suffix == ".csv":
            f.write(",".join(names) + "\n")
            f.writelines(",".join(map(repr, row)) + "\n" for row in zip(*cells))
        elif path.suffix in (".jsonl", ".ndjson", ".json"):
            template = "{" + ", ".join(f'"{k}": %r' for k in names) + "}\n"
            f.writelines(template % row for row in zip(*cells))
        else:
            raise ValueError(f"write_pairs writes .jsonl or .csv, got {path.name!r}")
    return path


# ----------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    d = AuditConfig()
    parser = OneLineParser(
        prog="paper_checks.py audit",
        description="Audit a preference data file (JSON Lines or CSV): assumption violations, ranking accuracy of "
        "the reference, the RLHF optimum and a trained policy, the undesirable space, critical losses and CPO "
        "certificates (docs/theory.md §3, §6, §7, §10). Exit code 2 on bad data.",
    )
    parser.add_argument("file", type=Path, help="the data file, .jsonl or .csv (other extensions: sniffed)")
    parser.add_argument("--beta", type=float, nargs="+", action="extend", metavar="B",
                        help=f"KL weight(s) beta > 0 (repeatable; default {d.betas[0]:g})")
    parser.add_argument("--margin", type=float, default=d.margin,
                        help=f"certificate margin m >= 0, also cpo_clip's margin (default {d.margin:g})")
    parser.add_argument("--cpo-gamma", type=float, default=d.cpo_gamma,
                        help=f"gamma of cpo_eq17, cpo_smooth, cpo_easy (default {d.cpo_gamma:g})")
    parser.add_argument("--cpo-tau", type=float, default=d.cpo_tau, help=f"tau of cpo_smooth (default {d.cpo_tau:g})")
    parser.add_argument("--cpo-alpha", type=float, default=d.cpo_alpha,
                        help=f"alpha of cpo_smooth (default {d.cpo_alpha:g})")
    parser.add_argument("--input-format", choices=FORMATS, default=None,
                        help="input format (default: by extension, else sniffed)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--out", type=Path, default=None, help="write the figures (PDF and PNG) into this folder")
    parser.add_argument("--skip-invalid", action="store_true", help="drop bad rows (counted and reported)")
    parser.add_argument("--pairs-out", type=Path, default=None,
                        help="write per-pair flags (in_U, chosen_logp_fell, ranking_flipped, ...) as JSON Lines")
    parser.add_argument("--chunk-rows", type=int, default=100_000,
                        help=f"rows parsed per chunk, 1..{MAX_CHUNK_ROWS} (default 100000; a chunk also stops at "
                        f"about {CHUNK_CHARS:,} characters, so wide rows take fewer rows per chunk)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``paper_checks.py audit``: 0 on success, 2 on bad arguments or bad data (one line on stderr)."""
    try:
        return _main(argv)
    except (BadInput, AuditInputError) as err:
        print(f"error: {short_message(err)}", file=sys.stderr)
        return 2
    except MemoryError:  # the reading holds about CHUNK_CHARS characters and the longest line; the rest streams
        print("error: out of memory (the audit holds one chunk of about "
              f"{CHUNK_CHARS:,} characters and the file's longest line at a time: is one line gigabytes long?)",
              file=sys.stderr)
        return 1


def _output_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be written as an output file (a folder, a missing or unwritable folder), or None."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder, not a file"
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return f"folder {parent} does not exist"
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"{path} is not writable"
    return None


def _audit_quietly(data: PairData, config: AuditConfig, fig_dir: Path | None) -> dict[str, Any]:
    """:func:`audit` on one torch thread, with numpy's overflow warnings off (the command's one-line contract)."""
    # Elementwise work on a few float arrays: one thread is as fast, and much faster on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # Overflow warnings would break the one-line contract; every statistic is checked finite instead
        # (_require_finite: a non-finite one is an error naming it).
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            return audit(data, config, fig_dir=fig_dir)
    finally:
        torch.set_num_threads(threads)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = AuditConfig(betas=tuple(args.beta or AuditConfig.betas), margin=args.margin,
                             cpo_gamma=args.cpo_gamma, cpo_tau=args.cpo_tau, cpo_alpha=args.cpo_alpha)
    except ValueError as err:
        parser.error(str(err))
    if not 1 <= args.chunk_rows <= MAX_CHUNK_ROWS:
        parser.error(f"--chunk-rows must be between 1 and {MAX_CHUNK_ROWS:,} (a chunk also stops at about "
                     f"{CHUNK_CHARS:,} characters, so more rows would change nothing), got {args.chunk_rows}")
    if args.out is not None:  # before the work: a bad --out must not cost the results
        problem = output_dir_problem(args.out)
        if problem is not None:
            parser.error(f"--out: {problem}")
    if args.pairs_out is not None:  # the same for --pairs-out: a file whose folder must exist and be writable
        problem = _output_file_problem(args.pairs_out) or output_overwrites_input(args.pairs_out, [args.file])
        if problem is not None:
            parser.error(f"--pairs-out: {problem}")
    try:
        data = read_pairs(args.file, fmt=args.input_format, skip_invalid=args.skip_invalid, chunk_rows=args.chunk_rows,
                          spool=True)  # the rows on disk: memory does not grow with the file
    except SpoolError:
        raise
    except AuditInputError as err:
        raise AuditInputError(f"{args.file}: {err}") from None
    except UnicodeDecodeError as err:
        raise AuditInputError(f"{args.file}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise AuditInputError(f"{args.file}: {err.strerror or err}") from None
    try:
        result = _audit_quietly(data, config, args.out)
        if args.pairs_out is not None:
            from dpo_rlhf_checks.audit_diagnostics import write_pair_flags

            try:
                write_pair_flags(args.pairs_out, data)
            except (ValueError, OSError) as err:
                print(f"error: --pairs-out {args.pairs_out}: {err}", file=sys.stderr)
                return 2
    finally:
        data.close()  # the temporary file of the kept rows
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        print(format_summary(result))
    return 0
