"""The claim registry, the result type, the runner and the command line."""

import json
import math
import sys

import numpy as np
import pytest


from dpo_rlhf_checks import (CLAIMS, VERDICTS, CheckContext, CheckResult, MethodResult, decide, get_claim,
                             independent_methods, merge_methods, not_checked)
from dpo_rlhf_checks.cli import main
from dpo_rlhf_checks.registry import Claim
from dpo_rlhf_checks.report import (ERROR_VERDICT, SCHEMA_VERSION, format_markdown, format_table, no_negative_zero,
                                    run_claim, run_claims)
from dpo_rlhf_checks.result import to_jsonable

REQUIRED_IDS = [
    "rlhf-closed-form", "dpo-reparam", "assumption-iff", "equiv-population", "equiv-ordered-pair",
    "relative-advantage", "undesirable-space", "gradient-weakening", "loss-delta-bridge", "soft-margin-ranking",
    "cpo-constrained-kkt", "cpo-penalized-eq10", "cpo-stationary-margin", "cpo-loss-certificates",
    "price-of-alignment", "lm-dpo-failure", "lm-cpo-fix", "benchmark-table", "benchmark-8b-results", "e-cpoc",
    "dataset-ordered-minimiser", "finite-label-sign", "listwise-equivalence", "length-normalised",
    "cpo-population-alignment", "gpo-absorbing-U", "gpo-transient-U", "loss-population-optimum",
    "lm-kernel-prediction",
]
CLAIM_KEYS = {"id", "title", "paper_ref", "statement", "verdict", "summary", "literal", "amended", "methods",
              "independent_methods", "independent_set", "counterexample", "amended_statement", "not_checked_reason",
              "inconclusive", "figures", "seconds"}
METHOD_KEYS = {"name", "function", "literal", "amended", "seconds", "depends_on", "evidence", "summary",
               "counterexample", "amended_statement", "figures", "inconclusive", "error", "measured",
               "declared_depends_on", "undeclared"}


def test_registry_has_every_required_id_once_in_order():
    ids = [c.id for c in CLAIMS]
    assert ids == REQUIRED_IDS
    for claim in CLAIMS:
        assert claim.title and claim.paper_ref and len(claim.statement) > 40
        assert bool(claim.methods) != bool(claim.not_checked), claim.id


def test_every_method_resolves_to_a_function():
    from dpo_rlhf_checks.registry import resolve_method

    for claim in CLAIMS:
        for name, target in claim.methods.items():
            assert callable(resolve_method(target)), (claim.id, name)


def test_claim_format_is_validated():
    with pytest.raises(ValueError, match="exactly one"):
        Claim("x", "t", "r", "s")
    with pytest.raises(ValueError, match="exactly one"):
        Claim("x", "t", "r", "s", methods={"numeric": "a:b"}, not_checked="why")
    with pytest.raises(ValueError, match="must start with one of"):
        Claim("x", "t", "r", "s", methods={"vibes": "a:b"})
    with pytest.raises(ValueError, match="module:function"):
        Claim("x", "t", "r", "s", methods={"numeric": "a.b"})


def _m(literal, amended=None, deps=(), statement=None):
    return MethodResult(literal=literal, amended=amended, summary="s", depends_on=deps,
                        counterexample=None if literal else {"x": 1}, amended_statement=statement)


@pytest.mark.parametrize("methods, verdict", [
    ({"a": (True, None), "b": (True, None)}, "holds"),
    ({"a": (True, None), "b": (False, None)}, "fails"),
    ({"a": (False, True), "b": (False, True)}, "holds-amended"),
    ({"a": (False, True), "b": (True, None)}, "holds-amended"),  # a confirmed literal supports the amendment
    ({"a": (False, True), "b": (False, None)}, "fails"),  # no evidence for the amendment from b
    ({"a": (False, True), "b": (False, False)}, "fails"),
    ({"a": (True, False), "b": (True, None)}, "holds"),
])
def test_merge_rule(methods, verdict):
    results = {k: _m(lit, amd, statement="A." if amd else None) for k, (lit, amd) in methods.items()}
    merged = merge_methods(results)
    assert merged["verdict"] == verdict
    if verdict == "holds":
        assert merged["counterexample"] is None and merged["amended_statement"] is None
    else:
        assert set(merged["counterexample"]) == {k for k, (lit, _) in methods.items() if not lit}
    if verdict == "holds-amended":
        assert merged["amended_statement"] == "A."
    with pytest.raises(ValueError):
        merge_methods({})


