"""Scale benchmark of ``paper_checks.py solve``: 2,000 responses with a chain of 1,999 preferences.

    python benchmarks/bench_solve.py [--responses K] [--margin M] [--methods auto dual] [--seed S]

Draws one instance (seed 0: pi_ref Dirichlet(1), rewards N(0, 1), beta 0.5, the chain
0 > 1 > ... > K-1, margin 0.1), writes it to a temporary file and runs, for each method, the whole
command ``python paper_checks.py solve --json --instance FILE --method METHOD`` in a fresh
interpreter. Prints per method: wall and CPU seconds, the command's peak resident memory
(VmHWM of the command's own process, benchmarks/peak_run.py), the method it reports (auto says
what it chose), its status and largest KKT residual, how many constraints bind, and the largest |pi_c difference| between the methods.
Timings taken on a shared machine are upper bounds; wall > CPU means other processes competed.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from peak_run import run_measured  # benchmarks/peak_run.py: a command's own peak memory

ROOT = Path(__file__).resolve().parents[1]


def instance(k: int, margin: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    pi_ref = rng.dirichlet(np.ones(k))
    pi_ref = np.maximum(pi_ref, 1e-12)
    pi_ref /= pi_ref.sum()
    return {"pi_ref": pi_ref.tolist(), "reward": rng.normal(0.0, 1.0, k).tolist(), "beta": 0.5,
            "preferences": [[i, i + 1] for i in range(k - 1)], "margin": margin}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, default=2000)
    parser.add_argument("--margin", type=float, default=0.1)
    parser.add_argument("--methods", nargs="+", default=["auto", "dual"], choices=["auto", "cvxpy", "dual"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = instance(args.responses, args.margin, args.seed)
    print(f"K = {args.responses} responses, chain of {args.responses - 1} pairs, beta 0.5, margin {args.margin}, "
          f"seed {args.seed}, python {sys.version.split()[0]}")
    answers = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chain.json"
        path.write_text(json.dumps(data))
        for method in args.methods:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            proc, peak = run_measured(["paper_checks.py", "solve", "--json", "--instance", str(path), "--method",
                                       method], ROOT)
            wall = time.perf_counter() - t
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            if proc.returncode != 0:
                print(f"[{method}] exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
                return 1
            res = json.loads(proc.stdout)
            answers[method] = np.array(res["cpo_optimum"])
            binding = sum(m > 0 for m in res["multipliers"])
            memory = "n/a (no /proc)" if peak is None else f"{peak / 1e6:,.0f} MB"
            print(f"[{method}] {wall:.2f} s wall ({cpu:.2f} s CPU), peak memory {memory} (VmHWM of the command's "
                  f"own process); used {res['method']['used']}: {res['method']['why']}; status "
                  f"{res['status']} ({res['status_reason']}); {binding} of {len(res['multipliers'])} constraints bind")
    names = list(answers)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            diff = float(np.max(np.abs(answers[names[a]] - answers[names[b]])))
            print(f"max |pi_c({names[a]}) - pi_c({names[b]})| = {diff:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
