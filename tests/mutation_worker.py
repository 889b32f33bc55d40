"""The killer process of tests/mutation_score.py; it runs inside a copy of the repository, never in a worktree.

    python tests/mutation_worker.py baseline --tests T ... --out F   every claim (--quick) and the test files once:
        verdicts, measured function sets and seconds per claim, outcome and seconds per test file (--no-claims:
        the test files only)
    python tests/mutation_worker.py kill --claims ID ... --verdicts F --tests T ... --out F
        the claims (in order; the first whose verdict differs from the baseline kills), then ``pytest -x`` on the
        test files; writes {"killed_by": ..., "detail": ...} ("killed_by" null when the mutant survived)

    python tests/mutation_worker.py coverage --tests T ... --formula F ... --out F
        the test files once under a line tracer: per test id, its outcome, seconds and the formula lines it executed
        (with the lines of the module- and session-scoped fixtures it uses), and the formula lines executed while
        a toolkit module was being imported (see :class:`LineCoverage`)
    python tests/mutation_worker.py serve
        a fork server: imports the heavy libraries (torch, sympy, cvxpy, pytest, ...) and the toolkit once, then
        forgets the toolkit's modules again; for each request (a JSON line on stdin) it forks a child that imports
        the toolkit fresh from the (mutated) files, runs the claims and the selected test ids, and answers one JSON
        line on stdout (see :func:`serve`)

``kill`` runs in a process of its own, so a mutated module is imported fresh; the caller owns the timeout. ``serve``
gives the same isolation by fork: the parent never holds a toolkit module, every child is a fresh copy of it and
exits after one mutant, so nothing a mutant changes (a module, a cache, a global) reaches the next one.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from pathlib import Path

import pytest

TOOLKIT_PACKAGES = ("dpo_rlhf_checks", "theory", "toy_bandits", "toy_lm", "figures")


class _FileTimes:
    """pytest plugin: seconds and outcome per test file, and the first failing test id."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.failed: dict[str, list[str]] = {}
        self.first_failure: str | None = None
        self.ran: set[str] = set()

    def pytest_runtest_logreport(self, report):  # noqa: D102
        self.ran.add(report.nodeid)
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


class _Select:
    """pytest plugin: keep only the given test ids (in collection order)."""

    def __init__(self, ids: set[str]):
        self.ids = ids

    def pytest_collection_modifyitems(self, config, items):  # noqa: D102
        keep = [item for item in items if item.nodeid in self.ids]
        drop = [item for item in items if item.nodeid not in self.ids]
        if drop:
            config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _pytest(files: list[str], stop_first: bool, plugins: tuple = (), only: set[str] | None = None
            ) -> tuple[int, _FileTimes]:
    plugin = _FileTimes()
    args = ["-q", "-p", "no:cacheprovider", "--no-header", "-o", "console_output_style=classic"]
    if stop_first:
        args.append("-x")
    extra = [*plugins] + ([_Select(only)] if only is not None else [])
    code = pytest.main([*args, *files], plugins=[plugin, *extra])
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


_SKIP, _OPAQUE = object(), object()
# Python code that hands work to another process, or replaces the tracer: the lines it reaches are not seen
_OPAQUE_CODE = {("subprocess.py", "_execute_child"), ("popen_fork.py", "_launch"),
                ("popen_spawn_posix.py", "_launch"), ("popen_forkserver.py", "_launch"),
                ("tracing.py", "measure_calls")}


