"""theory.sec4_equivalence.equiv_ordered_pair_numeric: its ODE check of the delta-flow's time to delta = 0."""

import math

import numpy as np

from dpo_rlhf_checks.result import CheckContext
from theory import sec4_equivalence as E


def test_a_flow_that_never_crosses_in_the_window_fails_the_check_without_a_crash(monkeypatch):
    """The ODE integrates d delta/dt = -dL/d delta up to 10 t_cf + 10 (t_cf the closed-form time) and stops at
    delta = 0. A flow 1000x slower than the toolkit's (the one-pair gradient scaled, as a wrong loss would be) does not
    cross inside that window; the method indexed the empty event list and raised IndexError (found by a helper
    reviewing a survivor of mutation on the window). Now the error is infinite and the amended statement fails."""
    real = E.dpo_value_and_grad

    def slow(delta, dref, b, **kw):
        loss, g = real(delta, dref, b, **kw)
        return (loss, np.asarray(g) * 1e-3) if len(delta) == 1 else (loss, g)

    ctx = CheckContext(seed=0, quick=True)
    assert E.equiv_ordered_pair_numeric(ctx).evidence["delta_flow_time_rel_err_vs_ode"] < 1e-7
    monkeypatch.setattr(E, "dpo_value_and_grad", slow)
    res = E.equiv_ordered_pair_numeric(ctx)
    assert math.isinf(res.evidence["delta_flow_time_rel_err_vs_ode"]) and res.amended is False
