"""gpo_flow.flow's crossing time when the dense interpolant misses the signs of the step's endpoints (rounding): the
linear interpolation between the two accepted steps, which must lie inside that step."""

import numpy as np
from scipy.integrate import LSODA

import toy_bandits.gpo_flow as F
from dpo_rlhf_checks.atlas_rows import Setting


def test_linear_fallback_crossing_lies_in_the_crossing_step(monkeypatch):
    setting = Setting("ipo", n=10)
    exact = F.flow(setting, -5.0, 1e6, stop_at_zero=True)["t_cross"]
    times = []

    class NoDense(LSODA):  # the same steps; an interpolant whose sign never changes, so the fallback runs
        def step(self):
            msg = super().step()
            times.append(self.t)
            return msg

        def dense_output(self):
            return lambda t: np.array([0.0, 1.0, 0.0])

    monkeypatch.setattr(F, "LSODA", NoDense)
    linear = F.flow(setting, -5.0, 1e6, stop_at_zero=True)["t_cross"]
    steps = [0.0, *times]
    k = next(i for i in range(1, len(steps)) if steps[i - 1] <= exact <= steps[i])
    assert steps[k - 1] <= linear <= steps[k]
    assert steps[k - 1] > 0  # the crossing step is not the first: its start time matters

