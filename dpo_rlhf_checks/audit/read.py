"""Reading a preference file (JSON Lines or CSV) into the audit's columns, in chunks bounded in rows and in
characters, every value checked (:func:`read_pairs`); arrays a caller holds get the same checks
(:meth:`~dpo_rlhf_checks.audit.columns.PairData.from_arrays`). First step of read -> columns -> statistics ->
report -> cli."""

from __future__ import annotations

import csv
import itertools
import json
import math
import operator
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from dpo_rlhf_checks.audit.columns import (ALIASES, AUTHORS_EXPORT_MARKERS, LENGTH_COLUMNS, LOGP_COLUMNS, NAMES,
                                           OPTIONAL_PAIRS, REQUIRED, AuditInputError, PairData, SpooledColumns,
                                           _Spool)
from dpo_rlhf_checks.cli import BadInput, no_duplicate_keys


try:  # Optional, not a dependency: orjson decodes JSON ~3x faster, to the same float64 numbers (both round
    # correctly). It only serves the fast path; rows with a problem are re-read with json to name it.
    # The parser used is reported in the output.
    import orjson

    _fast_json_loads, JSON_PARSER = orjson.loads, "orjson"
except ImportError:
    _fast_json_loads, JSON_PARSER = json.loads, "json"


FORMATS = ("jsonl", "csv")
# Characters of text parsed at a time: a chunk of the file holds at most --chunk-rows rows AND about this many
# characters (whole lines: one line more at most), so the reading's memory does not grow with the width of the
# rows either (a 10 KB text column, a 50 MB line). Parsing a chunk takes a few times its size in Python objects
# (the text, its JSON array, the decoded objects): tens of MB, measured in benchmarks/bench_audit.py --text-chars.
CHUNK_CHARS = 1 << 24
HEAD_BLOCK_LINES = 10_000  # lines of a JSON Lines head (before its first usable row) parsed per block
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


class _SlowPath(Exception):
    """A chunk the fast parser cannot take as is; the per-row parser will name the problem."""


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
            # The head (the lines up to that row) is scanned once without being kept (a file whose first million
            # lines are bad must not be held in memory), then read again from the start, in blocks.
            n_head, n_rows, obj, line_chars = 0, 0, None, 0
            for text in f:
                n_head += 1
                line_chars = max(line_chars, len(text))
                if not text.strip():
                    continue
                n_rows += 1
                if n_rows == 1 and text.lstrip().startswith("["):
                    raise AuditInputError(f"line {n_head}: a JSON array, not JSON Lines (one object per line)")
                try:
                    candidate = json.loads(text, object_pairs_hook=no_duplicate_keys)
                except (json.JSONDecodeError, BadInput, RecursionError):
                    candidate = None
                if isinstance(candidate, dict) and (not skip_invalid or _valid_first_row(candidate)):
                    obj = tuple(candidate)  # its keys: the row itself is parsed again below (a 50 MB row, once)
                    break
                if not skip_invalid:
                    break  # the per-row parser below names the problem
            text = candidate = None
            if n_rows == 0:
                raise AuditInputError("empty file: no data rows")
            used = _used_columns(obj or {}, _where(n_rows, n_head, None))
            present = set(obj or ())
            unused = [c for c in NAMES if c not in used]
            collector = _Collector(used, skip_invalid, spool)
            f.seek(0)
            blank, done = 0, 0
            while done < n_head:
                head, chars = [], 0  # a block: at most HEAD_BLOCK_LINES lines and about CHUNK_CHARS characters
                while done + len(head) < n_head and len(head) < HEAD_BLOCK_LINES and chars < CHUNK_CHARS:
                    head.append(next(f))
                    chars += len(head[-1])
                blank += _slow_jsonl(head, done, collector, used, unused)
                done += len(head)
            blank += _read_jsonl(f, collector, used, chunk_rows, first_line=n_head, line_chars=line_chars)
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
