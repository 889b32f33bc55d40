"""Shared outputs written once per claim (dpo_rlhf_checks.deferred): the latest registration under a key wins, the
runner flushes after a claim's last method, and a writer that crashes makes the claim an error, never a traceback."""

import sys
import types

from dpo_rlhf_checks import deferred
from dpo_rlhf_checks.registry import Claim
from dpo_rlhf_checks.report import run_claim, run_claims
from dpo_rlhf_checks.result import ERROR_VERDICT, CheckContext, MethodResult


import pytest


@pytest.fixture(autouse=True)
def _nothing_pending():
    deferred.flush()  # writers other tests' direct method calls left behind
    yield
    deferred.flush()


def test_latest_registration_under_a_key_wins_and_flush_runs_each_once():
    out = []
    deferred.defer("a", lambda: out.append("a1"))
    deferred.defer("b", lambda: out.append("b"))
    deferred.defer("a", lambda: out.append("a2"))
    assert deferred.pending() == 2
    deferred.flush()
    assert out == ["b", "a2"] and deferred.pending() == 0
    deferred.flush()
    assert out == ["b", "a2"]


def _module(tmp_path, writer, name="fake"):
    mod = types.ModuleType(f"_deferred_fake_methods_{name}")
    draws = []

    def method(ctx):
        deferred.defer("shared", lambda: (draws.append(1), writer()))
        return MethodResult(literal=True, amended=True, summary="ok", evidence={}, depends_on=())

    mod.first = mod.second = method
    sys.modules[mod.__name__] = mod
    claim = Claim(name, "t", "r", "s", methods={"numeric": f"{mod.__name__}:first",
                                                   "convex": f"{mod.__name__}:second"})
    return claim, CheckContext(seed=0, out_dir=tmp_path), draws


def test_the_runner_writes_a_shared_output_once_per_claim(tmp_path):
    claim, ctx, draws = _module(tmp_path, lambda: None)
    entry = run_claim(claim, ctx)
    assert draws == [1] and entry["verdict"] == "holds" and deferred.pending() == 0


def test_a_crashing_shared_writer_makes_the_claim_an_error(tmp_path):
    def boom():
        raise OSError("disk full")

    claim, ctx, draws = _module(tmp_path, boom)
    entry = run_claim(claim, ctx)
    assert draws == [1] and entry["verdict"] == ERROR_VERDICT and "disk full" in entry["summary"]
    assert deferred.pending() == 0


def test_a_run_writes_shared_outputs_once_after_every_claim_and_blames_the_owners(tmp_path):
    import io

    calls = []

    def writer():
        calls.append(1)
        raise OSError("disk full")

    claim_a, ctx, _ = _module(tmp_path, writer, "a")
    claim_b, _, _ = _module(tmp_path, writer, "b")  # registers under the same key: one writer, two owners
    claim_c = Claim("c", "t", "r", "s", not_checked="no methods")
    report = run_claims([claim_a, claim_b, claim_c], ctx, log=io.StringIO())
    assert calls == [1] and deferred.pending() == 0
    verdicts = {e["id"]: e["verdict"] for e in report["claims"]}
    assert verdicts == {"a": ERROR_VERDICT, "b": ERROR_VERDICT, "c": "not-checked"}


def test_a_writer_left_over_from_outside_a_claim_is_not_the_claims(tmp_path):
    def boom():
        raise OSError("stale")

    deferred.defer("left over", boom)  # a method called directly, outside any claim
    claim, ctx, draws = _module(tmp_path, lambda: None, "d")
    entry = run_claim(claim, ctx)
    assert draws == [1] and entry["verdict"] == "holds" and deferred.pending() == 0
