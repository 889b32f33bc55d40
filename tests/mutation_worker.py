"""The killer process of tests/mutation_score.py; it runs inside a copy of the repository, never in a worktree.

    python tests/mutation_worker.py baseline --tests T ... --out F   every claim (--quick) and the test files once:
        verdicts, measured function sets and seconds per claim, outcome and seconds per test file (--no-claims:
        the test files only)
    python tests/mutation_worker.py kill --claims ID ... --verdicts F --tests T ... --out F
        the claims (in order; the first whose verdict differs from the baseline kills), then ``pytest -x`` on the
        test files; writes {"killed_by": ..., "detail": ...} ("killed_by" null when the mutant survived)

One process per call, so a mutated module is imported fresh; the caller owns the timeout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


class _FileTimes:
    """pytest plugin: seconds and outcome per test file, and the first failing test id."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.failed: dict[str, list[str]] = {}
        self.first_failure: str | None = None

    def pytest_runtest_logreport(self, report):  # noqa: D102
        path = report.nodeid.split("::", 1)[0]
        self.seconds[path] = self.seconds.get(path, 0.0) + report.duration
        if report.failed:
            self.failed.setdefault(path, []).append(report.nodeid)
            if self.first_failure is None:
                self.first_failure = report.nodeid

    def pytest_collectreport(self, report):  # noqa: D102
        if report.failed:
            path = str(report.nodeid).split("::", 1)[0] or "<collection>"
            self.failed.setdefault(path, []).append(f"{report.nodeid} (collection error)")
            if self.first_failure is None:
                self.first_failure = f"{report.nodeid} (collection error)"


def _pytest(files: list[str], stop_first: bool) -> tuple[int, _FileTimes]:
    import pytest

    plugin = _FileTimes()
    args = ["-q", "-p", "no:cacheprovider", "--no-header", "-o", "console_output_style=classic"]
    if stop_first:
        args.append("-x")
    code = pytest.main([*args, *files], plugins=[plugin])
    return int(code), plugin


def _run_claims(ids: list[str], expected: dict[str, str] | None, out_dir: Path) -> tuple[dict, str | None]:
    from dpo_rlhf_checks.registry import get_claim
    from dpo_rlhf_checks.report import run_claim
    from dpo_rlhf_checks.result import CheckContext

    ctx = CheckContext(seed=0, quick=True, out_dir=out_dir, lm_config="default", device="cpu")
    found = {}
    for cid in ids:
        start = time.perf_counter()
        entry = run_claim(get_claim(cid), ctx)
        measured = sorted({f for m in entry["methods"] for f in m.get("measured", [])})
        found[cid] = {"verdict": entry["verdict"], "measured": measured,
                      "seconds": round(time.perf_counter() - start, 3)}
        if expected is not None and entry["verdict"] != expected[cid]:
            return found, f"{cid}: {expected[cid]} -> {entry['verdict']}"
    return found, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("baseline", "kill"))
    parser.add_argument("--claims", nargs="*", default=[])
    parser.add_argument("--tests", nargs="*", default=[])
    parser.add_argument("--verdicts", type=Path, help="kill: the baseline verdicts (JSON: claim id -> verdict)")
    parser.add_argument("--no-claims", action="store_true", help="baseline: the test files only")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="mutation_worker_"))
    if args.mode == "baseline":
        from dpo_rlhf_checks.registry import CLAIMS

        ids = [] if args.no_claims else args.claims or [c.id for c in CLAIMS]
        claims, _ = _run_claims(ids, None, scratch)
        code, times = _pytest(args.tests, stop_first=False) if args.tests else (0, _FileTimes())
        tests = {f: {"seconds": round(times.seconds.get(f, 0.0), 3), "failed": times.failed.get(f, [])}
                 for f in args.tests}
        args.out.write_text(json.dumps({"claims": claims, "tests": tests, "pytest_exit": code}, indent=1))
        return 0
    expected = json.loads(args.verdicts.read_text()) if args.claims else None
    result = {"killed_by": None, "detail": None}
    _, flipped = _run_claims(args.claims, expected, scratch) if args.claims else ({}, None)
    if flipped is not None:
        result = {"killed_by": "claim", "detail": flipped}
    elif args.tests:
        code, times = _pytest(args.tests, stop_first=True)
        if code not in (0, 5):  # 5: nothing collected (every test deselected)
            result = {"killed_by": "test", "detail": times.first_failure or f"pytest exit {code}"}
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
