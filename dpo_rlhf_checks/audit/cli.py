"""``paper_checks.py audit FILE [options]``: arguments and outputs checked before any work, then read ->
columns -> statistics -> report; bad input is one line and exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dpo_rlhf_checks.audit.columns import AuditInputError, PairData, SpoolError
from dpo_rlhf_checks.audit.read import CHUNK_CHARS, FORMATS, MAX_CHUNK_ROWS, read_pairs
from dpo_rlhf_checks.audit.report import audit, format_summary
from dpo_rlhf_checks.audit.statistics import AuditConfig
from dpo_rlhf_checks.cli import BadInput, OneLineParser, output_dir_problem, short_message
from dpo_rlhf_checks.paths import output_file_problem, output_overwrites_input


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
        problem = output_file_problem(args.pairs_out) or output_overwrites_input(args.pairs_out, [args.file])
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
