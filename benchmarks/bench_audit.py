"""Streaming benchmark of ``paper_checks.py audit``: one million pairs, JSON Lines and CSV (time and peak memory).

    python benchmarks/bench_audit.py [--rows N] [--format jsonl csv] [--keep DIR] [--no-in-process]
    python benchmarks/bench_audit.py --rows 10000000 --format jsonl --no-in-process   # issue 11's scale

Generates the rows with :func:`dpo_rlhf_checks.audit.synthetic_pairs` (all eight columns, seed 0)
into a temporary folder, then times (1) the audit in this process, parse and statistics apart, and
(2) the whole command ``python paper_checks.py audit FILE --json`` in a fresh interpreter (imports
included). Prints rows/s and checks the planted answers (violation rate 0.3 at beta 0.1).
The target of issue 5: one million rows in under 10 s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dpo_rlhf_checks.audit import JSON_PARSER, AuditConfig, audit, read_pairs, synthetic_pairs, write_pairs

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--format", nargs="+", choices=("jsonl", "csv"), default=["jsonl", "csv"])
    parser.add_argument("--keep", type=Path, default=None, help="write the files here instead of a temp dir")
    parser.add_argument("--no-in-process", action="store_true", help="time only the command line (saves memory)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"rows {args.rows}, formats {args.format}, torch threads 1, python {sys.version.split()[0]}, "
          f"JSON decoder {JSON_PARSER} (orjson is optional and used when installed)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        cols = synthetic_pairs(args.rows, seed=0)
        print(f"generated columns in {time.perf_counter() - t:.2f} s")
        worst = 0.0
        for fmt in args.format:
            path = folder / f"pairs_{args.rows}.{fmt}"
            t = time.perf_counter()
            write_pairs(path, cols)
            print(f"[{fmt}] wrote {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t:.2f} s")
            ok = True
            if not args.no_in_process:
                c0 = time.process_time()
                t0 = time.perf_counter()
                data = read_pairs(path)
                t1 = time.perf_counter()
                result = audit(data, AuditConfig(betas=(0.1, 1.0)))
                t2 = time.perf_counter()
                c2 = time.process_time()
                ok = result["n_pairs"] == args.rows and abs(result["assumption_violation_rate"]["0.1"] - 0.3) < 1e-12
                print(f"[{fmt}] in process: parse {t1 - t0:.2f} s, statistics {t2 - t1:.2f} s, "
                      f"total {t2 - t0:.2f} s ({c2 - c0:.2f} s CPU), "
                      f"{args.rows / (t2 - t0):,.0f} rows/s; planted answers {'match' if ok else 'DO NOT MATCH'}")
                del data, result
            t = time.perf_counter()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.run([sys.executable, str(ROOT / "paper_checks.py"), "audit", str(path), "--json",
                                   "--beta", "0.1", "1"], capture_output=True, text=True, cwd=ROOT)
            wall = time.perf_counter() - t
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            res = json.loads(proc.stdout)
            n = res["n_pairs"]
            ok = ok and n == args.rows and abs(res["assumption_violation_rate"]["0.1"] - 0.3) < 1e-12
            peak = after.ru_maxrss * 1024  # Linux: kilobytes; the largest child so far
            print(f"[{fmt}] command line: {wall:.2f} s wall ({cpu:.2f} s CPU) for {n} pairs, {n / wall:,.0f} rows/s "
                  f"(imports included; wall > CPU means other processes competed for the cores); peak memory "
                  f"{peak / 1e6:,.0f} MB = {peak / n:,.0f} bytes/row; planted answers {'match' if ok else 'DO NOT MATCH'}")
            worst = max(worst, wall)
            if not ok:
                return 1
        print(f"slowest command line: {worst:.2f} s for {args.rows} rows (target: < 10 s for 1,000,000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
