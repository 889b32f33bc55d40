#!/usr/bin/env python
"""Mutation score of the formula modules: how many planted errors change a verdict or fail a test.

    python tests/mutation_score.py                         every mutant (hours; see README, "Mutation score")
    python tests/mutation_score.py --sample 200 --seed 0   a deterministic sample of 200 mutants
    python tests/mutation_score.py --modules toy_bandits/dataset.py dpo_rlhf_checks/losses.py --sample 50
    python tests/mutation_score.py --rerun-survivors results/mutation/mutation.json   only the survivors again
    python tests/mutation_score.py --list                  count the mutants per module and operator, run nothing
    python tests/mutation_score.py --run-reviewed          run the reviewed (equivalent-listed) mutants: any killed
                                                           one is a wrong review (exit 1)
    python tests/mutation_score.py --legacy --sample 20    the old runner (a process per mutant), for comparison
    python tests/mutation_score.py --sample 300 --jobs 2   two mutants at once, each in its own repository copy
    python tests/mutation_score.py --sample 600 --reuse results/mutation/mutation.partial.json
                                                           go on after an interrupted run (same tree: its fates kept)

The mutants come from tests/mutation_ops.py (comparison boundary and direction, sign, x2 and /2 on constants,
min <-> max, a dropped term, swapped arguments) over :data:`FORMULA_FILES`. Everything runs in a temporary copy of
the repository (without .git, results and caches; bytecode is never written, so a stale .pyc cannot hide a
mutant); the worktree's files are never touched, whatever happens.

A mutant is killed when

- a claim's verdict (``--quick``, seed 0) differs from the unmutated baseline (a crash gives ``error``, which
  differs), or
- a test fails (``pytest -x`` on the tests chosen for it, below), or
- its killer process runs past its timeout (a hang; recorded as ``timeout``) or dies (recorded as ``crash``).

Only the claims whose measured function sets (``measured`` in report.json, from
:func:`dpo_rlhf_checks.tracing.measure_calls`) contain the mutated function are run, cheapest first; the LM claims
(``lm-*``, which train a model) only for mutants in toy_lm/ unless ``--lm-all``.

Tests, by line coverage (the default): the test files run once under a line tracer (``coverage.json``: per test
id the formula lines it executed, see ``mutation_worker.LineCoverage``), and a mutant runs only the test ids that
executed one of its lines; plus, in the test files that import its module, the tests the tracer cannot see into
(they start a process or run a claim) and, when the mutated line runs at import time, every test. A mutated line
that no claim's function set and no test reaches survives without running anything. The claims and tests run in a
child forked from a server that imported torch, SymPy, CVXPY, pytest and the rest once; the child imports the
toolkit afresh from the mutated file and exits after the mutant, so nothing leaks into the next one.
``--legacy`` is the old path, kept for comparison: a fresh process per mutant and every test file that imports the
mutated module, whole.

The baselines (every claim once; every test under the tracer) are cached in the output folder, keyed by hashes of
the toolkit's code and of each test file, so a new test file costs only its own run.

Reviewed mutants are listed in tests/mutation_equivalent.json, keyed by mutant id, each with a class and a reason:
``equivalent`` (no input can tell it from the original), ``input`` (it changes only the points or draws a check
tests, which the verdict is meant not to depend on), ``report`` (it changes only a summary or evidence number that
no verdict reads), ``tolerance`` (a decision tolerance doubled or halved, far from every computed residual). They
are left out of the score and listed in the report with their reasons; the "strict" score counts all but the
``equivalent`` ones as survivors.

Writes ``OUT/mutation.json`` (every mutant and its fate) and ``OUT/mutation.md`` (score per module with a 95 %
Wilson interval when sampled, survivors with file:line and the mutation, equivalent mutants with their reasons).
Exit 0 when the run completed (whatever the score), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_ops import OPERATORS, Mutant, mutants, valid  # noqa: E402

IGNORE = shutil.ignore_patterns(".git", "results*", "__pycache__", ".pytest_cache", ".hypothesis", "*.pyc",
                                "audit_figures", ".venv", "venv")
EQUIVALENT_FILE = ROOT / "tests" / "mutation_equivalent.json"
# equivalent: no input tells it apart; input: moves only a check's test points or draws; report: changes only a
# summary or evidence value no verdict reads; tolerance: a decision tolerance x2 or /2 that the computed residuals,
# orders of magnitude away, never reach (only a test pinning the constant would notice)
REVIEW_CLASSES = ("equivalent", "input", "report", "tolerance")

# The formula modules: file glob -> (defs not mutated, the only top-level defs mutated or None for all).
# Skipped defs print or parse, they compute no number a verdict reads.
FORMULA_FILES: dict[str, tuple[frozenset[str], frozenset[str] | None]] = {
    "theory/*.py": (frozenset(), None),
    "toy_bandits/*.py": (frozenset(), None),
    "toy_lm/*.py": (frozenset(), None),
    "dpo_rlhf_checks/losses.py": (frozenset(), None),
    "dpo_rlhf_checks/stream_stats.py": (frozenset(), None),
    # the statistic functions of the audit, not its reading, spooling, figures or command line
    "dpo_rlhf_checks/audit/statistics.py": (frozenset(), frozenset({"pair_chunk", "pair_statistics",
                                                                    "violation_counts", "_count", "beta_key"})),
    "dpo_rlhf_checks/audit_diagnostics.py": (frozenset(), frozenset({"pair_flags", "diagnostic_counts",
                                                                     "diagnostics_from_counts"})),
}
# not formula modules: a command line, configuration presets, re-exports
NOT_FORMULA = {"toy_bandits/cli.py", "toy_lm/config.py", "theory/__init__.py", "toy_bandits/__init__.py",
               "toy_lm/__init__.py"}
LM_CLAIM_PREFIX = "lm-"


def formula_files(root: Path = ROOT) -> list[Path]:
    files = []
    for pattern in FORMULA_FILES:
        files += [p for p in sorted(root.glob(pattern)) if str(p.relative_to(root)) not in NOT_FORMULA]
    return files


def _spec(rel: str) -> tuple[frozenset[str], frozenset[str] | None]:
    for pattern, spec in FORMULA_FILES.items():
        if Path(rel).match(pattern):
            return spec
    raise KeyError(rel)


def all_mutants(modules: list[str] | None = None) -> list[Mutant]:
    """Every mutant of the formula files (those whose path starts with one of ``modules`` when given)."""
    out = []
    for path in formula_files():
        rel = str(path.relative_to(ROOT))
        if modules and not any(rel.startswith(m.rstrip("/")) for m in modules):
            continue
        skip, only = _spec(rel)
        out += mutants(path.read_text(), rel, rel[:-3].replace("/", "."), skip=skip, only=only)
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n (the score of a sample of n mutants)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def test_imports(root: Path) -> dict[str, set[str]]:
    """test file (relative) -> the toolkit modules it imports directly (``import a.b``, ``from a.b import c``)."""
    found = {}
    for path in sorted((root / "tests").rglob("test_*.py")):
        rel = str(path.relative_to(root))
        if Path(rel).name.startswith("test_mutation"):
            continue  # the generator's own tests, and the slow run of this script
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names |= {f"{node.module}.{a.name}" for a in node.names}
        found[rel] = names
    return found


def imports_module(names: set[str], module: str) -> bool:
    """Whether a test importing ``names`` reaches ``module``: by name, or through a subpackage that re-exports it
    (``from dpo_rlhf_checks.audit import violation_counts`` reaches ``dpo_rlhf_checks.audit.statistics``). A
    top-level package name alone (``from dpo_rlhf_checks import score``) does not count for all its modules."""
    return module in names or any("." in n and module.startswith(n + ".") for n in names)


def _hash(paths: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def code_hash(root: Path) -> str:
    """Hash of the toolkit's Python files and tests/conftest.py (what every claim and test runs on)."""
    paths = [p for p in sorted(root.rglob("*.py"))
             if p.relative_to(root).parts[0] not in ("tests", "results", ".venv", "benchmarks")]
    return _hash(paths + [root / "tests" / "conftest.py"], root)


