"""Measured dependencies (issue 16): the call profiler, the formula sets it yields, and every method's declared
``depends_on`` against what the method was measured to execute.

A declared list that misses a measured formula fails here. The full check runs every claim's methods with
quick=True (slow: minutes); the fast one runs a few methods, among them the ones whose declarations were wrong
(the data-set minimiser's convex method and the finite-label methods declared ``()``).
"""

import importlib

import pytest

from dpo_rlhf_checks import CLAIMS, CheckContext, get_claim
from dpo_rlhf_checks import tracing
from dpo_rlhf_checks.report import run_claim, run_method
from dpo_rlhf_checks.tracing import covers, formulas, measure_calls

# Claims that fall below 2 measured-independent methods, and why (findings, reported in the table; a claim
# leaves this list only when a method with a formula of its own is added, and one that joins it is a regression).
BELOW_TWO = {
    "benchmark-table": "one arithmetic method",
    "cpo-loss-certificates": "the search and the training compare with the derived prediction (predicted_certifies)",
    "price-of-alignment": "the closed-form method and the convex one both run toy_bandits.constrained's solver",
    "finite-label-sign": "the exact P_n and the simulation share the decision rule and P_n (finite_labels.p_wrong)",
    "cpo-population-alignment": "both methods take the BT-population minimiser from toy_bandits.cpo_population",
    "lm-dpo-failure": "every method reads the one LM stage (training with the loss library and the model)",
    "lm-cpo-fix": "every method reads the one LM stage (training with the loss library and the model)",
    "lm-kernel-prediction": "both methods run the kernel dynamics (toy_lm.kernel.run_linearised) they test",
}

FAST_METHODS = [
    ("dataset-ordered-minimiser", "convex"),
    ("finite-label-sign", "numeric"),
    ("finite-label-sign", "simulation"),
    ("assumption-iff", "symbolic"),
    ("assumption-iff", "numeric"),
    ("cpo-loss-certificates", "numeric-derived"),
    ("cpo-stationary-margin", "numeric"),
    ("benchmark-table", "numeric"),
]


def _ctx(tmp_path):
    return CheckContext(out_dir=tmp_path, quick=True)


def _undeclared(entry):
    assert entry["error"] is None, entry["error"]
    return entry["undeclared"]


# --- the profiler ----------------------------------------------------------------------------------------------

def test_measure_calls_records_toolkit_functions_only():
    import numpy as np
    import torch

    from dpo_rlhf_checks import losses

    def run():
        lp = torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.0])
        return float(losses.dpo_loss(*lp, beta=0.5).losses.sum()) + float(np.log1p(1.0))

    value, seen = measure_calls(run)
    assert value == pytest.approx(np.log1p(np.exp(-0.75)) + np.log(2), rel=1e-6)  # h = 0.5 ((-1 + 2) - (-1.5 + 1))
    assert "dpo_rlhf_checks.losses.dpo_loss" in seen and "dpo_rlhf_checks.losses._softplus" in seen
    assert all(name.split(".", 1)[0] in tracing.TOOLKIT_PACKAGES for name in seen)  # no numpy, no torch
    assert "dpo_rlhf_checks.losses.ipo_loss" not in seen  # only what ran


def test_measure_calls_restores_the_tracer_and_propagates_exceptions():
    import sys

    from toy_bandits import finite_labels

    before = sys.gettrace()
    with pytest.raises(ValueError, match="n: must be an integer"):
        measure_calls(finite_labels.p_wrong, 0, 1.0, 0.0)
    assert sys.gettrace() is before


def test_a_cache_hit_counts_the_cached_function_and_what_it_computed():
    """theory.derivations caches its facts (lru_cache): a second, cached call still depends on the formulas the
    first call computed (here the symbolic DPO loss expression inside dpo_facts)."""
    from theory import derivations

    _, first = measure_calls(derivations.dpo_facts)
    _, second = measure_calls(derivations.dpo_facts)
    assert derivations.dpo_facts.cache_info().hits >= 1
    assert "theory.derivations.dpo_facts" in second and "theory.derivations.dpo_loss_expr" in second
    assert formulas(second) == formulas(first)


