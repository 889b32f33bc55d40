"""Time-in-U law repairs (issue 16): theory and LM censored at the same horizon and fitted by the same estimator,
no censored pair dropped, the convergence guard. Each of these fails on commit c9d097b."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from toy_lm import stage as stage_mod
from toy_lm.config import LMConfig
from toy_lm.predict import Comparison


def _comparison(delta_ref, obs_cross, pred_cross):
    p = len(delta_ref)
    return Comparison(clock=np.arange(41), clock_saturated=False, delta_ref=np.asarray(delta_ref, float),
                      pred_delta=np.zeros(p), obs_delta=np.zeros(p), pred_in_U_max=0.5, obs_in_U_max=0.5,
                      pred_cross=np.asarray(pred_cross), obs_cross=np.asarray(obs_cross), tab_final_objective=0.1,
                      lm_final_objective=0.1)


class _Stage(SimpleNamespace):
    def comps(self, key):
        return self.comparisons[key]


def _fake_stage(cross_of_h, optimizer="sgd"):
    """A stage whose DPO comparisons have crossing times cross_of_h(H) for the LM and the prediction alike."""
    cfg = LMConfig(steps=40, betas=(0.5, 2.5), optimizers=(optimizer,))
    rng = np.random.default_rng(1)
    comparisons = {}
    for beta in cfg.betas:
        comps = []
        for _ in range(3):
            dref = -rng.uniform(0.3, 7.0, 40)
            t = np.minimum(cross_of_h(beta * -dref, rng), 41).astype(int)
            comps.append(_comparison(dref, t, t.copy()))
        comparisons[(beta, optimizer, "dpo")] = comps
    return _Stage(cfg=cfg, comparisons=comparisons)


def test_lm_and_theory_with_the_same_times_get_the_same_slope():
    # Planted: times exp(0.5 H + noise), many censored at the 40-step horizon. Theory = LM exactly, so a fit that
    # censors both at one horizon with one estimator gives one slope. (c9d097b: the theory's slope came from
    # uncensored single-pair flow times, a different number.)
    st = _fake_stage(lambda h, rng: np.ceil(np.exp(0.5 * h + rng.normal(0, 0.4, h.size))))
    law = stage_mod.time_in_U_law(st, "sgd")
    assert law["n_censored"] > 10 and law["fitted_slope"] is not None
    assert law["theory_slope"] == pytest.approx(law["fitted_slope"], abs=1e-9)
    assert law["fitted_slope"] == pytest.approx(0.5, abs=0.1)  # the planted slope, through the censoring


def test_adam_theory_slope_keeps_the_theory_censored_pairs():
    # Half the pairs never cross within the horizon. Dropping them (c9d097b, stage.py:321-324) flattens the slope.
    st = _fake_stage(lambda h, rng: np.ceil(np.exp(0.6 * h + rng.normal(0, 0.3, h.size))), optimizer="adam")
    law = stage_mod.time_in_U_law(st, "adam")
    assert law.get("n_theory_censored", 0) > 20
    assert law["theory_slope"] == pytest.approx(0.6, abs=0.1)


def test_a_fit_that_did_not_converge_is_not_reported(monkeypatch):
    # stage.py:282 on c9d097b returned the estimate when the optimiser reported failure but a finite value. The fit
    # is now censored_fit (Newton, its own convergence test): a fit that says it did not converge, with finite
    # numbers, must still give no slope.
    real = stage_mod.censored_fit

    def failing(*args, **kwargs):
        return {**real(*args, **kwargs), "converged": False, "reason": "planted"}

    monkeypatch.setattr(stage_mod, "censored_fit", failing)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 5, 60)
    g = np.zeros(60, int)
    y = 0.5 * x + rng.normal(0, 0.3, 60)
    assert math.isfinite(failing(x, np.minimum(y, 2.0), g, y > 2.0, 2.0)["slope"])
    tf = stage_mod.time_in_U_fits(x, np.exp(np.minimum(y, 2.0)), np.exp(np.minimum(y, 2.0)), g, math.exp(2.0))
    assert all(stage_mod.fit_number(tf["fits"][k], n) is None for k in ("lm", "pred") for n in ("slope", "stderr"))