def _u(literal=None, amended=None, why="interval straddles the margin"):
    return MethodResult(literal=literal, amended=amended, summary="s", inconclusive=why,
                        counterexample={"x": 1} if literal is False else None)


@pytest.mark.parametrize("methods, literal, amended", [
    ({"a": _u(), "b": _m(True)}, None, None),                       # undecided + holds
    ({"a": _u(), "b": _m(False, True, statement="A.")}, False, None),  # a decided failure stays False
    ({"a": _u(True), "b": _m(True)}, True, True),                   # decided literal, undecided elsewhere
    ({"a": _u(False, False), "b": _m(True)}, False, False),         # even a decided "fails" is inconclusive
    ({"a": _u(), "b": _u(why="other")}, None, None),
])
def test_merge_rule_any_inconclusive_method_makes_the_claim_inconclusive(methods, literal, amended):
    merged = merge_methods(methods)
    assert merged["verdict"] == "inconclusive"
    assert merged["literal"] is literal and merged["amended"] is amended
    assert set(merged["inconclusive"]) == {k for k, r in methods.items() if r.inconclusive}
    assert merged["amended_statement"] is None
    for name, r in methods.items():
        assert (merged["counterexample"] or {}).get(name) == r.counterexample


def test_merge_rule_decided_methods_report_no_inconclusive_reason():
    assert merge_methods({"a": _m(True), "b": _m(False, True, statement="A.")})["inconclusive"] is None


def test_method_result_undecided_needs_a_reason():
    with pytest.raises(ValueError, match="inconclusive"):
        MethodResult(literal=None, amended=None, summary="s")
    with pytest.raises(ValueError, match="reason"):
        MethodResult(literal=True, amended=None, summary="s", inconclusive="  ")
    with pytest.raises(TypeError):
        MethodResult(literal=1, amended=None, summary="s")


def test_method_result_takes_numpy_booleans_as_bools_and_refuses_arrays():
    """A check whose `and` chain ends at a failed numpy comparison hands over numpy.False_; that is a verdict, not a
    crash (equiv_ordered_pair_numeric raised TypeError exactly when its flow check failed)."""
    r = MethodResult(literal=np.True_, amended=np.float64(2.0) < 1.0, summary="s")
    assert r.literal is True and r.amended is False
    for bad in (np.array([True]), np.array(True), 1.0, "True"):
        with pytest.raises(TypeError, match="bools or None"):
            MethodResult(literal=True, amended=bad, summary="s")


def test_an_inconclusive_claim_exits_0_and_the_report_says_why(tmp_path, monkeypatch):
    from dpo_rlhf_checks import cli, registry

    mod = type(sys)("fake_undecided")
    mod.undecided = lambda ctx: _u(why="interval [0.01, 0.2] straddles 0.1 after 9 seeds")
    mod.holds = lambda ctx: _m(True)
    monkeypatch.setitem(sys.modules, "fake_undecided", mod)
    claim = Claim("fake-undecided", "t", "r", "s", methods={"numeric": "fake_undecided:undecided",
                                                         "simulation": "fake_undecided:holds"})
    monkeypatch.setattr(registry, "_BY_ID", {**registry._BY_ID, claim.id: claim})
    monkeypatch.setattr(cli, "get_claim", registry.get_claim)
    code = cli.main(["--only", "fake-undecided", "--out", str(tmp_path)])
    assert code in (0, None)
    report = json.loads((tmp_path / "report.json").read_text())
    (c,) = report["claims"]
    assert c["verdict"] == "inconclusive" and c["literal"] is None
    assert "straddles" in c["inconclusive"]["numeric"]
    md = (tmp_path / "report.md").read_text()
    assert "**Inconclusive.**" in md and "undecided" in md and "**inconclusive**:" in md
    env = report["environment"]["numerics"]
    assert {"torch_cpu_capability", "numpy_blas", "torch_threads", "cpu_count"} <= set(env)


