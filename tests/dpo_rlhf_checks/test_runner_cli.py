"""The claim registry, the result type, the runner and the command line."""

import json
import math

import numpy as np
import pytest

from dpo_rlhf_checks import CLAIMS, VERDICTS, CheckContext, CheckResult, decide, get_claim, not_checked
from dpo_rlhf_checks.cli import main
from dpo_rlhf_checks.registry import Claim
from dpo_rlhf_checks.report import ERROR_VERDICT, SCHEMA_VERSION, format_table, run_claim, run_claims
from dpo_rlhf_checks.result import to_jsonable

REQUIRED_IDS = [
    "rlhf-closed-form", "dpo-reparam", "assumption-iff", "equiv-population", "equiv-ordered-pair",
    "relative-advantage", "undesirable-space", "gradient-weakening", "loss-delta-bridge", "soft-margin-ranking",
    "cpo-constrained-kkt", "cpo-penalized-eq10", "cpo-stationary-margin", "cpo-loss-certificates",
    "price-of-alignment", "lm-dpo-failure", "lm-cpo-fix", "benchmark-table",
]
CLAIM_KEYS = {"id", "title", "paper_ref", "statement", "verdict", "methods", "evidence", "counterexample",
              "amended_statement", "figures", "seconds", "summary"}


def test_registry_has_every_required_id_once_in_order():
    ids = [c.id for c in CLAIMS]
    assert ids == REQUIRED_IDS
    for claim in CLAIMS:
        assert claim.title and claim.paper_ref and len(claim.statement) > 40
        assert claim.checks, claim.id


def test_every_claim_resolves_to_a_check_function():
    # Each claim's check module exists: none of them reports "not implemented yet".
    missing = [c.id for c in CLAIMS if c.resolve() is None]
    assert missing == []


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


def test_missing_check_module_is_not_checked_and_a_crash_is_an_error(tmp_path):
    ctx = CheckContext(out_dir=tmp_path)
    absent = Claim("x-absent", "absent", "ref", "statement", ("no_such_module_for_tests:check",))
    entry = run_claim(absent, ctx)
    assert entry["verdict"] == "not-checked"
    assert entry["evidence"]["reason"] == "not implemented yet"
    # to_jsonable returns a list, not a CheckResult: the runner must flag that as a crash.
    wrong = Claim("x-wrong", "wrong", "ref", "statement", ("dpo_rlhf_checks.result:to_jsonable",))
    entry = run_claim(wrong, ctx)
    assert entry["verdict"] == ERROR_VERDICT
    assert "TypeError" in entry["summary"]
    assert "Traceback" in entry["evidence"]["traceback"]


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


def test_only_writes_report_following_schema(tmp_path, capsys):
    ids = ["dpo-reparam", "benchmark-table"]
    assert main(["--only", *ids, "--out", str(tmp_path), "--seed", "3", "--quick"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["schema"] == SCHEMA_VERSION
    assert set(report) >= {"schema", "toolkit_version", "created", "environment", "claims"}
    assert set(report["environment"]) >= {"python", "platform", "packages"}
    assert report["settings"]["seed"] == 3 and report["settings"]["quick"] is True
    assert [c["id"] for c in report["claims"]] == ids
    for claim in report["claims"]:
        assert set(claim) == CLAIM_KEYS
        assert claim["verdict"] in VERDICTS
        assert isinstance(claim["methods"], list) and claim["methods"]
        assert isinstance(claim["evidence"], dict) and claim["evidence"]
        assert claim["counterexample"] is None or isinstance(claim["counterexample"], dict)
        assert isinstance(claim["seconds"], float) and claim["seconds"] >= 0
        assert claim["id"] in printed and claim["verdict"] in printed
    md = (tmp_path / "report.md").read_text()
    assert "| `dpo-reparam` |" in md and "| `benchmark-table` |" in md


def test_format_table_counts_verdicts(tmp_path):
    report = run_claims([get_claim("dpo-reparam")], CheckContext(out_dir=tmp_path, quick=True), log=open("/dev/null", "w"))
    table = format_table(report)
    verdict = report["claims"][0]["verdict"]
    assert table.splitlines()[0].split()[:3] == ["id", "paper", "ref"]
    assert f"verdicts: {verdict} 1" in table


def test_bad_lm_config_file_is_an_argument_error(tmp_path, capsys):
    config = tmp_path / "lm.json"
    config.write_text('{"no_such_key": 1}')
    with pytest.raises(SystemExit) as exc:
        main(["--only", "benchmark-table", "--lm-config", str(config), "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "unknown LM config keys ['no_such_key']" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()  # rejected before any check ran
