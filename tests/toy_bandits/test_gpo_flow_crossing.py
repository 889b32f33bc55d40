"""gpo_flow.flow's crossing time when the dense interpolant misses the signs of the step's endpoints (rounding): the
linear interpolation of delta between the two accepted steps around the crossing."""

import numpy as np
import pytest
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
            times.append((self.t, self.y[0] - self.y[1]))
            return msg

        def dense_output(self):
            return lambda t: np.array([0.0, 1.0, 0.0])

    monkeypatch.setattr(F, "LSODA", NoDense)
    linear = F.flow(setting, -5.0, 1e6, stop_at_zero=True)["t_cross"]
    steps = [(0.0, -5.0), *times]
    k = next(i for i in range(1, len(steps)) if steps[i - 1][1] < 0 <= steps[i][1])
    (t0, d0), (t1, d1) = steps[k - 1], steps[k]
    assert t0 > 0  # the crossing step is not the first: its start time matters
    assert linear == pytest.approx(t0 + (t1 - t0) * (-d0) / (d1 - d0), rel=1e-12)
    assert t0 <= exact <= t1 and t0 <= linear <= t1  # the same step as the root of the true interpolant