def test_independent_methods_is_the_largest_disjoint_set():
    assert independent_methods({"a": ("f",), "b": ("f",), "c": ()}) == ["a", "c"]
    assert independent_methods({"a": ("f", "g"), "b": ("g",), "c": ("f",)}) == ["b", "c"]
    assert independent_methods({"a": ("f",), "b": ("f",)}) == ["a"]
    assert independent_methods({}) == []


def test_independence_is_computed_from_the_measured_formulas(tmp_path):
    """Run in quick mode: independent_methods comes from the measured depends_on (price-of-alignment's two methods
    declared disjoint lists on c9d097b but both run the constrained solver, so measured they are 1; the whole registry is
    checked in tests/dpo_rlhf_checks/test_measured_dependencies.py)."""
    ctx = CheckContext(out_dir=tmp_path, quick=True)
    ids = ["assumption-iff", "undesirable-space", "cpo-penalized-eq10", "price-of-alignment"]
    report = run_claims([get_claim(i) for i in ids], ctx, log=open("/dev/null", "w"))
    counts = {c["id"]: c["independent_methods"] for c in report["claims"]}
    assert counts == {"assumption-iff": 2, "undesirable-space": 3, "cpo-penalized-eq10": 3, "price-of-alignment": 1}
    for c in report["claims"]:
        assert c["verdict"] in ("holds", "holds-amended")
        assert c["independent_methods"] == len(independent_methods({m["name"]: m["depends_on"] for m in c["methods"]}))
        for m in c["methods"]:
            assert m["undeclared"] == [] and set(m["depends_on"]) <= {n.split(".<locals>.")[0] for n in m["measured"]}
    price = report["claims"][-1]
    assert "toy_bandits.constrained.solve" in set(price["methods"][0]["depends_on"]) & set(price["methods"][1]["depends_on"])
    table = format_table(report)
    assert "1 (<2)" in [line for line in table.splitlines() if line.startswith("price-of-alignment")][0]
    assert "below 2 measured-independent methods" in table and "price-of-alignment" in table.splitlines()[-1]
    md = format_markdown(report, tmp_path)
    assert "**1: below 2**" in md and "**Below 2 measured-independent methods.** numeric & convex share" in md
    assert "Measured formulas (`depends_on`):" in md


def test_get_claim_unknown_id_lists_valid_ids():
    with pytest.raises(KeyError, match="valid ids: rlhf-closed-form"):
        get_claim("no-such-claim")


@pytest.mark.parametrize(
    "literal, amended, expected",
    [(True, None, "holds"), (True, False, "holds"), (False, True, "holds-amended"), (False, False, "fails"),
     (False, None, "fails")],
)
def test_decide_truth_table(literal, amended, expected):
    assert decide(literal, amended) == expected


def test_check_result_rejects_inconsistent_results():
    with pytest.raises(ValueError, match="verdict"):
        CheckResult(verdict="probably", methods=[], summary="")
    with pytest.raises(ValueError, match="unknown methods"):
        CheckResult(verdict=decide(True), methods=["vibes"], summary="")
    with pytest.raises(ValueError, match="amended statement"):
        CheckResult(verdict=decide(False, True), methods=["numeric"], summary="", counterexample={"x": 1})
    with pytest.raises(ValueError, match="counterexample"):
        CheckResult(verdict=decide(False), methods=["numeric"], summary="")


def test_to_jsonable_handles_numpy_and_non_finite():
    out = to_jsonable({"a": np.float64(1.5), "b": np.arange(3), "c": (math.inf, -math.inf), "d": np.bool_(True)})
    assert out == {"a": 1.5, "b": [0, 1, 2], "c": ["inf", "-inf"], "d": True}
    assert json.loads(json.dumps(out)) == out


