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

The package's files follow that flow: :mod:`.read` (files -> checked rows), :mod:`.columns` (the kept columns,
:class:`PairData`), :mod:`.statistics` (:class:`AuditConfig`, :func:`pair_statistics`), :mod:`.report`
(:func:`audit`, the figures, :func:`format_summary`) and :mod:`.cli` (``main``); :mod:`.synthetic` makes data
with planted answers. Everything is imported from here, as before the split.
"""

from __future__ import annotations

import sys
import types

from dpo_rlhf_checks.audit import cli, columns, read, report, statistics, synthetic
from dpo_rlhf_checks.audit.cli import _main, build_parser, main
from dpo_rlhf_checks.paths import output_file_problem as _output_file_problem  # the old module's name
from dpo_rlhf_checks.audit.columns import (ALIASES, AUTHORS_EXPORT_FIELDS, AUTHORS_EXPORT_MARKERS, LENGTH_COLUMNS,
                                           LOGP_COLUMNS, NAMES, OPTIONAL_PAIRS, RECOGNIZED, REQUIRED, STAT_CHUNK,
                                           AuditInputError, PairData, SpoolError, SpooledColumns, _Spool)
from dpo_rlhf_checks.audit.read import (CHUNK_CHARS, FORMATS, JSON_PARSER, MAX_CHUNK_ROWS, MAX_EXAMPLES, MIN_LOGP,
                                        VALUE_CHARS, detect_format, read_pairs)
from dpo_rlhf_checks.audit.report import NOTE, audit, audit_arrays, format_summary
from dpo_rlhf_checks.audit.statistics import (AuditConfig, PairChunk, beta_key, pair_chunk, pair_chunks,
                                              pair_statistics, violation_counts)
from dpo_rlhf_checks.audit.synthetic import synthetic_pairs, write_pairs

__all__ = [
    "ALIASES", "AUTHORS_EXPORT_FIELDS", "AUTHORS_EXPORT_MARKERS", "AuditConfig", "AuditInputError", "CHUNK_CHARS",
    "FORMATS", "JSON_PARSER", "LENGTH_COLUMNS", "LOGP_COLUMNS", "MAX_CHUNK_ROWS", "MAX_EXAMPLES", "MIN_LOGP", "NAMES",
    "OPTIONAL_PAIRS", "PairChunk", "PairData", "RECOGNIZED", "REQUIRED", "STAT_CHUNK", "SpoolError", "SpooledColumns",
    "VALUE_CHARS", "audit", "audit_arrays", "beta_key", "build_parser", "detect_format", "format_summary", "main",
    "pair_chunk", "pair_chunks", "pair_statistics", "read_pairs", "synthetic_pairs", "violation_counts",
    "write_pairs",
]

# The tunable constants live in the module that uses them; setting one here (``audit.STAT_CHUNK = 96``, as tests
# and benchmarks do) sets it there too, so the package behaves as the single module it was.
_TUNABLE = {"STAT_CHUNK": columns, "CHUNK_CHARS": read, "MAX_CHUNK_ROWS": read, "MAX_EXAMPLES": read,
            "MIN_LOGP": read, "VALUE_CHARS": read}


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        home = _TUNABLE.get(name)
        if home is not None:
            setattr(home, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
