"""Without TRL, importing dpo_rlhf_checks.integrations.trl is a clear ImportError (runs with or without TRL)."""

import importlib
import sys

import pytest


def test_import_without_trl_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)  # as if TRL were not installed: `import trl` raises ImportError
    monkeypatch.delitem(sys.modules, "dpo_rlhf_checks.integrations.trl", raising=False)
    with pytest.raises(ImportError, match=r"needs TRL and transformers: pip install 'dpo-rlhf-checks\[hf\]'"):
        importlib.import_module("dpo_rlhf_checks.integrations.trl")
    monkeypatch.delitem(sys.modules, "dpo_rlhf_checks.integrations.trl", raising=False)


def test_base_package_imports_without_the_hf_extra(monkeypatch):
    for name in ("transformers", "trl", "datasets"):
        monkeypatch.setitem(sys.modules, name, None)
    for mod in ("dpo_rlhf_checks.score", "dpo_rlhf_checks.audit", "dpo_rlhf_checks.audit_diagnostics"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
        importlib.import_module(mod)  # score imports transformers only when it runs
    from dpo_rlhf_checks import score

    assert score.main(["--model", "m", "--data", "d.jsonl", "--out", "o.jsonl"]) == 2
