"""lm-kernel-prediction: the design's numbers are the registry's text, the numeric method decides from the dynamics
(and fails on a planted error), and the decision rules of the training method."""

import numpy as np
import pytest

from dpo_rlhf_checks.registry import get_claim
from dpo_rlhf_checks.result import CheckContext
from toy_lm import kernel_claim
from toy_lm.kernel_claim import KERNEL, lm_kernel_numeric


def test_design_numbers_are_the_registry_text():
    claim = get_claim("lm-kernel-prediction")
    assert f"+-{KERNEL.margin:g}" in claim.statement and f"+-{KERNEL.margin:g}" in claim.amendment
    assert "two standard errors" in claim.statement and KERNEL.slope_se == 2.0
    assert f"every {KERNEL.relinearise_every} steps" in claim.amendment
    assert KERNEL.methods == ("dpo", "dpo_bt") and "ordered and Bradley-Terry labels" in claim.statement
    assert "1 - 0.05/K" in claim.statement
    from toy_lm.design import DESIGN

    assert DESIGN.alpha == 0.05


def test_numeric_method_holds_on_the_dynamics(tmp_path):
    r = lm_kernel_numeric(CheckContext(out_dir=tmp_path))
    assert r.literal is True and r.amended is True
    red = r.evidence["reductions"]
    assert len(red) == 10 and all(v["max_abs_diff"] <= v["tol"] for v in red.values())


@pytest.mark.parametrize("plant", ["double_lr", "diagonal_kernel"])
def test_numeric_method_fails_on_a_planted_error(tmp_path, monkeypatch, plant):
    real = kernel_claim.run_linearised

    def planted(method, **kw):
        if plant == "double_lr":
            kw["lr"] = 2 * kw["lr"]
        elif kw.get("kernel") is not None:
            kw["kernel"] = np.diag(np.diag(np.asarray(kw["kernel"])))
        return real(method, **kw)

    monkeypatch.setattr(kernel_claim, "run_linearised", planted)
    r = lm_kernel_numeric(CheckContext(out_dir=tmp_path))
    assert r.literal is False and r.counterexample["reductions_that_fail"]