def test_missing_function_or_wrong_return_type_is_an_error_and_every_method_still_runs(tmp_path):
    ctx = CheckContext(out_dir=tmp_path)
    claim = Claim("x-mixed", "mixed", "ref", "statement",
                  methods={"numeric": "theory.sec11_table:benchmark_table_arithmetic",
                           "numeric-absent": "no_such_module_for_tests:check",
                           "numeric-wrong": "dpo_rlhf_checks.result:to_jsonable"})
    entry = run_claim(claim, ctx)
    assert entry["verdict"] == ERROR_VERDICT
    by_name = {m["name"]: m for m in entry["methods"]}
    assert set(by_name) == {"numeric", "numeric-absent", "numeric-wrong"}  # never a smaller list
    assert by_name["numeric"]["error"] is None and by_name["numeric"]["literal"] is True
    assert "ModuleNotFoundError" in by_name["numeric-absent"]["error"]
    assert "TypeError" in by_name["numeric-wrong"]["error"] and "Traceback" in by_name["numeric-wrong"]["error"]
    assert "numeric-absent" in entry["summary"] and "numeric-wrong" in entry["summary"]


def _boom(ctx):
    raise RuntimeError("planted crash")


@pytest.mark.parametrize("claim_id, method", [
    ("dpo-reparam", "symbolic"), ("dpo-reparam", "numeric"), ("cpo-constrained-kkt", "convex"),
    ("equiv-population", "simulation"), ("lm-cpo-fix", "training"),
])
def test_a_planted_crash_in_any_method_kind_is_error_and_exit_1(claim_id, method, monkeypatch, tmp_path, capsys):
    """The runner resolves 'module:function' when it runs, so a crash planted in the module is what it runs."""
    import importlib

    target = get_claim(claim_id).methods[method]
    module_name, _, func_name = target.partition(":")
    module = importlib.import_module(module_name)
    monkeypatch.setattr(module, func_name, _boom)
    others = {n: t for n, t in get_claim(claim_id).methods.items() if n != method}
    for name, other in others.items():  # keep the test fast: the other methods return a plain passing result
        mod_name, _, fn = other.partition(":")
        monkeypatch.setattr(importlib.import_module(mod_name), fn, lambda ctx: _m(True, deps=("x",)))
    code = main(["--only", claim_id, "--out", str(tmp_path), "--quick"])
    assert code == 1
    report = json.loads((tmp_path / "report.json").read_text())
    entry = report["claims"][0]
    assert entry["verdict"] == ERROR_VERDICT
    crashed = [m for m in entry["methods"] if m["error"]]
    assert [m["name"] for m in crashed] == [method] and "planted crash" in crashed[0]["error"]
    assert len(entry["methods"]) == len(get_claim(claim_id).methods)
    assert "crashed" in capsys.readouterr().err


def test_not_checked_claims_run_nothing_and_carry_the_reason(tmp_path):
    entry = run_claim(get_claim("e-cpoc"), CheckContext(out_dir=tmp_path))
    assert entry["verdict"] == "not-checked" and entry["methods"] == [] and entry["independent_methods"] == 0
    assert "not public" in entry["not_checked_reason"]


def test_negative_zero_never_reaches_a_report():
    assert to_jsonable({"a": -0.0, "b": [np.float64(-0.0)], "c": np.array([-0.0, 1.0])}) == {
        "a": 0.0, "b": [0.0], "c": [0.0, 1.0]}
    assert math.copysign(1.0, to_jsonable(-0.0)) == 1.0
    assert no_negative_zero("min -0.0e+00, x -0, y -0.000, keep -0.5 and a-0 and 1e-0") == \
        "min 0.0e+00, x 0, y 0.000, keep -0.5 and a-0 and 1e-0"


def test_not_checked_carries_reason():
    result = not_checked("needs 8B-model training", gpu_hours=1000)
    assert result.verdict == "not-checked"
    assert result.evidence == {"reason": "needs 8B-model training", "gpu_hours": 1000}