def _env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(repo), PYTHONDONTWRITEBYTECODE="1", HYPOTHESIS_PROFILE="ci",
               MPLBACKEND="Agg", PYTHONHASHSEED="0")
    return env


def _worker(repo: Path, args: list[str], timeout: float) -> tuple[str, dict | None, str]:
    """Run the worker in ``repo``; ("ok", its JSON, "") or ("timeout"/"crash", None, the output's tail)."""
    out = Path(tempfile.mkstemp(prefix="mutation_", suffix=".json")[1])
    out.unlink()
    cmd = [sys.executable, str(repo / "tests" / "mutation_worker.py"), *args, "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=repo, env=_env(repo), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        text, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        text, _ = proc.communicate()
        return "timeout", None, (text or "")[-2000:]
    if proc.returncode != 0 or not out.exists():
        return "crash", None, (text or "")[-2000:]
    result = json.loads(out.read_text())
    out.unlink()
    return "ok", result, (text or "")[-2000:]


def baseline(repo: Path, out_dir: Path, test_files: list[str], refresh: bool) -> dict:
    """Every claim (--quick) and every test file once in the unmutated copy.

    Cached in ``out_dir/baseline.json``: the claims under the hash of the toolkit's code, each test file under
    the hash of that code and the file, so a new test file costs only its own run.
    """
    code = code_hash(repo)
    cache = out_dir / "baseline.json"
    data = json.loads(cache.read_text()) if cache.exists() and not refresh else {}
    if data.get("code") != code:
        data = {"code": code, "claims": None, "tests": {}, "seconds": 0.0}
    keys = {t: f"{code}:{_hash([repo / t], repo)}" for t in test_files}
    todo = [t for t in test_files if data["tests"].get(t, {}).get("key") != keys[t]]
    if data["claims"] is None or todo:
        what = ("every claim (--quick) and " if data["claims"] is None else "") + f"{len(todo)} test files"
        print(f"baseline: {what}, once ...", flush=True)
        start = time.perf_counter()
        args = ["baseline", "--tests", *todo] + ([] if data["claims"] is None else ["--no-claims"])
        status, new, tail = _worker(repo, args, timeout=4 * 3600)
        if status != "ok":
            raise SystemExit(f"baseline run failed ({status}):\n{tail}")
        if data["claims"] is None:
            data["claims"] = new["claims"]
        for t in todo:
            data["tests"][t] = {**new["tests"][t], "key": keys[t]}
        data["seconds"] = round(data["seconds"] + time.perf_counter() - start, 1)
        cache.write_text(json.dumps(data, indent=1))
    data["tree"] = _hash([repo / t for t in test_files], repo) + "-" + code
    return data


def killers(m: Mutant, base: dict, imports: dict[str, set[str]], lm_all: bool) -> tuple[list[str], list[str]]:
    """(claims whose measured sets contain the mutated function, test files that import its module),
    each cheapest first."""
    qual = m.function[len(m.module) + 1:]
    if qual == "<module>":
        hit = lambda f: f.startswith(m.module + ".")  # noqa: E731  a module-level line: any function of it
    else:
        hit = lambda f: f == m.function or f.startswith(m.function + ".")  # noqa: E731  nested defs included
    claims = [cid for cid, c in base["claims"].items()
              if c["verdict"] != "not-checked" and any(hit(f) for f in c["measured"])
              and (lm_all or not cid.startswith(LM_CLAIM_PREFIX) or m.module.startswith("toy_lm"))]
    claims.sort(key=lambda cid: base["claims"][cid]["seconds"])
    tests = [t for t, names in imports.items()
             if imports_module(names, m.module) and t in base["tests"] and not base["tests"][t]["failed"]]
    tests.sort(key=lambda t: base["tests"][t]["seconds"])
    return claims, tests


def coverage_baseline(repo: Path, out_dir: Path, test_files: list[str], base: dict, refresh: bool) -> dict:
    """The needed test files under the line tracer (tests/mutation_worker.py ``coverage``): per test id its
    outcome, seconds and the formula lines it executed.

    Cached in ``out_dir/coverage.json``: each test file under the hash of the toolkit's code and of that file (a
    new or changed test file costs only its own run), the import-time and collection lines as the union over the
    runs. Also fills the per-file test baseline (seconds, failures) that the ``--legacy`` path reads, so the suite
    runs once, not twice. Returns the index :func:`select_tests` reads."""
    code = base["code"]
    cache = out_dir / "coverage.json"
    data = json.loads(cache.read_text()) if cache.exists() and not refresh else {}
    if data.get("code") != code:
        data = {"code": code, "files": {}, "import_lines": {}, "collection_lines": {}, "seconds": 0.0}
    keys = {t: _hash([repo / t], repo) for t in test_files}
    todo = [t for t in test_files if data["files"].get(t, {}).get("key") != keys[t]]
    if todo:
        print(f"coverage baseline: {len(todo)} test files under a line tracer, once ...", flush=True)
        start = time.perf_counter()
        formula = [str(p.relative_to(repo)) for p in formula_files(repo)]
        status, new, tail = _worker(repo, ["coverage", "--tests", *todo, "--formula", *formula], timeout=6 * 3600)
        if status != "ok":
            raise SystemExit(f"coverage baseline failed ({status}):\n{tail}")
        for t in todo:
            data["files"][t] = {"key": keys[t], **new["files"][t],
                                "tests": [e for e in new["tests"] if e["file"] == t]}
        for field in ("import_lines", "collection_lines"):
            for rel, lines in new[field].items():
                data[field][rel] = sorted(set(data[field].get(rel, [])) | set(lines))
        data["seconds"] = round(data["seconds"] + time.perf_counter() - start, 1)
        cache.write_text(json.dumps(data))
    for t in test_files:  # the legacy path's per-file baseline, from the same run
        v = data["files"][t]
        base["tests"].setdefault(t, {"seconds": v["seconds"], "failed": v["failed"], "key": f"{code}:{keys[t]}"})
    tests = [e for t in test_files for e in data["files"][t]["tests"]]
    lines: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    by_file: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(tests):
        by_file[e["file"]].append(i)
        for rel, numbers in e["lines"].items():
            for n in numbers:
                lines[rel][n].append(i)
    return {"tests": tests, "lines": lines, "by_file": by_file, "seconds": data["seconds"],
            "import_lines": {rel: set(v) for rel, v in data["import_lines"].items()},
            "collection_lines": {rel: set(v) for rel, v in data["collection_lines"].items()}}


def import_time(m: Mutant, cov: dict) -> bool:
    """Whether the mutated lines run when a module is imported or a test file is collected (a module-level
    line, a class body, a default value, or a function a module body calls): which test first imported the module
    is an accident of order, so such a mutant's tests are chosen by the import rule."""
    if m.function.endswith(".<module>"):
        return True
    span = set(range(m.line, m.line + m.old.count("\n") + 1))
    return bool(span & cov["import_lines"].get(m.path, set()) or span & cov["collection_lines"].get(m.path, set()))


def select_tests(m: Mutant, cov: dict, imports: dict[str, set[str]]) -> list[str]:
    """The test ids a mutant runs, cheapest first (none of them failed on the unmutated copy):

    - every test that executed one of the mutated expression's lines in the coverage baseline;
    - in the test files that import the mutated module (the rule of ``--legacy``, which runs those files whole):
      every opaque test (one that started a process or ran a claim under ``measure_calls``, whose lines the tracer
      cannot see), and every test when the mutated lines run at import time (:func:`import_time`).

    A test of an importing file that is not opaque and never executed the mutated lines cannot be changed by the
    mutant, so leaving it out does not weaken what "killed" means. An opaque test whose file does not import the
    mutated module can still reach it (test_atlas_cli.py runs ``paper_checks.py atlas`` in a subprocess and imports
    only dpo_rlhf_checks.atlas; two gpo_flow survivors of seed 1123 fail it by hand): choosing opaque tests by their
    files' transitive imports instead was measured on seed 1123's first 900 (2026-12-05) at +13 s of baseline test
    time per mutant (block 3 took about 26 s of job time per mutant: half again the run), for 27 survivors that
    would run an atlas test; so the rule stays, and such lines get in-process tests.
    """
    tests = cov["tests"]
    chosen: set[int] = set()
    by_line = cov["lines"].get(m.path, {})
    for line in range(m.line, m.line + m.old.count("\n") + 1):
        chosen.update(by_line.get(line, ()))
    whole = import_time(m, cov)
    for t, names in imports.items():
        if imports_module(names, m.module):
            chosen.update(i for i in cov["by_file"].get(t, ()) if whole or tests[i]["opaque"])
    ids = [i for i in chosen if not tests[i]["failed"]]
    ids.sort(key=lambda i: (tests[i]["seconds"], tests[i]["id"]))
    return [tests[i]["id"] for i in ids]


class Server:
    """The fork server (tests/mutation_worker.py ``serve``) in the repository copy: started once, restarted if it
    dies; :meth:`run` sends one mutant's claims and test ids and waits for the verdict."""

    def __init__(self, repo: Path, scratch: Path):
        self.repo, self.scratch, self.proc = repo, scratch, None

    def start(self) -> None:
        cmd = [sys.executable, str(self.repo / "tests" / "mutation_worker.py"), "serve"]
        self.proc = subprocess.Popen(cmd, cwd=self.repo, env=_env(self.repo), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        line = self.proc.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            raise SystemExit("the mutation fork server did not start")

    def run(self, claims: list[str], verdicts: Path, tests: list[str], timeout: float,
            phases: list[dict] | None = None) -> dict:
        """One mutant: its claims, then its tests, in one child; or ``phases`` (each {"claims", "tests"} in a
        child of its own, in order, until one kills: cheap tests first, say)."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        request = {"claims": claims, "verdicts": str(verdicts), "tests": tests, "timeout": timeout,
                   "out": str(self.scratch / "result.json"), "log": str(self.scratch / "child.log"),
                   "scratch": str(self.scratch), "phases": phases}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc = None
            return {"status": "crash", "result": None, "tail": "the fork server died"}
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def canary(repo: Path, server: Server | None, base: dict, cov: dict | None, verdicts_file: Path) -> None:
    """Run the cheapest claim and test on the unmutated copy, the way a mutant runs; anything but "survived"
    means the runner itself is broken (a crash would otherwise count every mutant as killed): stop."""
    claims = sorted((c for c, v in base["claims"].items() if v["verdict"] != "not-checked"
                     and not c.startswith(LM_CLAIM_PREFIX)), key=lambda c: base["claims"][c]["seconds"])[:1]
    if server is not None:
        tests = sorted((t for t in cov["tests"] if not t["failed"] and not t["opaque"]),
                       key=lambda t: t["seconds"])[:1]
        ids = [t["id"] for t in tests]
        seconds = {t["id"]: t["seconds"] for t in tests}
        cost = sum(base["claims"][c]["seconds"] for c in claims)
        reply = server.run(claims, verdicts_file, ids, timeout=600, phases=phases(claims, ids, cost, seconds))
        ok = reply["status"] == "ok" and reply["result"]["killed_by"] is None and not reply["result"].get("error")
        tail = reply.get("tail") or json.dumps(reply.get("result"))
    else:
        tests = sorted((t for t, v in base["tests"].items() if not v["failed"]), key=lambda t: base["tests"][t]["seconds"])[:1]
        status, result, tail = _worker(repo, ["kill", "--claims", *claims, "--verdicts", str(verdicts_file),
                                              "--tests", *tests], timeout=600)
        ok = status == "ok" and result["killed_by"] is None
    if not ok:
        raise SystemExit(f"the runner fails on the unmutated copy (claim {claims}, tests {tests}); fix it first:\n"
                         f"{tail[-2000:]}")


def phases(claims: list[str], tests: list[str], claim_cost: float, cov_seconds: dict[str, float]) -> list[dict]:
    """The order a mutant's killers run in (it changes the time, never the fate: a mutant is killed when any of
    them fails): the cheapest tests up to a tenth of the claims' cost (at least 5 s) in a first child; then the
    claims and the remaining tests, the cheaper group first. ``tests`` is sorted cheapest first."""
    budget, spent, cut = max(0.1 * claim_cost, 5.0), 0.0, 0
    for t in tests:
        if spent + cov_seconds[t] > budget:
            break
        spent += cov_seconds[t]
        cut += 1
    first, rest = tests[:cut], tests[cut:]
    rest_cost = sum(cov_seconds[t] for t in rest)
    out = [{"claims": [], "tests": first}] if first and claims else []
    if not claims:
        return [{"claims": [], "tests": tests}]
    return out + [{"claims": claims, "tests": rest if first else tests,
                   "tests_first": (rest_cost if first else spent + rest_cost) < claim_cost}]


def run_mutant_fast(repo: Path, server: Server, m: Mutant, claims: list[str], tests: list[str], base: dict,
                    cov_seconds: dict[str, float], verdicts_file: Path, factor: float, overhead: float,
                    kind: str = "formula") -> dict:
    """One mutant through the fork server: its claims, then its selected test ids (see :func:`select_tests`)."""
    entry = {"id": m.id, "path": m.path, "line": m.line, "function": m.function, "op": m.op,
             "mutation": m.description, "kind": kind, "claims": claims, "tests": tests}
    if not claims and not tests:
        return {**entry, "status": "survived", "by": None,
                "detail": "no claim executes its function, no test executes its line", "seconds": 0.0}
    target = repo / m.path
    pristine = target.read_text()
    if not valid(m, pristine):
        return {**entry, "status": "invalid", "by": None, "detail": "does not parse, or parses to the original",
                "seconds": 0.0}
    claim_cost = sum(base["claims"][c]["seconds"] for c in claims)
    test_cost = sum(cov_seconds[t] for t in tests)
    timeout = factor * (claim_cost + test_cost) + overhead
    start = time.perf_counter()
    try:
        target.write_text(m.text)
        reply = server.run(claims, verdicts_file, tests, timeout, phases=phases(claims, tests, claim_cost, cov_seconds))
    finally:
        target.write_text(pristine)
    seconds = round(time.perf_counter() - start, 2)
    if reply["status"] == "timeout":
        return {**entry, "status": "killed", "by": "timeout", "detail": f"over {timeout:.0f} s", "seconds": seconds}
    if reply["status"] == "crash":
        return {**entry, "status": "killed", "by": "crash", "detail": reply["tail"][-300:], "seconds": seconds}
    result = reply["result"]
    if result.get("error"):
        raise SystemExit(f"{m.id}: {result['error']}")
    killed = result["killed_by"] is not None
    return {**entry, "status": "killed" if killed else "survived", "by": result["killed_by"],
            "detail": result["detail"], "seconds": seconds}


def run_mutant(repo: Path, m: Mutant, claims: list[str], tests: list[str], base: dict, verdicts_file: Path,
               factor: float, overhead: float, kind: str = "formula") -> dict:
    entry = {"id": m.id, "path": m.path, "line": m.line, "function": m.function, "op": m.op,
             "mutation": m.description, "kind": kind, "claims": claims, "tests": tests}
    if not claims and not tests:
        return {**entry, "status": "survived", "by": None, "detail": "no claim executes it, no test imports it",
                "seconds": 0.0}
    cost = sum(base["claims"][c]["seconds"] for c in claims) + sum(base["tests"][t]["seconds"] for t in tests)
    timeout = factor * cost + overhead
    target = repo / m.path
    pristine = target.read_text()
    if not valid(m, pristine):
        return {**entry, "status": "invalid", "by": None, "detail": "does not parse, or parses to the original",
                "seconds": 0.0}
    start = time.perf_counter()
    try:
        target.write_text(m.text)
        status, result, tail = _worker(repo, ["kill", "--claims", *claims, "--verdicts", str(verdicts_file),
                                              "--tests", *tests], timeout)
    finally:
        target.write_text(pristine)
    seconds = round(time.perf_counter() - start, 2)
    if status == "timeout":
        return {**entry, "status": "killed", "by": "timeout", "detail": f"over {timeout:.0f} s", "seconds": seconds}
    if status == "crash":
        return {**entry, "status": "killed", "by": "crash", "detail": tail[-300:], "seconds": seconds}
    killed = result["killed_by"] is not None
    return {**entry, "status": "killed" if killed else "survived", "by": result["killed_by"],
            "detail": result["detail"], "seconds": seconds}


def run_on_jobs(items: list[int], jobs: list, run: Callable[[int, object], dict],
                record: Callable[[int, dict], None]) -> list[int]:
    """Run every item, each on a job no other item holds at the time, calling ``record(item, entry)`` as each
    finishes (in any order). With more than one job, an item killed by a timeout or a crash (which may be the
    contention or memory of the other jobs) is run again alone on the first job once all are done, and that fate
    is recorded, the first one kept in its ``beside_other_jobs``. Returns the items run again."""
    if len(jobs) == 1:
        for i in items:
            record(i, run(i, jobs[0]))
        return []
    free: queue.Queue = queue.Queue()
    for job in jobs:
        free.put(job)
    entries: dict[int, dict] = {}

    def on_a_free_job(i: int) -> tuple[int, dict]:
        job = free.get()
        try:
            return i, run(i, job)
        finally:
            free.put(job)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        for future in as_completed([pool.submit(on_a_free_job, i) for i in items]):
            i, entry = future.result()
            entries[i] = entry
            record(i, entry)
    again = [i for i in items if entries[i]["status"] == "killed" and entries[i]["by"] in ("timeout", "crash")]
    for i in again:
        first = entries[i]
        entry = run(i, jobs[0])
        entry["beside_other_jobs"] = {"by": first["by"], "detail": first["detail"], "seconds": first["seconds"]}
        record(i, entry)
    return again


def method_functions() -> set[str]:
    """``module.function`` of every registered claim method (the check code that decides a verdict)."""
    sys.path.insert(0, str(ROOT))
    from dpo_rlhf_checks.registry import CLAIMS

    return {target.replace(":", ".") for c in CLAIMS for target in c.methods.values()}


def kind_of(function: str, methods: set[str]) -> str:
    """"method" for a claim method's own code (and its nested defs), "formula" for everything it calls."""
    return "method" if any(function == f or function.startswith(f + ".") for f in methods) else "formula"


def summarise(entries: list[dict], total_by_module: Counter, sampled: bool) -> dict:
    per = defaultdict(Counter)
    kinds = defaultdict(Counter)
    for e in entries:
        per[e["path"]][e["status"]] += 1
        kinds[e.get("kind", "formula")][e["status"]] += 1
    rows = []
    for path in sorted(per):
        c = per[path]
        n = c["killed"] + c["survived"]
        lo, hi = wilson(c["killed"], n)
        rows.append({"module": path, "mutants_in_module": total_by_module[path], "run": n + c["equivalent"],
                     "killed": c["killed"], "survived": c["survived"], "equivalent": c["equivalent"],
                     "score": c["killed"] / n if n else None, "wilson95": [lo, hi]})
    k = sum(r["killed"] for r in rows)
    n = k + sum(r["survived"] for r in rows)
    lo, hi = wilson(k, n)
    by_kind = {}
    for kind, c in sorted(kinds.items()):
        nk = c["killed"] + c["survived"]
        by_kind[kind] = {"killed": c["killed"], "non_equivalent": nk, "score": c["killed"] / nk if nk else None,
                         "wilson95": list(wilson(c["killed"], nk))}
    # strict: the mutants reviewed as changing only a check's inputs or its report text count as survivors
    soft = sum(e["status"] == "equivalent" and e.get("class") != "equivalent" for e in entries)
    strict = list(wilson(k, n + soft))
    return {"rows": rows, "by_kind": by_kind, "strict": {"killed": k, "of": n + soft,
                                                         "score": k / (n + soft) if n + soft else None,
                                                         "wilson95": strict},
            "killed": k, "non_equivalent": n, "equivalent": sum(r["equivalent"] for r in rows),
            "score": k / n if n else None, "wilson95": [lo, hi], "sampled": sampled}


def markdown(report: dict) -> str:
    s = report["summary"]
    lines = ["# Mutation score", "",
             f"Command: `{report['command']}`; {report['mutants_run']} of {report['mutants_total']} mutants "
             f"({'a sample, seed ' + str(report['seed']) if s['sampled'] else 'all'}); "
             f"{report['seconds'] / 60:.1f} min ({report['mutants_per_minute']:.2f} mutants/min; "
             f"{report.get('seconds_per_mutant_run')} s per mutant run, baselines not counted); "
             f"runner: {report.get('runner', 'legacy')}, {report.get('jobs', 1)} job(s) at once; "
             f"tree {report['tree']}.", "",
             f"**Score: {s['killed']}/{s['non_equivalent']} = "
             f"{(s['score'] or 0) * 100:.1f} %** of non-equivalent mutants killed "
             f"(95 % Wilson interval {s['wilson95'][0] * 100:.1f} - {s['wilson95'][1] * 100:.1f} %); "
             f"{s['equivalent']} equivalent mutants left out. Goal: >= 90 %.", "",
             f"Strict (the reviewed input, report and tolerance mutants counted as survivors): "
             f"{s['strict']['killed']}/{s['strict']['of']} = {(s['strict']['score'] or 0) * 100:.1f} % "
             f"({s['strict']['wilson95'][0] * 100:.1f} - {s['strict']['wilson95'][1] * 100:.1f} %).", "",
             "By kind of code (formula: the functions the methods call; method: a claim method's own body): "
             + "; ".join(f"{kind} {c['killed']}/{c['non_equivalent']} = {(c['score'] or 0) * 100:.1f} % "
                         f"({c['wilson95'][0] * 100:.1f} - {c['wilson95'][1] * 100:.1f} %)"
                         for kind, c in s["by_kind"].items()) + ".", "",
             "| module | mutants in module | run | killed | survived | equivalent | score | 95 % Wilson |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in s["rows"]:
        score = "-" if r["score"] is None else f"{r['score'] * 100:.0f} %"
        lines.append(f"| {r['module']} | {r['mutants_in_module']} | {r['run']} | {r['killed']} | {r['survived']} | "
                     f"{r['equivalent']} | {score} | {r['wilson95'][0] * 100:.0f} - {r['wilson95'][1] * 100:.0f} % |")
    by = Counter(e["by"] for e in report["mutants"] if e["status"] == "killed")
    lines += ["", "Killed by: " + ", ".join(f"{k} {v}" for k, v in sorted(by.items())), ""]
    survivors = [e for e in report["mutants"] if e["status"] == "survived"]
    lines += [f"## Survivors ({len(survivors)})", ""]
    for e in sorted(survivors, key=lambda e: (e["path"], e["line"])):
        why = f" ({e['detail']})" if e["detail"] else f" (claims {len(e['claims'])}, test files {len(e['tests'])})"
        lines.append(f"- `{e['path']}:{e['line']}` {e['op']}: `{e['mutation']}`{why} — id `{e['id']}`")
    equivalents = [e for e in report["mutants"] if e["status"] == "equivalent"]
    lines += ["", f"## Equivalent mutants ({len(equivalents)})", ""]
    for e in sorted(equivalents, key=lambda e: (e["path"], e["line"])):
        lines.append(f"- `{e['path']}:{e['line']}` {e['op']}: `{e['mutation']}`: {e.get('class', 'equivalent')}: "
                     f"{e['detail']} — id `{e['id']}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=None, help="run a deterministic sample of N mutants")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    parser.add_argument("--modules", nargs="+", default=None,
                        help="only files whose path starts with one of these (e.g. toy_bandits dpo_rlhf_checks/losses.py)")
    parser.add_argument("--exclude-modules", nargs="+", default=None,
                        help="leave out files whose path starts with one of these (e.g. the modules run in full)")
    parser.add_argument("--ops", nargs="+", default=None, choices=OPERATORS, help="only these operators")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "mutation",
                        help="output folder (default results/mutation/, ignored by git)")
    parser.add_argument("--timeout-factor", type=float, default=3.0,
                        help="a mutant's timeout: this times its killers' baseline seconds, plus --overhead")
    parser.add_argument("--overhead", type=float, default=None,
                        help="seconds added to every timeout (default 30; 90 with --legacy, which imports everything "
                             "per mutant)")
    parser.add_argument("--legacy", action="store_true",
                        help="the old path: a fresh process per mutant, whole test files chosen by import only "
                             "(no line coverage, no fork server); for comparison")
    parser.add_argument("--lm-all", action="store_true", help="run the LM claims for every mutant they measure")
    parser.add_argument("--refresh-baseline", action="store_true", help="recompute the cached baseline")
    parser.add_argument("--rerun-survivors", type=Path, default=None,
                        help="a previous mutation.json: run only its survivors again and merge the results")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="a previous mutation.json: take the fates of its mutants when the code and the test "
                             "files are unchanged (same tree), run the others")
    parser.add_argument("--run-reviewed", action="store_true",
                        help="run only the reviewed mutants of mutation_equivalent.json (in the chosen modules), as "
                             "ordinary mutants: a killed one is a wrong review (listed, exit 1)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="mutants run at once, each in its own copy of the repository with its own fork server "
                             "(default 1); a timeout or crash seen beside other jobs is run again alone before it "
                             "counts")
    parser.add_argument("--list", action="store_true", help="count the mutants per module and operator and exit")
    args = parser.parse_args(argv)
    if args.sample is not None and args.sample < 1:
        parser.error("--sample: must be a positive integer")
    if args.jobs < 1:
        parser.error("--jobs: must be a positive integer")
    if args.jobs > 1 and args.legacy:
        parser.error("--jobs: the fork-server runner only (not with --legacy)")
    if args.overhead is None:
        args.overhead = 90.0 if args.legacy else 30.0
    everything = all_mutants(args.modules)
    if args.exclude_modules:
        everything = [m for m in everything if not any(m.path.startswith(x.rstrip("/")) for x in args.exclude_modules)]
    if args.ops:
        everything = [m for m in everything if m.op in args.ops]
    if not everything:
        parser.error(f"--modules: no formula file starts with {args.modules}")
    total_by_module = Counter(m.path for m in everything)
    if args.list:
        for path, n in sorted(total_by_module.items()):
            print(f"{n:6d}  {path}")
        print(f"{len(everything):6d}  total; by operator: {dict(Counter(m.op for m in everything))}")
        return 0
    previous = None
    by_id = {m.id: m for m in everything}
    if args.rerun_survivors is not None:
        previous = json.loads(args.rerun_survivors.read_text())
        chosen = [by_id[e["id"]] for e in previous["mutants"] if e["status"] == "survived" and e["id"] in by_id]
        missing = [e["id"] for e in previous["mutants"] if e["status"] == "survived" and e["id"] not in by_id]
        if missing:
            print(f"warning: {len(missing)} survivors no longer exist (their code changed): {missing[:5]}")
    elif args.sample is not None and args.sample < len(everything):
        chosen = random.Random(args.seed).sample(sorted(everything, key=lambda m: m.id), args.sample)
    else:
        chosen = everything
    equivalent = json.loads(EQUIVALENT_FILE.read_text()) if EQUIVALENT_FILE.exists() else {}
    for key, value in equivalent.items():
        if value.get("class") not in REVIEW_CLASSES or not value.get("reason", "").strip():
            parser.error(f"{EQUIVALENT_FILE.name}: {key}: needs a class {REVIEW_CLASSES} and a reason")
    reviewed = {}
    if args.run_reviewed:  # the second reader's check: a reviewed mutant that a claim or test kills is no survivor
        stale = sorted(set(equivalent) - set(by_id))
        if stale:
            print(f"warning: {len(stale)} reviewed ids name no mutant (their code changed): {stale}")
        chosen = [by_id[k] for k in sorted(equivalent) if k in by_id]
        reviewed, equivalent = equivalent, {}
    args.out.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    start = time.perf_counter()
    servers: list[Server] = []
    tmp = Path(tempfile.mkdtemp(prefix="mutation_score_"))
    repo = tmp / "repo"
    try:
        shutil.copytree(ROOT, repo, ignore=IGNORE)
        imports = test_imports(repo)
        formula_modules = {m.module for m in everything}
        needed = sorted(t for t, names in imports.items() if any(imports_module(names, f) for f in formula_modules))
        base = baseline(repo, args.out, needed if args.legacy else [], args.refresh_baseline)
        cov = None
        if not args.legacy:
            # every test file (not only those importing a formula module): a test that reaches a formula through
            # another module is a killer too, found by its lines
            needed = sorted(imports)
            cov = coverage_baseline(repo, args.out, needed, base, args.refresh_baseline)
            base["tree"] = _hash([repo / t for t in needed], repo) + "-" + base["code"]
            cache = {k: v for k, v in base.items() if k != "tree"}
            (args.out / "baseline.json").write_text(json.dumps(cache, indent=1))
            cov_seconds = {t["id"]: t["seconds"] for t in cov["tests"]}
            opaque = sum(t["opaque"] for t in cov["tests"])
            print(f"coverage baseline: {len(cov['tests'])} tests ({opaque} opaque: started a process or ran a "
                  f"claim), {cov['seconds']:.0f} s when computed", flush=True)
        broken = {t: v["failed"] for t, v in base["tests"].items() if v["failed"]}
        if broken:
            print(f"warning: {len(broken)} test files fail on the unmutated copy and kill nothing: {sorted(broken)}")
        methods = method_functions()
        verdicts = json.dumps({cid: c["verdict"] for cid, c in base["claims"].items()})
        reused = {}
        if args.reuse is not None:
            old_report = json.loads(args.reuse.read_text())
            if old_report["tree"] == base["tree"]:
                reused = {e["id"]: e for e in old_report["mutants"] if e["status"] in ("killed", "survived")}
            elif old_report["tree"].split("-")[-1] == base["code"]:
                # the same toolkit code, other test files: a test added since can only kill more, so the killed
                # stay killed and the survivors run again
                reused = {e["id"]: e for e in old_report["mutants"] if e["status"] == "killed"}
                print(f"--reuse: same code, other tests: {len(reused)} killed mutants reused, survivors run again")
            else:
                print(f"--reuse: {args.reuse} was run on other code ({old_report['tree']}); nothing reused")
        # one repository copy, fork server and verdicts file per job: a mutant is written into its job's copy only
        jobs = []
        for j in range(args.jobs):
            job_repo = repo if j == 0 else tmp / f"repo{j}"
            if j > 0:
                shutil.copytree(repo, job_repo, ignore=IGNORE)
            scratch = tmp if j == 0 else tmp / f"job{j}"
            scratch.mkdir(exist_ok=True)
            (scratch / "verdicts.json").write_text(verdicts)
            server = None if args.legacy else Server(job_repo, scratch)
            if server is not None:
                servers.append(server)
            canary(job_repo, server, base, cov, scratch / "verdicts.json")
            jobs.append((job_repo, server, scratch / "verdicts.json"))

        def run_one(m: Mutant, job: tuple[Path, Server | None, Path]) -> dict:
            job_repo, server, verdicts_file = job
            claims, tests = killers(m, base, imports, args.lm_all)
            if args.legacy:
                return run_mutant(job_repo, m, claims, tests, base, verdicts_file, args.timeout_factor,
                                  args.overhead, kind_of(m.function, methods))
            tests = select_tests(m, cov, imports)
            return run_mutant_fast(job_repo, server, m, claims, tests, base, cov_seconds, verdicts_file,
                                   args.timeout_factor, args.overhead, kind_of(m.function, methods))

        slots: list[dict | None] = [None] * len(chosen)
        todo = []
        for i, m in enumerate(chosen):
            if m.id in reused and m.id not in equivalent:
                slots[i] = {**reused[m.id], "kind": kind_of(m.function, methods)}
            elif m.id in equivalent:
                slots[i] = {"id": m.id, "path": m.path, "line": m.line, "function": m.function, "op": m.op,
                            "mutation": m.description, "kind": kind_of(m.function, methods), "claims": [],
                            "tests": [], "status": "equivalent", "class": equivalent[m.id]["class"],
                            "by": None, "detail": equivalent[m.id]["reason"], "seconds": 0.0}
            else:
                todo.append(i)
        bar = tqdm(total=len(chosen), initial=len(chosen) - len(todo), unit="mutant", dynamic_ncols=True)
        done = 0

        def record(i: int, entry: dict) -> None:
            nonlocal done
            if slots[i] is None:  # not a rerun alone
                bar.update(1)
            slots[i] = entry
            done += 1
            have = [e for e in slots if e is not None]
            killed = sum(e["status"] == "killed" for e in have)
            bar.set_postfix(killed=f"{killed}/{sum(e['status'] != 'equivalent' for e in have)}")
            if done % 10 == 0:  # a partial report survives an interrupted run (--reuse takes it)
                (args.out / "mutation.partial.json").write_text(
                    json.dumps({"tree": base["tree"], "mutants": have}, indent=1))

        again = run_on_jobs(todo, jobs, lambda i, job: run_one(chosen[i], job), record)
        if again:
            print(f"{len(again)} timeouts or crashes beside other jobs run again alone: "
                  f"{sum(slots[i]['status'] == 'killed' for i in again)} killed again")
        bar.close()
        entries = [e for e in slots if e is not None]
    finally:
        for server in servers:
            server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - start
    ran = [e for e in entries if e["seconds"] > 0 and e["id"] not in reused]
    if previous is not None:  # merge: the previous entries, with the survivors' new fates
        new = {e["id"]: e for e in entries}
        entries = [new.get(e["id"], e) for e in previous["mutants"]]
        total_by_module = Counter(previous["mutants_per_module"])
    sampled = previous["summary"]["sampled"] if previous else len(chosen) < len(everything)
    report = {
        "command": "python tests/mutation_score.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "tree": base["tree"], "seed": args.seed, "mutants_total": sum(total_by_module.values()),
        "mutants_run": len(entries), "mutants_per_module": dict(total_by_module), "seconds": round(seconds, 1),
        "mutants_per_minute": round(len(ran) / (seconds / 60), 3) if ran else 0.0,
        "runner": "legacy (a process per mutant, test files by import)" if args.legacy
        else "fork server, tests by line coverage", "jobs": args.jobs,
        "seconds_per_mutant_run": round(sum(e["seconds"] for e in ran) / len(ran), 2) if ran else None,
        "coverage_seconds": None if cov is None else cov.get("seconds"),
        "baseline_seconds": base.get("seconds"), "summary": summarise(entries, total_by_module, sampled),
        "mutants": entries,
    }
    if previous is not None:
        report["rerun_of"] = str(args.rerun_survivors)
    (args.out / "mutation.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (args.out / "mutation.md").write_text(text)
    (args.out / "mutation.partial.json").unlink(missing_ok=True)
    print(text.split("## Survivors")[0])
    print(f"wrote {args.out / 'mutation.json'}, {args.out / 'mutation.md'}")
    if reviewed:
        wrong = [e for e in entries if e["status"] == "killed"]
        for e in entries:
            print(f"reviewed {reviewed[e['id']]['class']}: {e['path']}:{e['line']} {e['mutation']}: {e['status']}"
                  + (f" by {e['by']} ({e['detail']})" if e["status"] == "killed" else ""))
        if wrong:
            print(f"{len(wrong)} reviewed mutants are killed: their review is wrong")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