class LineCoverage:
    """pytest plugin: which formula lines each test executes (``sys.settrace`` and ``threading.settrace``).

    - Every test id gets the set of (formula file, line) it executed: in its own setup, call and teardown, and in
      the setup of every module-, class-, package- or session-scoped fixture it uses (whichever test happened to
      set the fixture up first), so a test that reads a shared fixture depends on the lines that built it.
    - Before each test every ``functools.lru_cache`` of the toolkit and of the test modules and every memoised
      toolkit cache (``tracing.MEMOISED``) is cleared, so a test executes what it reads instead of finding it in a
      cache another test filled.
    - A test is **opaque** when its lines cannot be seen: it starts a process (``subprocess``,
      ``multiprocessing``) or calls ``tracing.measure_calls`` (which replaces the tracer while a claim runs). The
      caller selects an opaque test by the import rule instead (its file imports the mutated module).
    - Lines executed while any toolkit module is being imported (module bodies, class bodies, defaults, and the
      functions a module body calls) are also kept apart (``import_lines``), as are lines executed outside every
      test (collection): which test first imported a module is an accident of order, so the caller selects such
      a line's mutants by the import rule as well.
    """

    def __init__(self, root: Path, formula: list[str]):
        self.root = str(root) + "/"
        self.formula = {str(root / f): f for f in formula}
        self.toolkit_dirs = tuple(str(root / p) + "/" for p in TOOLKIT_PACKAGES)
        self.current = "<collection>"
        self.hits: dict[str, set] = defaultdict(set)
        self.import_lines: set = set()
        self.opaque: set[str] = set()
        self.depth = 0
        self.kinds: dict = {}
        self.tests: dict[str, dict] = {}
        self.fixtures: dict[str, set[str]] = {}  # test id -> keys of its non-function-scoped fixtures

    # -- the tracer
    def _classify(self, code):
        filename = code.co_filename
        rel = self.formula.get(filename)
        if code.co_name == "<module>" and filename.startswith(self.toolkit_dirs):
            return ("module", rel)
        if rel is not None:
            return rel
        if (Path(filename).name, code.co_name) in _OPAQUE_CODE:
            return _OPAQUE
        return _SKIP

    def trace(self, frame, event, arg):
        code = frame.f_code
        try:
            kind = self.kinds[code]
        except KeyError:
            kind = self.kinds[code] = self._classify(code)
        if kind is _SKIP:
            return None
        if kind is _OPAQUE:
            self.opaque.add(self.current)
            return None
        if isinstance(kind, tuple):  # a toolkit module body being imported
            rel = kind[1]
            self.depth += 1
            if rel is None:
                frame.f_trace_lines = False

            def module_body(frame, event, arg):
                if event == "line" and rel is not None:
                    key = (rel, frame.f_lineno)
                    self.hits[self.current].add(key)
                    self.import_lines.add(key)
                elif event == "return":
                    self.depth -= 1
                return module_body
            return module_body
        rel = kind

        def local(frame, event, arg):
            if event == "line":
                key = (rel, frame.f_lineno)
                self.hits[self.current].add(key)
                if self.depth:
                    self.import_lines.add(key)
            return local
        return local

    def install(self):
        sys.settrace(self.trace)
        threading.settrace(self.trace)

    # -- pytest hooks
    def _clear_caches(self):
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None) or ""
            if module is None or not file.startswith(self.root):
                continue
            for value in list(vars(module).values()):
                if hasattr(value, "cache_clear") and hasattr(value, "__wrapped__"):
                    value.cache_clear()
        tracing = sys.modules.get("dpo_rlhf_checks.tracing")
        for cache_path in getattr(tracing, "MEMOISED", {}).values():
            module_name, _, attr = cache_path.rpartition(".")
            cache = getattr(sys.modules.get(module_name), attr, None)
            if cache:
                cache.clear()

    @staticmethod
    def _fixture_key(fixturedef) -> str:
        return f"fixture:{fixturedef.scope}:{fixturedef.baseid}::{fixturedef.argname}"

    def pytest_runtest_protocol(self, item, nextitem):  # noqa: D102
        keys = set()
        for name in item.fixturenames:
            defs = item._fixtureinfo.name2fixturedefs.get(name)
            if defs and defs[-1].scope != "function":
                keys.add(self._fixture_key(defs[-1]))
        self.fixtures[item.nodeid] = keys
        self._clear_caches()
        self.current = item.nodeid
        self.install()  # again: a test may have removed it

    def pytest_runtest_logfinish(self, nodeid, location):  # noqa: D102
        self.current = "<collection>"

    def pytest_runtest_logreport(self, report):  # noqa: D102
        entry = self.tests.setdefault(report.nodeid, {"seconds": 0.0, "failed": False})
        entry["seconds"] += report.duration
        entry["failed"] = entry["failed"] or report.failed

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):  # noqa: D102
        if fixturedef.scope == "function":
            yield
            return
        previous, self.current = self.current, self._fixture_key(fixturedef)
        try:
            yield
        finally:
            self.current = previous

    def result(self) -> dict:
        """{"tests": [{id, file, seconds, failed, opaque, lines: {formula file: [line]}}], "import_lines":
        {file: [line]}, "collection_lines": {file: [line]}}"""
        def group(keys) -> dict[str, list[int]]:
            out: dict[str, list[int]] = defaultdict(list)
            for rel, line in sorted(keys):
                out[rel].append(line)
            return dict(out)

        tests = []
        for t in sorted(self.tests):
            own = set(self.hits.get(t, set()))
            opaque = t in self.opaque
            for key in self.fixtures.get(t, ()):
                own |= self.hits.get(key, set())
                opaque = opaque or key in self.opaque
            tests.append({"id": t, "file": t.split("::", 1)[0], "seconds": round(self.tests[t]["seconds"], 3),
                          "failed": self.tests[t]["failed"], "opaque": opaque, "lines": group(own)})
        return {"tests": tests, "import_lines": group(self.import_lines),
                "collection_lines": group(self.hits.get("<collection>", set()))}


