"""Streaming benchmark of ``paper_checks.py audit``: one million pairs, JSON Lines and CSV (time and peak memory).

    python benchmarks/bench_audit.py [--rows N [N ...]] [--format jsonl csv] [--keep DIR] [--no-in-process]
    python benchmarks/bench_audit.py --rows 100000 1000000 10000000 --format jsonl --no-in-process  # memory flat?
    python benchmarks/bench_audit.py --rows 60000 --text-chars 10000 --no-in-process  # wide rows: memory flat?

Generates the rows with :func:`dpo_rlhf_checks.audit.synthetic_pairs` (all eight columns, seed 0)
into a temporary folder, then times (1) the audit in this process, parse and statistics apart, and
(2) the whole command ``python paper_checks.py audit FILE --json`` in a fresh interpreter (imports
included). Prints rows/s and checks the planted answers (violation rate 0.3 at beta 0.1).
The command's peak memory is its own process's ``VmHWM`` (``benchmarks/peak_run.py`` says why not
``ru_maxrss``); with several ``--rows``, a last table shows how it grows with the rows: the command
keeps the rows in a temporary file and streams, so it should not.
The target of issue 5: one million rows in under 10 s. ``--text-chars C`` adds a text column of C characters
to every row (a prompt, as real exports carry; the audit ignores it): the reading holds about
``dpo_rlhf_checks.audit.CHUNK_CHARS`` characters at a time, so the peak should not grow with C either
(issue 17: 60,000 rows with 10 KB of text once took 2.16 GB).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from dpo_rlhf_checks.audit import JSON_PARSER, AuditConfig, audit, read_pairs, synthetic_pairs, write_pairs
from peak_run import run_measured  # benchmarks/peak_run.py: a command's own peak memory

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--format", nargs="+", choices=("jsonl", "csv"), default=["jsonl", "csv"])
    parser.add_argument("--keep", type=Path, default=None, help="write the files here instead of a temp dir")
    parser.add_argument("--no-in-process", action="store_true", help="time only the command line (saves memory)")
    parser.add_argument("--text-chars", type=int, nargs="+", default=[0],
                        help="characters of an extra text column per row (0: none; several: one run each)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"rows {args.rows}, text column {args.text_chars} characters, formats {args.format}, torch threads 1, "
          f"python {sys.version.split()[0]}, "
          f"JSON decoder {JSON_PARSER} (orjson is optional and used when installed)")
    table = []  # (format, rows, text chars, file MB, wall s, peak bytes or None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for rows in args.rows:
            for chars in args.text_chars:
                for fmt in args.format:
                    measured = one_size(rows, fmt, folder, in_process=not args.no_in_process, text_chars=chars)
                    if measured is None:
                        return 1
                    table.append((fmt, rows, chars, *measured))
    print("\nformat  rows        text chars  file MB   wall s   peak memory (MB)   bytes/row")
    for fmt, rows, chars, size, wall, peak in table:
        mb = "n/a" if peak is None else f"{peak / 1e6:,.0f}"
        per_row = "n/a" if peak is None else f"{peak / rows:,.1f}"
        print(f"{fmt:7s} {rows:<11,d} {chars:>10,d}  {size / 1e6:7,.0f}  {wall:7.2f}   {mb:>16s}   {per_row:>9s}")
    worst = max((wall for fmt, rows, chars, _, wall, _ in table if rows == 1_000_000 and not chars), default=None)
    if worst is not None:
        print(f"slowest command line at 1,000,000 rows: {worst:.2f} s (target: < 10 s)")
    return 0


def write_wide(path: Path, cols: dict, text_chars: int) -> None:
    """``write_pairs`` with a text column ``prompt`` of ``text_chars`` characters first in every row (CSV: quoted)."""
    write_pairs(path, cols)
    text = "lorem ipsum " * (text_chars // 12) + "x" * (text_chars % 12)
    wide = path.with_name(path.name + ".wide")
    with open(path, encoding="utf-8") as src, open(wide, "w", encoding="utf-8") as dst:
        if path.suffix == ".csv":
            dst.write("prompt," + next(src))
            dst.writelines(f'"{text}",{line}' for line in src)
        else:
            prefix = "{" + f'"prompt": {json.dumps(text)}, '
            dst.writelines(prefix + line[1:] for line in src)
    wide.replace(path)


def one_size(rows: int, fmt: str, folder: Path, *, in_process: bool, text_chars: int = 0
             ) -> tuple[int, float, int | None] | None:
    """Write ``rows`` synthetic pairs as ``fmt`` (with a text column of ``text_chars`` characters when > 0), audit
    them; (file bytes, command wall s, its peak bytes), None on failure."""
    path = folder / f"pairs_{rows}.{fmt}"
    t = time.perf_counter()
    cols = synthetic_pairs(rows, seed=0)
    if text_chars:
        write_wide(path, cols, text_chars)
    else:
        write_pairs(path, cols)
    del cols
    size = path.stat().st_size
    print(f"[{fmt} {rows:,}] generated and wrote {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t:.2f} s")
    ok = True
    if in_process:
        c0 = time.process_time()
        t0 = time.perf_counter()
        data = read_pairs(path)
        t1 = time.perf_counter()
        result = audit(data, AuditConfig(betas=(0.1, 1.0)))
        t2 = time.perf_counter()
        c2 = time.process_time()
        ok = result["n_pairs"] == rows and abs(result["assumption_violation_rate"]["0.1"] - 0.3) < 1e-12
        print(f"[{fmt} {rows:,}] in process: parse {t1 - t0:.2f} s, statistics {t2 - t1:.2f} s, "
              f"total {t2 - t0:.2f} s ({c2 - c0:.2f} s CPU), "
              f"{rows / (t2 - t0):,.0f} rows/s; planted answers {'match' if ok else 'DO NOT MATCH'}")
        del data, result
    t = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc, peak = run_measured(["paper_checks.py", "audit", str(path), "--json", "--beta", "0.1", "1"], ROOT)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    path.unlink()
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return None
    res = json.loads(proc.stdout)
    n = res["n_pairs"]
    ok = ok and n == rows and abs(res["assumption_violation_rate"]["0.1"] - 0.3) < 1e-12
    memory = "n/a (no /proc)" if peak is None else f"{peak / 1e6:,.0f} MB"
    print(f"[{fmt} {rows:,}] command line: {wall:.2f} s wall ({cpu:.2f} s CPU) for {n} pairs, {n / wall:,.0f} rows/s "
          f"(imports included; wall > CPU means other processes competed for the cores); peak memory {memory} "
          f"(VmHWM of the command's own process); planted answers {'match' if ok else 'DO NOT MATCH'}")
    return (size, wall, peak) if ok else None

if __name__ == "__main__":
    sys.exit(main())
