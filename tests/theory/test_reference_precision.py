"""The mpmath references of the numeric theory methods are computed at a stated precision of their own
(theory.symbols.REF_DPS digits), whatever mpmath's global precision is: importing another module (theory.sec13_dataset
once set mp.dps = 50 at import time) or a caller's setting must not change a reference or an error measured against
it. Before, the references ran at the global precision: 15 digits in ``--all`` (sec13_dataset imported later), 50 in
pytest (imported at collection), so the same method reported other errors in the two."""
import subprocess
import sys

import mpmath
import pytest

from dpo_rlhf_checks.result import CheckContext
from theory import symbols as S

METHODS = [("theory.sec2_dpo", "dpo_reparam_numeric"), ("theory.sec4_equivalence", "equiv_ordered_pair_numeric"),
           ("theory.sec5_relative", "relative_advantage_numeric"),
           ("theory.sec6_undesirable", "gradient_weakening_numeric"), ("theory.sec7_bridge", "loss_delta_bridge_numeric")]


def test_importing_sec13_dataset_leaves_mpmath_global_precision_alone():
    code = "import mpmath; mpmath.mp.dps = 15; import theory.sec13_dataset; print(mpmath.mp.dps)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["15"]


def test_rel_err_resolves_below_double_rounding_at_any_global_precision():
    """A float64 value one rounding from a 50-digit reference has a relative error near 2**-53 (1.1e-16), not 0 (what
    a reference rounded to 15 digits would give) and not the error of a 15-digit reference."""
    saved = mpmath.mp.dps
    try:
        for dps in (15, 50):
            mpmath.mp.dps = dps
            with mpmath.workdps(60):
                ref = mpmath.mpf(1) / 3
            err = S.rel_err(1 / 3, ref)
            # 1/3 in float64 is 0x3FD5555555555555: 1/3 - 1/(3 * 2**54) exactly, a relative error of 2**-54 / ... = 5.55e-17
            assert err == pytest.approx(2.0 ** -54, rel=1e-12, abs=0)
    finally:
        mpmath.mp.dps = saved


@pytest.mark.parametrize("module, name", METHODS)
def test_numeric_method_evidence_does_not_depend_on_mpmath_global_precision(module, name):
    import importlib

    fn = getattr(importlib.import_module(module), name)
    saved = mpmath.mp.dps
    out = {}
    try:
        for dps in (15, 50):
            mpmath.mp.dps = dps
            r = fn(CheckContext(seed=0, quick=True))
            out[dps] = (r.literal, r.amended, repr(r.evidence))
    finally:
        mpmath.mp.dps = saved
    assert out[15] == out[50]