REPO = Path(__file__).resolve().parents[1]
# imported once by the fork server (each if installed): what every child would otherwise import again
HEAVY = ("numpy", "scipy", "scipy.special", "scipy.optimize", "scipy.stats", "scipy.integrate", "scipy.linalg",
         "mpmath", "sympy", "cvxpy", "torch", "hypothesis", "matplotlib", "matplotlib.pyplot", "tqdm",
         "transformers", "trl", "accelerate")


def _forget_toolkit() -> None:
    """Remove every toolkit module (and every module loaded from the repository) from ``sys.modules``."""
    prefix = str(REPO) + "/"
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or ""
        if name.split(".", 1)[0] in TOOLKIT_PACKAGES or file.startswith(prefix):
            del sys.modules[name]


def _preload() -> None:
    """Import the heavy libraries and every toolkit module (which pulls in whatever else they import), then
    forget the toolkit modules: the server keeps only third-party code, and each child imports the toolkit from
    the files as they are when it starts (about 0.2 s)."""
    for name in HEAVY:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001  not installed, or broken: the child imports it itself
            pass
    for package_name in TOOLKIT_PACKAGES:
        try:
            package = importlib.import_module(package_name)
            for info in pkgutil.walk_packages(package.__path__, package_name + "."):
                try:
                    importlib.import_module(info.name)
                except Exception:  # noqa: BLE001
                    pass
        except Exception:  # noqa: BLE001
            pass
    _forget_toolkit()


def _kill(claims: list[str], verdicts: Path | None, tests: list[str], scratch: Path, tests_first: bool = False
          ) -> dict:
    """The claims (the first whose verdict differs from ``verdicts`` kills) and ``pytest -x`` on the test ids
    ``tests`` (only those: the other tests of their files are deselected); the claims first unless
    ``tests_first`` (the caller puts the cheaper group first; the order changes the time, never the fate)."""
    def run_claims():
        expected = json.loads(verdicts.read_text())
        _, flipped = _run_claims(claims, expected, scratch)
        return None if flipped is None else {"killed_by": "claim", "detail": flipped}

    def run_tests():
        files = list(dict.fromkeys(t.split("::", 1)[0] for t in tests))
        selected = set(tests)
        code, times = _pytest(files, stop_first=True, only=selected)
        if code not in (0, 5):  # 5: nothing collected
            return {"killed_by": "test", "detail": times.first_failure or f"pytest exit {code}"}
        if times.ran != selected:  # a selected id that was not collected would let a mutant survive untested
            missing = sorted(selected - times.ran)
            return {"killed_by": None, "detail": None,
                    "error": f"{len(missing)} selected test ids did not run: {missing[:3]}"}
        return None

    steps = [(claims, run_claims), (tests, run_tests)]
    for items, step in (steps[::-1] if tests_first else steps):
        if items:
            outcome = step()
            if outcome is not None:
                return outcome
    return {"killed_by": None, "detail": None}