def test_a_cache_filled_outside_the_profiler_is_measured_again():
    from theory import derivations

    derivations.relative_facts.cache_clear()
    tracing._CLOSURES.pop("theory.derivations.relative_facts", None)
    derivations.relative_facts()  # computed untraced: its closure is unknown
    _, seen = measure_calls(derivations.relative_facts)
    assert "theory.derivations.dpo_loss_expr" in seen


def test_every_module_level_memo_dict_is_registered():
    """A module-level dict that a function fills is a cache: a method that reads it must be charged with what
    computed it, so it is listed in tracing.MEMOISED (a cache missing there hid the CVXPY program from the second
    of two identical runs). Every MEMOISED entry names a function and a dict that exist."""
    import re
    from pathlib import Path

    root = Path(tracing.__file__).resolve().parent.parent
    caches = set()
    for package in tracing.TOOLKIT_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            for name in re.findall(r"^(_?[A-Za-z][A-Za-z0-9_]*)(?:: [^=\n]+)? = \{\}$", text, re.M):
                if re.search(rf"^\s+{name}\[[^\]]+\] = ", text, re.M):
                    caches.add(f"{module}.{name}")
    assert caches, "the scan found no cache at all: it is broken"
    # module-level dicts a function fills that are not caches, each with why no method reads a value from it
    not_caches = {"dpo_rlhf_checks.deferred._PENDING": "output writers queued by methods and run by the runner "
                                                       "after the claims; a method never reads a result from it"}
    assert set(not_caches) <= caches, set(not_caches) - caches  # a stale exemption is an error too
    caches -= set(not_caches)
    assert caches <= set(tracing.MEMOISED.values()), caches - set(tracing.MEMOISED.values())
    for func, cache in tracing.MEMOISED.items():
        for dotted, kind in ((func, callable), (cache, lambda v: isinstance(v, dict))):
            module, _, attr = dotted.rpartition(".")
            assert kind(getattr(importlib.import_module(module), attr)), dotted


def test_class_and_module_bodies_are_not_functions():
    from toy_bandits import dataset

    name = tracing._code_name(dataset.win_graph.__code__, {})
    assert name == "toy_bandits.dataset.win_graph"
    module_code = compile("x = 1", dataset.__file__, "exec")
    assert tracing._code_name(module_code, {}) is None
    class_body = compile("class A:\n    y = 2\n", dataset.__file__, "exec").co_consts[0]
    assert tracing._code_name(class_body, {}) is None


# --- formulas, primitives, coverage ------------------------------------------------------------------------------

def test_formulas_folds_nested_functions_drops_the_method_and_the_primitives():
    measured = {
        "toy_bandits.dataset_claims.finite_label_simulation",
        "toy_bandits.dataset_claims.finite_label_simulation.<locals>.<lambda>",
        "toy_bandits.finite_labels.p_wrong",
        "toy_bandits.finite_labels._check",
        "dpo_rlhf_checks.losses._make_target_loss.<locals>.loss",
        "dpo_rlhf_checks.result.MethodResult.__post_init__",
        "figures.style.save",
    }
    got = formulas(measured, "toy_bandits.dataset_claims:finite_label_simulation")
    assert got == {"toy_bandits.finite_labels.p_wrong", "dpo_rlhf_checks.losses._make_target_loss"}


def test_covers_names_and_containing_modules_only():
    assert covers(["toy_bandits.finite_labels.p_wrong"], "toy_bandits.finite_labels.p_wrong")
    assert covers(["toy_bandits.constrained"], "toy_bandits.constrained.ConstrainedRLHF.solve")
    assert covers(["toy_bandits.constrained.ConstrainedRLHF"], "toy_bandits.constrained.ConstrainedRLHF.solve")
    assert not covers(["toy_bandits.finite_labels.p_wrong"], "toy_bandits.finite_labels.p_wrong_many")
    assert not covers(["toy_bandits.finite"], "toy_bandits.finite_labels.p_wrong")
    assert not covers([], "toy_bandits.finite_labels.p_wrong")


def test_every_shared_primitive_exists_and_has_a_reason():
    """The allowlist names real functions (a renamed function would silently start counting as a formula)."""
    assert 0 < len(tracing.SHARED_PRIMITIVES) <= 50
    for name, reason in {**tracing.SHARED_PRIMITIVES, **tracing.SHARED_PACKAGES}.items():
        assert len(reason) > 10, name
    for name in tracing.SHARED_PRIMITIVES:
        parts = name.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
                break
            except ImportError:
                continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        assert callable(obj) or isinstance(obj, property), name


