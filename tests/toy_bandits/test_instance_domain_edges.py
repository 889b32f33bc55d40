"""The validated domain of toy_bandits.instance at its exact edges: each documented bound accepted on the bound and
rejected one float step past it (closed intervals [0, MAX_MARGIN], [MIN_BETA, MAX_BETA], |r| <= MAX_ABS_REWARD,
|sum pi_ref - 1| <= SUM_TOL, indices in [0, K)). Written to kill comparison-boundary survivors of
tests/mutation_score.py (``margin > MAX_MARGIN`` -> ``>=`` changed no verdict and failed no test).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from toy_bandits.instance import (MAX_ABS_REWARD, MAX_BETA, MAX_MARGIN, MIN_BETA, SUM_TOL, BanditInstance,
                                  PairBatch)

PI = [0.2, 0.3, 0.5]
R = [1.0, 0.0, -1.0]


def _inst(**kw):
    args = {"pi_ref": PI, "reward": R, "beta": 1.0, "preferences": [(0, 1)], "margin": 0.0}
    args.update(kw)
    return BanditInstance(**args)


def test_margin_interval_is_closed():
    assert _inst(margin=0.0).margin == 0.0
    assert _inst(margin=MAX_MARGIN).margin == MAX_MARGIN
    for bad in (-5e-324, math.nextafter(MAX_MARGIN, math.inf)):
        with pytest.raises(ValueError, match="margin"):
            _inst(margin=bad)


def test_beta_interval_is_closed():
    assert _inst(beta=MIN_BETA).beta == MIN_BETA and _inst(beta=MAX_BETA).beta == MAX_BETA
    for bad in (0.0, math.nextafter(MIN_BETA, 0.0), math.nextafter(MAX_BETA, math.inf)):
        with pytest.raises(ValueError, match="beta"):
            _inst(beta=bad)


def test_reward_bound_is_inclusive():
    assert _inst(reward=[MAX_ABS_REWARD, 0.0, -MAX_ABS_REWARD]).reward[0] == MAX_ABS_REWARD
    with pytest.raises(ValueError, match=r"reward\[2\]"):
        _inst(reward=[0.0, 1.0, -math.nextafter(MAX_ABS_REWARD, math.inf)])


def test_pi_ref_sum_tolerance_and_exact_renormalisation():
    scale = 1 + 0.9 * SUM_TOL
    inst = _inst(pi_ref=[p * scale for p in PI])
    assert math.fsum(inst.pi_ref) == pytest.approx(1.0, abs=2e-16)
    assert inst.pi_ref == pytest.approx(PI, rel=1e-15)  # renormalised back to the proportions
    for bad_scale in (1 + 1.1 * SUM_TOL, 1 - 1.1 * SUM_TOL):
        with pytest.raises(ValueError, match="sum to 1"):
            _inst(pi_ref=[p * bad_scale for p in PI])
    with pytest.raises(ValueError, match="full support"):
        _inst(pi_ref=[0.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="at least 2"):
        _inst(pi_ref=[1.0], reward=[0.0], preferences=[])


def test_pair_indices_run_over_0_to_k_minus_1():
    assert _inst(preferences=[(0, 2), (2, 1)]).preferences == ((0, 2), (2, 1))
    for bad in ([(0, 3)], [(-1, 0)]):
        with pytest.raises(ValueError, match="out of range"):
            _inst(preferences=bad)
    with pytest.raises(ValueError, match="self-pair"):
        _inst(preferences=[(1, 1)])
    with pytest.raises(ValueError, match="more than once"):
        _inst(preferences=[(0, 1), (2, 1), (0, 1)])
    assert _inst(preferences=[(0, 1), (1, 0)]).winners.tolist() == [0, 1]  # both directions: not a duplicate


def test_pair_batch_bounds():
    pi = np.array([PI, [0.5, 0.25, 0.25]])
    r = np.array([R, R])
    ok = PairBatch(pi, r, 1.0, np.array([0, 2]), np.array([2, 1]), 0.0)
    assert ok.margin.tolist() == [0.0, 0.0] and ok.winner.tolist() == [0, 2]
    with pytest.raises(ValueError, match="beta"):
        PairBatch(pi, r, np.array([1.0, 0.0]), np.array([0, 2]), np.array([2, 1]), 0.0)
    with pytest.raises(ValueError, match="margin"):
        PairBatch(pi, r, 1.0, np.array([0, 2]), np.array([2, 1]), np.array([0.0, -5e-324]))
    for w in (np.array([0, 3]), np.array([-1, 2])):
        with pytest.raises(ValueError, match=r"\[0, 3\)"):
            PairBatch(pi, r, 1.0, w, np.array([2, 1]), 0.0)
    with pytest.raises(ValueError, match="self-pair"):
        PairBatch(pi, r, 1.0, np.array([0, 1]), np.array([2, 1]), 0.0)
    one = ok.instance(1)
    assert one.preferences == ((2, 1),) and one.pi_ref.tolist() == pytest.approx([0.5, 0.25, 0.25])