def _wait(pid: int, timeout: float) -> tuple[str, int | None]:
    """Wait for a child; ("exit", its exit code) or ("timeout", None) after killing its process group."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            try:
                os.killpg(pid, signal.SIGKILL)  # whatever it started and left behind
            except (ProcessLookupError, PermissionError):
                pass
            return "exit", os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return "timeout", None
        time.sleep(0.02)


def serve() -> int:
    """The fork server: one JSON request per stdin line, one JSON reply per stdout line.

    Request: {"claims", "verdicts", "tests", "timeout", "out", "log", "scratch"}, or "phases" (a list of
    {"claims", "tests"}: each phase in a child of its own, in order, stopping at the first kill). The caller has written the
    mutated file into the repository before the request and restores it after the reply. Reply: {"status":
    "ok" | "timeout" | "crash", "result": the child's {"killed_by", "detail"} or null, "tail": the end of the
    child's output for a crash}. The child runs in a session of its own (a timeout kills it and everything it
    started) with its output in ``log``; it exits after one mutant.
    """
    _preload()
    reply_to = os.fdopen(os.dup(1), "w", buffering=1)
    print(json.dumps({"ready": True, "pid": os.getpid()}), file=reply_to, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        # phases: each {"claims", "tests", "tests_first"} runs in a child of its own, in order, until one kills;
        # they share the request's timeout (one mutant, one budget)
        phases = request.get("phases") or [{"claims": request["claims"], "tests": request["tests"],
                                            "tests_first": request.get("tests_first", False)}]
        deadline = time.monotonic() + request["timeout"]
        reply = {"status": "ok", "result": {"killed_by": None, "detail": None}, "tail": ""}
        for phase in phases:
            reply = _run_child(request, phase, max(deadline - time.monotonic(), 0.01))
            if reply["status"] != "ok" or reply["result"]["killed_by"] is not None or reply["result"].get("error"):
                break
        print(json.dumps(reply), file=reply_to, flush=True)
    return 0


def _run_child(request: dict, phase: dict, timeout: float) -> dict:
    """Fork a child that imports the toolkit afresh and runs one phase; its reply (see :func:`serve`)."""
    out, log = Path(request["out"]), Path(request["log"])
    out.unlink(missing_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: one phase of one mutant, then exit
        code = 1
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            import linecache

            linecache.clearcache()
            result = _kill(phase["claims"], Path(request["verdicts"]) if request["verdicts"] else None,
                           phase["tests"], Path(request["scratch"]), phase.get("tests_first", False))
            out.write_text(json.dumps(result))
            code = 0
        except BaseException:  # noqa: BLE001  a crash of the mutant's run, reported by its exit code
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    status, code = _wait(pid, timeout)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    if status == "timeout":
        return {"status": "timeout", "result": None, "tail": tail}
    if code != 0 or not out.exists():
        return {"status": "crash", "result": None, "tail": tail}
    return {"status": "ok", "result": json.loads(out.read_text()), "tail": ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("baseline", "kill", "coverage", "serve"))
    parser.add_argument("--claims", nargs="*", default=[])
    parser.add_argument("--tests", nargs="*", default=[])
    parser.add_argument("--formula", nargs="*", default=[], help="coverage: the formula files (relative paths)")
    parser.add_argument("--verdicts", type=Path, help="kill: the baseline verdicts (JSON: claim id -> verdict)")
    parser.add_argument("--no-claims", action="store_true", help="baseline: the test files only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        return serve()
    if args.out is None:
        parser.error("--out is required")
    scratch = Path(tempfile.mkdtemp(prefix="mutation_worker_"))  # the claims' output folder, removed after
    try:
        return _run_mode(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_mode(args: argparse.Namespace, scratch: Path) -> int:
    if args.mode == "coverage":
        cov = LineCoverage(REPO, args.formula)
        cov.install()
        try:
            code, times = _pytest(args.tests, stop_first=False, plugins=(cov,))
        finally:
            sys.settrace(None)
            threading.settrace(None)
        result = cov.result()
        result["files"] = {f: {"seconds": round(times.seconds.get(f, 0.0), 3), "failed": times.failed.get(f, [])}
                           for f in args.tests}
        result["pytest_exit"] = code
        args.out.write_text(json.dumps(result))
        return 0
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
