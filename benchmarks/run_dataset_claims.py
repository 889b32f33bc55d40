"""Run every method of the five data-set claims (issue 10) and print literal / amended / seconds / summary.

    python benchmarks/run_dataset_claims.py [--quick] [--seed N] [--out DIR] [--json FILE]

Timings are wall-clock on this machine (say under what load when you quote them). The verdict of each claim is the
runner's merge of these methods (literal iff every method's literal, amended iff every method's amended); this script
prints the methods only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpo_rlhf_checks.result import CheckContext, to_jsonable  # noqa: E402
from toy_bandits.dataset_claims import CLAIM_IDS, run_all  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results")
    p.add_argument("--json", default=None, help="also write every MethodResult here")
    p.add_argument("--claims", nargs="*", default=list(CLAIM_IDS))
    args = p.parse_args()
    ctx = CheckContext(seed=args.seed, quick=args.quick, out_dir=Path(args.out))
    t0 = time.perf_counter()
    res = run_all(ctx, args.claims)
    total = time.perf_counter() - t0
    print(f"total {total:.2f}s for {sum(len(v) for v in res.values())} methods of {len(res)} claims")
    for cid, methods in res.items():
        lit = all(r.literal for r, _ in methods.values())
        am = all(bool(r.amended) for r, _ in methods.values())
        print(f"   {cid:<28} every literal: {lit!s:<5} every amended: {am!s:<5} "
              f"({sum(s for _, s in methods.values()):.2f}s)")
    if args.json:
        payload = {cid: {m: {**to_jsonable(r.__dict__), "seconds": s} for m, (r, s) in methods.items()}
                   for cid, methods in res.items()}
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
