"""The mutant generator of tests/mutation_score.py: each operator makes a mutant that differs from the original
and that a planted killer (a check of the function's values at chosen points) kills; ids are stable; the runner's
killer selection and its Wilson interval. The slow test runs ``mutation_score.py --sample`` on one small module.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_ops import OPERATORS, mutants, valid  # noqa: E402
import mutation_score  # noqa: E402

SOURCE = '''"""A module docstring with 3 numbers 1 < 2 is not mutated."""
import math

SCALE = 3.0


def f(a, b):
    """Docstring: 2 * a is not mutated."""
    if a < b:
        low = min(a, b) + 2.0 * (a - b)
    elif a >= b + 1:
        low = -math.pow(a, b) / b
    else:
        low = a ** 2 - b
    if a == b + 10:
        raise ValueError(f"tie at {a + 1}")  # not mutated: an error message
    return low * SCALE


def g(x):
    def inner(y):
        return y - 0.5
    return inner(x) + x
'''
POINTS = [(1.0, 2.0), (2.0, 1.0), (3.0, 1.5), (1.5, 1.25), (0.5, 1.0), (4.0, 2.0), (2.0, 2.0), (1.0, 1.0),
          (3.0, 2.0), (-1.0, 0.5), (3.0, 2.25), (12.0, 2.0)]


def _values(text: str):
    ns: dict = {}
    exec(compile(text, "<mutant>", "exec"), ns)
    out = []
    for a, b in POINTS:
        try:
            out.append(round(ns["f"](a, b), 12))
        except Exception as err:  # a raise is an observable difference too
            out.append(type(err).__name__)
    for x in (0.0, 1.0, 3.0):
        out.append(round(ns["g"](x), 12))
    return out


def test_every_operator_makes_mutants_that_differ_and_the_planted_killer_kills_each():
    found = mutants(SOURCE, "pkg/mod.py", "pkg.mod")
    assert {m.op for m in found} == set(OPERATORS)  # each operator applies to this source
    baseline = _values(SOURCE)
    survivors = []
    for m in found:
        assert valid(m, SOURCE), m.id  # parses, and its syntax tree differs from the original
        assert m.text != SOURCE and m.old in SOURCE
        if _values(m.text) == baseline:
            survivors.append((m.op, m.description))
    # the points include ties (a == b, a == b + 1, a == b + 10) and a - b = 0.75, so even the boundary mutants are told apart
    assert survivors == [], survivors


def test_docstrings_messages_and_raise_are_not_mutated():
    found = mutants(SOURCE, "pkg/mod.py", "pkg.mod")
    lines = {m.line for m in found}
    assert 1 not in lines and 8 not in lines  # the docstrings
    assert 16 not in lines  # the raise with its f-string
    assert all(m.function.startswith("pkg.mod.") for m in found)
    assert {m.function for m in found} == {"pkg.mod.<module>", "pkg.mod.f", "pkg.mod.g", "pkg.mod.g.<locals>.inner"}


def test_ids_are_stable_under_edits_elsewhere_and_unique():
    found = mutants(SOURCE, "pkg/mod.py", "pkg.mod")
    ids = [m.id for m in found]
    assert len(set(ids)) == len(ids)
    shifted = mutants("# a new comment line\n\n" + SOURCE, "pkg/mod.py", "pkg.mod")
    assert [m.id for m in shifted] == ids
    assert [m.line for m in shifted] == [m.line + 2 for m in found]


def test_skip_and_only_restrict_the_defs():
    assert {m.function for m in mutants(SOURCE, "p.py", "p", skip={"f"})} == {"p.<module>", "p.g",
                                                                             "p.g.<locals>.inner"}
    assert {m.function for m in mutants(SOURCE, "p.py", "p", only={"g"})} == {"p.g", "p.g.<locals>.inner"}


def test_killers_follow_the_measured_sets_and_the_imports():
    found = {m.function: m for m in mutants(SOURCE, "pkg/mod.py", "pkg.mod")}
    base = {"claims": {"c-f": {"verdict": "holds", "measured": ["pkg.mod.f"], "seconds": 2.0},
                       "c-inner": {"verdict": "holds", "measured": ["pkg.mod.g", "pkg.mod.g.<locals>.inner"],
                                   "seconds": 1.0},
                       "c-other": {"verdict": "holds", "measured": ["pkg.model.f"], "seconds": 1.0},
                       "lm-x": {"verdict": "holds", "measured": ["pkg.mod.f"], "seconds": 30.0}},
            "tests": {"t_a.py": {"seconds": 3.0, "failed": []}, "t_b.py": {"seconds": 1.0, "failed": []},
                      "t_broken.py": {"seconds": 1.0, "failed": ["t_broken.py::x"]}}}
    imports = {"t_a.py": {"pkg.mod"}, "t_b.py": {"pkg", "pkg.mod"}, "t_broken.py": {"pkg.mod"}}
    claims, tests = mutation_score.killers(found["pkg.mod.f"], base, imports, lm_all=False)
    assert claims == ["c-f"] and tests == ["t_b.py", "t_a.py"]  # cheapest first; no LM claim; no broken file
    assert mutation_score.killers(found["pkg.mod.f"], base, imports, lm_all=True)[0] == ["c-f", "lm-x"]
    assert mutation_score.killers(found["pkg.mod.g"], base, imports, False)[0] == ["c-inner"]
    assert mutation_score.killers(found["pkg.mod.g.<locals>.inner"], base, imports, False)[0] == ["c-inner"]
    # a module-level line (SCALE): every claim that runs a function of the module, not of pkg.model
    assert mutation_score.killers(found["pkg.mod.<module>"], base, imports, False)[0] == ["c-inner", "c-f"]


def test_every_formula_file_pattern_names_files_and_every_restricted_def_exists():
    """The audit became a package and the 'dpo_rlhf_checks/audit.py' pattern silently matched nothing: its
    statistics dropped out of the score. Every pattern must match a file, and every def it restricts to must exist."""
    import ast

    root = Path(mutation_score.ROOT)
    for pattern, (_, only) in mutation_score.FORMULA_FILES.items():
        files = sorted(root.glob(pattern))
        assert files, pattern
        if only is not None:
            defs = {node.name for f in files for node in ast.parse(f.read_text()).body
                    if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
            assert only <= defs, (pattern, sorted(only - defs))


def test_a_test_importing_a_subpackage_reaches_its_modules():
    """The audit's statistics are re-exported by the package dpo_rlhf_checks.audit, which is what tests import;
    a top-level package name alone does not make a test a killer of every module."""
    names = {"dpo_rlhf_checks.audit", "dpo_rlhf_checks.audit.violation_counts", "dpo_rlhf_checks"}
    assert mutation_score.imports_module(names, "dpo_rlhf_checks.audit.statistics")
    assert not mutation_score.imports_module(names, "dpo_rlhf_checks.losses")
    assert mutation_score.imports_module({"dpo_rlhf_checks.losses"}, "dpo_rlhf_checks.losses")


def test_wilson_interval_matches_the_published_value():
    # 8 of 10, worked by hand: centre (0.8 + 1.96^2/20) / (1 + 1.96^2/10) = 0.71671, half-width
    # 1.96 sqrt(0.8 * 0.2 / 10 + 1.96^2 / 400) / (1 + 1.96^2/10) = 0.22655
    lo, hi = mutation_score.wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = mutation_score.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1.96**2 / (10 + 1.96**2), rel=1e-12)  # the closed form at k = 0


@pytest.mark.slow
def test_mutation_score_sample_runs_end_to_end(tmp_path):
    script = Path(__file__).with_name("mutation_score.py")
    # --legacy: the default path first runs the whole suite under the line tracer (about 20 min here); its parts
    # are tested above on a tiny repository (coverage, fork server, selection, phases)
    proc = subprocess.run([sys.executable, str(script), "--modules", "dpo_rlhf_checks/stream_stats.py",
                           "--sample", "3", "--seed", "1", "--legacy", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "mutation.json").read_text())
    assert report["mutants_run"] == 3
    assert all(e["status"] in ("killed", "survived", "equivalent") for e in report["mutants"])
    assert all(e["path"] == "dpo_rlhf_checks/stream_stats.py" for e in report["mutants"])
    s = report["summary"]
    assert s["non_equivalent"] + s["equivalent"] == 3
    assert (tmp_path / "mutation.md").read_text().startswith("# Mutation score")
    # the worktree is untouched: the mutants were written into a temporary copy only
    diff = subprocess.run(["git", "status", "--porcelain", "dpo_rlhf_checks/stream_stats.py"],
                          cwd=script.parents[1], capture_output=True, text=True)
    assert diff.stdout == ""
    assert math.isfinite(report["seconds"])


def _fake_repo(tmp_path: Path) -> Path:
    """A tiny repository: one formula module (toy_bandits/mod.py), tests that reach its lines in the ways the
    tracer must tell apart, and a copy of the worker (it finds the repository from its own path)."""
    repo = tmp_path / "repo"
    (repo / "toy_bandits").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "toy_bandits" / "__init__.py").write_text("")
    (repo / "toy_bandits" / "mod.py").write_text(
        "import functools\n"
        "SCALE = 2.0\n"
        "\n"
        "\n"
        "def f(x):\n"
        "    if x > 0:\n"
        "        return SCALE * x\n"
        "    return -x\n"
        "\n"
        "\n"
        "@functools.lru_cache(maxsize=None)\n"
        "def cached(n):\n"
        "    return n + 1\n")
    (repo / "tests" / "test_fake.py").write_text(
        "import subprocess\nimport sys\n\nimport pytest\n\nfrom toy_bandits import mod\n\n\n"
        "@pytest.fixture(scope='module')\n"
        "def shared():\n"
        "    return mod.f(-1.0)\n\n\n"
        "def test_positive():\n    assert mod.f(1.0) == 2.0\n\n\n"
        "def test_negative():\n    assert mod.f(-3.0) == 3.0\n\n\n"
        "def test_uses_fixture_first(shared):\n    assert shared == 1.0\n\n\n"
        "def test_uses_fixture_again(shared):\n    assert shared == 1.0\n\n\n"
        "def test_cached_first():\n    assert mod.cached(1) == 2\n\n\n"
        "def test_cached_again():\n    assert mod.cached(1) == 2\n\n\n"
        "def test_in_a_process():\n"
        "    out = subprocess.run([sys.executable, '-c', 'from toy_bandits import mod; print(mod.f(1.0))'],\n"
        "                         capture_output=True, text=True, check=True)\n"
        "    assert out.stdout.strip() == '2.0'\n")
    (repo / "tests" / "conftest.py").write_text("")
    worker = Path(mutation_score.__file__).with_name("mutation_worker.py")
    (repo / "tests" / "mutation_worker.py").write_text(worker.read_text())
    return repo


def test_line_coverage_per_test_with_fixtures_caches_and_processes(tmp_path):
    """The coverage baseline: each test gets the lines it executed; a module-scoped fixture's lines go to every
    test that uses it (not only the first); an lru_cache is cleared before each test, so the second caller
    executes the cached function too; a test that starts a process is opaque; the module body's lines are import
    lines."""
    repo = _fake_repo(tmp_path)
    out = tmp_path / "cov.json"
    env = {**mutation_score._env(repo), "PYTHONPATH": str(repo)}
    subprocess.run([sys.executable, "tests/mutation_worker.py", "coverage", "--tests", "tests/test_fake.py",
                    "--formula", "toy_bandits/mod.py", "--out", str(out)], cwd=repo, env=env, check=True,
                   capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    lines = {t["id"].split("::")[1]: set(t["lines"].get("toy_bandits/mod.py", [])) for t in result["tests"]}
    opaque = {t["id"].split("::")[1] for t in result["tests"] if t["opaque"]}
    assert lines["test_positive"] == {6, 7} and lines["test_negative"] == {6, 8}
    assert lines["test_uses_fixture_first"] == lines["test_uses_fixture_again"] == {6, 8}
    assert lines["test_cached_first"] == lines["test_cached_again"] == {13}
    assert opaque == {"test_in_a_process"}
    assert {2, 5, 11, 12} <= set(result["import_lines"]["toy_bandits/mod.py"])
    assert not any(t["failed"] for t in result["tests"])


def test_fork_server_kills_by_the_selected_tests_and_leaks_nothing(tmp_path):
    """The fork server: a mutant written into the file is seen by the child (fresh import), only the selected
    test ids run, and the next request, with the file restored, sees the original again."""
    repo = _fake_repo(tmp_path)
    server = mutation_score.Server(repo, tmp_path)
    target = repo / "toy_bandits" / "mod.py"
    pristine = target.read_text()
    try:
        target.write_text(pristine.replace("return -x", "return x"))
        killed = server.run([], tmp_path / "none.json", ["tests/test_fake.py::test_negative"], timeout=120)
        spared = server.run([], tmp_path / "none.json", ["tests/test_fake.py::test_positive"], timeout=120)
        phased = server.run([], tmp_path / "none.json", [], timeout=120, phases=[
            {"claims": [], "tests": ["tests/test_fake.py::test_positive"]},
            {"claims": [], "tests": ["tests/test_fake.py::test_negative"]}])
        target.write_text(pristine)
        clean = server.run([], tmp_path / "none.json", ["tests/test_fake.py::test_negative"], timeout=120)
        hang = server.run([], tmp_path / "none.json", ["tests/test_fake.py::test_negative"], timeout=0.01)
    finally:
        target.write_text(pristine)
        server.close()
    assert killed["status"] == "ok" and killed["result"]["killed_by"] == "test"
    assert "test_negative" in killed["result"]["detail"]
    assert spared["status"] == "ok" and spared["result"]["killed_by"] is None and not spared["result"].get("error")
    assert phased["status"] == "ok" and "test_negative" in phased["result"]["detail"]  # the second phase kills
    assert clean["status"] == "ok" and clean["result"]["killed_by"] is None
    assert hang["status"] == "timeout"


def test_tests_are_selected_by_line_and_by_import_where_lines_cannot_tell():
    found = mutants((Path(mutation_score.ROOT) / "toy_bandits" / "finite_labels.py").read_text(),
                    "toy_bandits/finite_labels.py", "toy_bandits.finite_labels")
    in_def = next(m for m in found if m.function.endswith(".p_wrong"))
    at_module = next((m for m in found if m.function.endswith(".<module>")), None)
    tests = [{"id": "a.py::t1", "file": "a.py", "seconds": 2.0, "failed": False, "opaque": False},
             {"id": "a.py::t2", "file": "a.py", "seconds": 1.0, "failed": False, "opaque": False},
             {"id": "a.py::t3", "file": "a.py", "seconds": 1.0, "failed": False, "opaque": True},
             {"id": "b.py::t4", "file": "b.py", "seconds": 1.0, "failed": False, "opaque": False},
             {"id": "b.py::t5", "file": "b.py", "seconds": 1.0, "failed": True, "opaque": False},
             {"id": "c.py::t6", "file": "c.py", "seconds": 1.0, "failed": False, "opaque": True}]
    cov = {"tests": tests, "lines": {"toy_bandits/finite_labels.py": {in_def.line: [0, 3, 4]}},
           "by_file": {"a.py": [0, 1, 2], "b.py": [3, 4], "c.py": [5]}, "import_lines": {}, "collection_lines": {}}
    imports = {"a.py": {"toy_bandits.finite_labels"}, "b.py": {"toy_bandits"}, "c.py": {"theory.symbols"}}
    # its line's tests (any file; not the one that failed on the unmutated copy), and the opaque test of a file
    # that imports the module; not the opaque test of a file that does not
    assert mutation_score.select_tests(in_def, cov, imports) == ["a.py::t3", "b.py::t4", "a.py::t1"]
    cov["import_lines"] = {"toy_bandits/finite_labels.py": {in_def.line}}  # the line runs at import: every test
    assert mutation_score.select_tests(in_def, cov, imports) == ["a.py::t2", "a.py::t3", "b.py::t4", "a.py::t1"]
    if at_module is not None:
        cov["import_lines"] = {}
        assert "a.py::t2" in mutation_score.select_tests(at_module, cov, imports)


def test_phases_put_the_cheap_tests_first_and_lose_no_killer():
    seconds = {"a": 0.5, "b": 1.0, "c": 3.0, "d": 40.0}
    got = mutation_score.phases(["claim"], ["a", "b", "c", "d"], 20.0, seconds)
    assert got[0] == {"claims": [], "tests": ["a", "b", "c"]}  # up to max(0.1 x 20 s, 5 s)
    assert got[1]["claims"] == ["claim"] and got[1]["tests"] == ["d"] and not got[1]["tests_first"]
    assert mutation_score.phases([], ["a", "d"], 0.0, seconds) == [{"claims": [], "tests": ["a", "d"]}]
    every = [t for p in mutation_score.phases(["x", "y"], list(seconds), 300.0, seconds) for t in p["tests"]]
    assert sorted(every) == sorted(seconds)


def test_jobs_run_each_mutant_on_a_job_no_other_holds_and_rerun_timeouts_alone():
    """--jobs: every item runs once on a job nobody else holds at the time (a job is one repository copy, so two
    mutants in one copy would overwrite each other's file); a timeout or crash seen while another job was busy is
    run again alone on the first job and that fate kept, the first one recorded beside it."""
    lock, busy, running, peak, seen = threading.Lock(), set(), [0], [0], []

    def run(i, job):
        with lock:
            assert job not in busy, f"job {job} given to two mutants at once"
            busy.add(job)
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            crowded = running[0] > 1
        time.sleep(0.02 * (1 + i % 3))
        with lock:
            busy.discard(job)
            running[0] -= 1
            seen.append((i, job))
        if i == 4 and crowded:  # a timeout only under contention
            return {"status": "killed", "by": "timeout", "detail": "over 10 s", "seconds": 11.0}
        if i == 7:  # a real crash: killed alone too
            return {"status": "killed", "by": "crash", "detail": "Segmentation fault", "seconds": 1.0}
        return {"status": "killed" if i % 2 else "survived", "by": "test" if i % 2 else None, "detail": "",
                "seconds": 1.0}

    recorded = {}
    again = mutation_score.run_on_jobs(list(range(12)), ["a", "b", "c"], run,
                                       lambda i, e: recorded.__setitem__(i, e))
    assert sorted(recorded) == list(range(12))
    assert peak[0] > 1  # it did run in parallel
    assert again == [4, 7] or again == [7]  # 4 only if it met another job
    assert recorded[7]["by"] == "crash" and recorded[7]["beside_other_jobs"]["by"] == "crash"
    assert recorded[4]["status"] == "survived" and recorded[4]["beside_other_jobs"]["by"] == "timeout"
    assert [j for i, j in seen[-len(again):]] == ["a"] * len(again)  # the reruns: alone, on the first job
    one = {}
    assert mutation_score.run_on_jobs([0, 1, 2], ["a"], run, lambda i, e: one.__setitem__(i, e)) == []
    assert [one[i]["status"] for i in range(3)] == ["survived", "killed", "survived"]