def test_list_prints_every_claim(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for claim_id in REQUIRED_IDS:
        assert claim_id in out


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "one of the arguments --all --only --list is required"),
        (["--only", "no-such-claim"], "unknown claim id 'no-such-claim'"),
        (["--all", "--only", "dpo-reparam"], "not allowed with argument"),
        (["--all", "--seed", "abc"], "invalid int value"),
        (["--all", "--lm-config", "/no/such/file.json"], "neither one of"),
        (["--all", "--format", "html"], "invalid choice"),
        (["--all", "--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_exit_2_with_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_only_writes_report_following_schema_3(tmp_path, capsys):
    ids = ["dpo-reparam", "benchmark-table", "e-cpoc"]
    assert main(["--only", *ids, "--out", str(tmp_path), "--seed", "3", "--quick"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["schema"] == SCHEMA_VERSION == 3
    assert set(report) >= {"schema", "toolkit_version", "created", "environment", "claims"}
    assert report["settings"]["seed"] == 3 and report["settings"]["quick"] is True
    assert [c["id"] for c in report["claims"]] == ids
    for claim in report["claims"]:
        assert set(claim) == CLAIM_KEYS
        assert claim["verdict"] in VERDICTS
        assert claim["independent_methods"] == len(claim["independent_set"])
        for m in claim["methods"]:
            assert set(m) == METHOD_KEYS
            assert ":" in m["function"] and isinstance(m["literal"], bool) and m["seconds"] >= 0
        assert claim["id"] in printed and claim["verdict"] in printed
    dpo = report["claims"][0]
    assert [m["name"] for m in dpo["methods"]] == ["symbolic", "numeric"] and dpo["independent_methods"] == 2
    md = (tmp_path / "report.md").read_text()
    assert "[`dpo-reparam`](#dpo-reparam)" in md and "**Verdict: not-checked**" in md
    assert "```json" not in md  # the evidence stays in report.json


def test_report_md_is_a_document(tmp_path):
    ctx = CheckContext(out_dir=tmp_path, quick=True)
    report = run_claims([get_claim("equiv-population")], ctx, log=open("/dev/null", "w"))
    md = format_markdown(report, tmp_path)
    c = report["claims"][0]
    assert len(md.splitlines()) < 110  # a document, not a dump (the key to the verdicts and tables included)
    assert "**Statement.**" in md and "**Counterexample to the literal statement.**" in md
    assert "**Amended statement (holds).**" in md and c["amended_statement"][:60] in md
    for m in c["methods"]:
        assert f"| {m['name']} (`{m['function']}`) |" in md
    assert "![equiv-population](figures/" in md
    # report.json's figure paths are relative to the report's folder (issue 17, item 13), and name real files
    assert c["figures"] and all(f.startswith("figures/") and (tmp_path / f).is_file() for f in c["figures"])
    assert all(f.startswith("figures/") for m in c["methods"] for f in m["figures"])
    assert no_negative_zero(md) == md  # no printed negative zero (-0.066 is fine)


def test_format_table_counts_verdicts(tmp_path):
    report = run_claims([get_claim("dpo-reparam")], CheckContext(out_dir=tmp_path, quick=True), log=open("/dev/null", "w"))
    table = format_table(report)
    verdict = report["claims"][0]["verdict"]
    assert table.splitlines()[0].split()[:6] == ["id", "paper", "ref", "verdict", "methods", "indep"]
    assert "symbolic,numeric" in table.splitlines()[2] and " 2 " in table.splitlines()[2]
    assert f"verdicts: {verdict} 1" in table


def test_bad_lm_config_file_is_an_argument_error(tmp_path, capsys):
    config = tmp_path / "lm.json"
    config.write_text('{"no_such_key": 1}')
    with pytest.raises(SystemExit) as exc:
        main(["--only", "benchmark-table", "--lm-config", str(config), "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "unknown LM config keys ['no_such_key']" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()  # rejected before any check ran


def test_a_closed_pipe_stops_quietly_without_a_traceback(tmp_path):
    # `paper_checks.py solve ... | head -1`: the reader leaves after one line of an output far larger than the
    # pipe's buffer, so the writer meets a closed pipe; it must stop quietly (no BrokenPipeError traceback)
    import subprocess
    import sys

    k = 20000
    inst = tmp_path / "big.json"
    inst.write_text(json.dumps({"pi_ref": [1 / k] * k, "reward": [i / k for i in range(k)], "beta": 1.0,
                                "preferences": [[1, 0]], "margin": 0.0}))
    proc = subprocess.Popen([sys.executable, "paper_checks.py", "solve", "--instance", str(inst), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.read(100)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert first.startswith(b"{")
    assert "Traceback" not in err and code == 141, (code, err[-500:])


# ------------------------------------------------------------------------------------------------
# Interrupting a run, and two runs into one folder (issue 17, item 7): real processes, real SIGINT.

LOCK_FILE = ".paper_checks.lock"  # dpo_rlhf_checks.outdir.LOCK_NAME (spelled out: the test must run on old commits)


def _start(argv, stderr_path):
    """``paper_checks.py argv`` in a child process with SIGINT at its default (a test runner in the background may
    have it ignored, and the child would inherit that), stderr to a file the test can poll."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    return subprocess.Popen([sys.executable, "paper_checks.py", *argv], cwd=root, stdout=subprocess.PIPE,
                            stderr=open(stderr_path, "w"), text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _snapshot(folder):
    """Every file under ``folder`` (hidden ones too) and its bytes, but the lock file."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


def _wait_for(predicate, seconds, what):
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def test_an_interrupted_run_leaves_the_folder_as_it_was_and_a_second_run_is_refused(tmp_path):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "results"
    (out / "figures").mkdir(parents=True)
    # a finished seed-0 folder: its report and the figure the seed-7 run below rewrites
    (out / "report.json").write_text(json.dumps({"schema": 2, "settings": {"seed": 0}, "claims": []}))
    (out / "report.md").write_text("seed 0\n")
    (out / "figures" / "map_phase_diagram.png").write_bytes(b"seed-0 figure")
    before = _snapshot(out)
    err_a = tmp_path / "a.err"
    run_a = _start(["--only", "equiv-population", "lm-dpo-failure", "--quick", "--seed", "7", "--out", str(out)],
                   err_a)
    try:
        # the first claim (which draws map_phase_diagram) is done; the LM claim trains for a while
        _wait_for(lambda: "[2/2] lm-dpo-failure ..." in err_a.read_text(), 600, "the second claim to start")
        assert run_a.poll() is None, err_a.read_text()[-2000:]
        # a second run into the same folder: refused with one line, nothing written
        run_b = subprocess.run([sys.executable, "paper_checks.py", "--only", "benchmark-table", "--out", str(out)],
                               cwd=root, capture_output=True, text=True, timeout=300)
        assert run_b.returncode == 2 and run_b.stdout == "", (run_b.returncode, run_b.stderr[-2000:])
        assert run_b.stderr.count("\n") == 1 and "Traceback" not in run_b.stderr, run_b.stderr[-2000:]
        assert "another run" in run_b.stderr and "is writing into" in run_b.stderr, run_b.stderr
        visible = {k: v for k, v in _snapshot(out).items() if not k.startswith(".paper_checks-run-")}
        assert visible == before  # (the first run's own staging folder aside)
        run_a.send_signal(signal.SIGINT)
        stdout_a, _ = run_a.communicate(timeout=300)
    finally:
        if run_a.poll() is None:
            run_a.kill()
            run_a.wait()
    text = err_a.read_text()
    assert run_a.returncode == 130, (run_a.returncode, text[-3000:])
    assert "Traceback" not in text and stdout_a == "", text[-3000:]
    last = text.rstrip("\n").split("\n")[-1]
    assert last.startswith("paper_checks.py: interrupted") and last.endswith("(SIGINT)"), last
    assert text.count("(SIGINT)") == 1, text[-3000:]
    # the folder holds exactly what it held before: no seed-7 figure next to the seed-0 report, no leftovers
    assert _snapshot(out) == before
    assert not [p for p in out.iterdir() if p.name not in ("report.json", "report.md", "figures", LOCK_FILE)]
    # the lock went with the process: the next run writes its report, figure paths relative to it
    done = subprocess.run([sys.executable, "paper_checks.py", "--only", "equiv-population", "--quick", "--out",
                           str(out)], cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    figures = report["claims"][0]["figures"]
    assert figures and all(f.startswith("figures/") and (out / f).is_file() for f in figures), figures
    assert (out / "figures" / "map_phase_diagram.png").read_bytes() != b"seed-0 figure"


@pytest.mark.parametrize("command", ["solve", "audit", "lm-map"])
def test_sigint_ends_every_subcommand_with_one_line_and_exit_130(command, tmp_path):
    import os
    import signal

    fifo = tmp_path / "never-written"
    os.mkfifo(fifo)  # opening or reading it blocks: the command is busy when the signal comes
    out = tmp_path / "map"
    argv = {"solve": ["solve", "--instance", str(fifo)], "audit": ["audit", str(fifo), "--json"],
            "lm-map": ["lm-map", "--out", str(out), "--device", "cpu"]}[command]
    err = tmp_path / "err"
    proc = _start(argv, err)
    try:
        if command == "lm-map":  # the map preset trains for minutes: interrupt it while it trains
            _wait_for(lambda: "[lm]" in err.read_text() or any(out.glob(".paper_checks-run-*")), 300,
                      "lm-map to start")
            import time

            time.sleep(1)
        else:
            import time

            time.sleep(3)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = err.read_text()
    assert proc.returncode == 130, (proc.returncode, text[-3000:])
    assert "Traceback" not in text and stdout == "", text[-3000:]
    last = text.replace("\r", "\n").rstrip("\n").split("\n")[-1]
    assert last.startswith(f"paper_checks.py {command}: interrupted") and last.endswith("(SIGINT)"), text[-1000:]
    if command == "lm-map":
        assert _snapshot(out) == {}  # nothing of the interrupted map, and no staging folder, was left


def test_sigint_ends_score_with_one_line_and_exit_130(tmp_path):
    """``score`` on a tiny local GPT-2 and 50,000 pairs, interrupted while it scores (after its header line)."""
    import signal
    import time

    pytest.importorskip("transformers")
    from dpo_rlhf_checks.integrations import tiny

    tiny.build_causal_lm(tmp_path / "ref", seed=0)
    tiny.write_jsonl(tmp_path / "data.jsonl", tiny.preference_rows(50_000, seed=3))
    err = tmp_path / "err"
    proc = _start(["score", "--model", str(tmp_path / "ref"), "--data", str(tmp_path / "data.jsonl"), "--out",
                   str(tmp_path / "scored.jsonl"), "--no-progress"], err)
    try:
        _wait_for(lambda: "score: 50000 pairs" in err.read_text() or proc.poll() is not None, 300, "score to start")
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = err.read_text()
    assert proc.returncode == 130, (proc.returncode, text[-3000:])
    assert "Traceback" not in text and stdout == "", text[-3000:]
    last = text.replace("\r", "\n").rstrip("\n").split("\n")[-1]
    # score's own line: what was kept (before scoring started, nothing; later, the pairs written and --resume)
    assert last == "error: interrupted (SIGINT) before any pair was written" or (
        last.startswith("error: interrupted (SIGINT): ") and "--resume" in last), text[-1000:]


# ----------------------------------------------------------------------------------------------
# Slow claims: not run by --all at the default LM config, run by --only and by --all with another config


def _fake_slow_registry(monkeypatch, calls):
    """A fast and a slow fake claim as the whole registry; each method appends its name to ``calls`` when run."""
    from dpo_rlhf_checks import cli, registry

    mod = type(sys)("fake_slow")
    mod.slow_method = lambda ctx: (calls.append("slow"), _m(True))[1]
    mod.fast_method = lambda ctx: (calls.append("fast"), _m(True))[1]
    monkeypatch.setitem(sys.modules, "fake_slow", mod)
    slow = Claim("fake-slow", "t", "r", "s", methods={"numeric": "fake_slow:slow_method"},
                 slow="its training method takes 30 minutes here (measured)")
    fast = Claim("fake-fast", "t", "r", "s", methods={"numeric": "fake_slow:fast_method"})
    monkeypatch.setattr(cli, "CLAIMS", (fast, slow))
    monkeypatch.setattr(registry, "_BY_ID", {**registry._BY_ID, slow.id: slow, fast.id: fast})
    monkeypatch.setattr(cli, "get_claim", registry.get_claim)
    return slow


def test_all_lists_a_slow_claim_as_not_checked_with_the_command_that_runs_it(tmp_path, monkeypatch, capsys):
    from dpo_rlhf_checks.registry import slow_reason

    calls = []
    slow = _fake_slow_registry(monkeypatch, calls)
    assert main(["--all", "--out", str(tmp_path)]) == 0
    assert calls == ["fast"]  # the slow claim's method never ran
    by_id = {c["id"]: c for c in json.loads((tmp_path / "report.json").read_text())["claims"]}
    c = by_id["fake-slow"]
    assert by_id["fake-fast"]["verdict"] == "holds"
    assert c["verdict"] == "not-checked" and c["methods"] == [] and c["literal"] is None
    assert c["not_checked_reason"] == slow_reason(slow)  # built from the registry field
    assert "takes 30 minutes here (measured)" in c["not_checked_reason"]
    assert "python paper_checks.py --only fake-slow" in c["not_checked_reason"]
    assert "lm-map" not in c["not_checked_reason"]  # its methods do not read the LM stage
    assert "takes 30 minutes" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("argv", [["--only", "fake-slow"], ["--all", "--lm-config", "map"]])
def test_only_and_all_with_another_lm_config_compute_a_slow_claims_verdict(tmp_path, monkeypatch, argv):
    calls = []
    _fake_slow_registry(monkeypatch, calls)
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert "slow" in calls
    by_id = {c["id"]: c for c in json.loads((tmp_path / "report.json").read_text())["claims"]}
    assert by_id["fake-slow"]["verdict"] == "holds" and by_id["fake-slow"]["not_checked_reason"] is None


def test_the_registry_marks_the_kernel_claim_slow_and_its_reason_names_only_and_lm_map(monkeypatch):
    from dpo_rlhf_checks import report
    from dpo_rlhf_checks.registry import runs_in_lm_map, slow_reason

    def no_run(*args, **kwargs):  # a route that ignored the field would start the 30-minute claim: fail at once
        raise AssertionError("a skipped slow claim ran a method")

    monkeypatch.setattr(report, "run_method", no_run)

    claim = get_claim("lm-kernel-prediction")
    assert claim.slow and runs_in_lm_map(claim)
    reason = slow_reason(claim)
    assert claim.slow.rstrip(".") in reason
    assert "`python paper_checks.py --only lm-kernel-prediction`" in reason
    assert "`python paper_checks.py lm-map`" in reason and "--lm-config map" in reason
    slow_ids = [c.id for c in CLAIMS if c.slow]
    assert slow_ids == ["lm-kernel-prediction"]
    entry = run_claim(claim, CheckContext(), skip_slow=True)
    assert entry["verdict"] == "not-checked" and entry["not_checked_reason"] == reason and entry["seconds"] == 0.0


def test_a_slow_field_needs_a_reason_and_methods():
    with pytest.raises(ValueError, match="slow"):
        Claim("x", "t", "r", "s", methods={"numeric": "m:f"}, slow="  ")
    with pytest.raises(ValueError, match="slow"):
        Claim("x", "t", "r", "s", not_checked="why", slow="30 minutes")
    with pytest.raises(ValueError, match="not slow"):
        from dpo_rlhf_checks.registry import slow_reason

        slow_reason(get_claim("dpo-reparam"))