# --- declared depends_on against the measured formulas --------------------------------------------------------

@pytest.mark.parametrize("claim_id, method", FAST_METHODS)
def test_declared_depends_on_covers_the_measured_formulas_fast(claim_id, method, tmp_path):
    target = get_claim(claim_id).methods[method]
    _, entry = run_method(method, target, _ctx(tmp_path))
    assert _undeclared(entry) == [], f"{claim_id}/{method} does not declare {entry['undeclared']}"


def _claim_params():
    for claim in CLAIMS:
        if not claim.methods:
            continue
        yield pytest.param(claim.id, id=claim.id)


@pytest.mark.slow
@pytest.mark.parametrize("claim_id", list(_claim_params()))
def test_declared_depends_on_covers_the_measured_formulas_all(claim_id, tmp_path):
    """Every method of every claim, quick=True: each measured formula is declared; the independence count is
    at least 2 except for the findings in BELOW_TWO (and those really are below 2)."""
    entry = run_claim(get_claim(claim_id), _ctx(tmp_path))
    missing = {m["name"]: m["undeclared"] for m in entry["methods"] if m["error"] is None and m["undeclared"]}
    assert not [m["name"] for m in entry["methods"] if m["error"]]
    assert missing == {}, f"{claim_id}: declarations miss measured formulas {missing}"
    if claim_id in BELOW_TWO:
        assert entry["independent_methods"] < 2
    else:
        assert entry["independent_methods"] >= 2, [(m["name"], m["depends_on"]) for m in entry["methods"]]


def test_a_planted_undeclared_formula_is_caught(tmp_path, monkeypatch):
    """Mutation check: make the finite-label simulation call a formula it does not declare (the CPO population
    target, through the P_n it already uses) and the declared-vs-measured check reports it."""
    from toy_bandits import cpo_population, finite_labels

    original = finite_labels.p_wrong

    def p_wrong_calling_more(*args, **kwargs):  # defined in a test: not itself a toolkit function
        cpo_population.target("dpo", 0.0, beta=1.0)
        return original(*args, **kwargs)

    monkeypatch.setattr(finite_labels, "p_wrong", p_wrong_calling_more)
    target = get_claim("finite-label-sign").methods["simulation"]
    _, entry = run_method("simulation", target, _ctx(tmp_path))
    assert "toy_bandits.cpo_population.target" in _undeclared(entry)


def test_independence_comes_from_the_measured_sets(tmp_path):
    """finite-label-sign's two methods declared nothing (so, by declaration, were independent); measured, they
    share the decision rule and P_n, and the claim reports 1 independent method."""
    entry = run_claim(get_claim("finite-label-sign"), _ctx(tmp_path))
    shared = set(entry["methods"][0]["depends_on"]) & set(entry["methods"][1]["depends_on"])
    assert "toy_bandits.finite_labels.p_wrong" in shared  # the repaired simulation reads ties itself (no ranks_first)
    assert entry["independent_methods"] == 1


def test_record_closure_keeps_a_cache_computed_outside_a_method_and_counts_its_closure(monkeypatch):
    """lm-map computes its stage outside any method and hands it to the slow claims through toy_lm.stage._CACHE:
    without a recorded closure the runner clears it (and the claim trains a second stage); with it, a reader
    counts what computing it entered."""
    from dpo_rlhf_checks import tracing
    from toy_lm import stage as stage_mod

    monkeypatch.setattr(tracing, "_CLOSURES", {})
    monkeypatch.setattr(stage_mod, "_CACHE", {"k": "stage"})
    tracing._clear_unmeasured_caches({})
    assert stage_mod._CACHE == {}  # unmeasured: cleared
    stage_mod._CACHE["k"] = "stage"
    tracing.record_closure("toy_lm.stage.get_stage", {"toy_lm.train.train_preference_batched"})
    tracing._clear_unmeasured_caches({})
    assert stage_mod._CACHE == {"k": "stage"}
    monkeypatch.setattr(stage_mod, "_cache_key", lambda ctx: "k")
    _, seen = tracing.measure_calls(stage_mod.get_stage, object())
    assert "toy_lm.train.train_preference_batched" in seen
    with pytest.raises(ValueError, match="not a memoised function"):
        tracing.record_closure("toy_lm.stage.run_stage", set())
