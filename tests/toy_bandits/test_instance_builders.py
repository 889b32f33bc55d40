"""The instances the claim methods build: each is what its docstring says (a distribution, the stated log-odds,
labels drawn with the Bradley-Terry probability), and the KKT residual flags a negative probability."""

import math

import numpy as np
import pytest

from theory.common import random_policy_instances
from toy_bandits import map_claims as mc
from toy_bandits.constrained import kkt_residuals
from toy_bandits.dataset_claims import _bt_dataset
from toy_bandits.instance import BanditInstance


def test_random_policy_instances_are_distributions():
    # every fifth reference has entries near 0 and 1; all of them must sum to one (in log space: logsumexp = 0)
    insts = random_policy_instances(np.random.default_rng(3), 20)
    for i, (beta, log_ref, rew) in enumerate(insts):
        assert beta > 0 and log_ref.shape == rew.shape and 2 <= log_ref.size <= 8
        assert abs(np.logaddexp.reduce(log_ref)) <= 1e-12, i
        assert np.all(log_ref <= 0)
    assert all(np.exp(insts[i][1]).min() < 1e-8 for i in range(0, 20, 5))


def test_population_instances_have_the_stated_log_odds():
    pi_ref, reward, pairs = mc._population_instances(2.0, np.random.default_rng(0))
    assert np.allclose(pi_ref.sum(axis=1), 1.0, atol=1e-15)
    d_ref = np.log(pi_ref[:, 0]) - np.log(pi_ref[:, 1])
    expected = [d for d in (-2.0, -1.0) for _ in range(4)]
    assert np.allclose(d_ref, expected, atol=1e-12)
    # delta* = delta_ref + dr / beta takes the four stated values per delta_ref
    d_star = d_ref + (reward[:, 0] - reward[:, 1]) / 2.0
    assert np.allclose(d_star, [-1.0, -0.4, 0.4, 1.0] * 2, atol=1e-12)
    assert pairs.shape == (8, 6, 2)


def test_bt_dataset_labels_follow_the_reward_difference():
    # n labels per pair: the count for (i, j) is Binomial(n, sigma(r_i - r_j)); 5 standard errors
    n = 40000
    _, reward, raw = _bt_dataset(np.random.default_rng(11), 4, n, 1.0)
    counts = {(i, j): k for i, j, k in raw}
    for i in range(4):
        for j in range(i + 1, 4):
            q = 1.0 / (1.0 + math.exp(-(reward[i] - reward[j])))
            k = counts.get((i, j), 0)
            assert k + counts.get((j, i), 0) == n
            assert abs(k / n - q) <= 5 * math.sqrt(q * (1 - q) / n), (i, j, k / n, q)


def test_kkt_primal_residual_flags_a_negative_probability():
    inst = BanditInstance(np.array([0.5, 0.3, 0.2]), np.zeros(3), 1.0, [(0, 1)], 0.0)
    pi = np.array([0.7, 0.35, -0.05])  # sums to 1, satisfies the pair, one entry below 0
    res = kkt_residuals(inst, pi, np.zeros(1))
    assert res["primal"] == pytest.approx(0.05, abs=1e-15)
    assert kkt_residuals(inst, np.array([0.6, 0.3, 0.1]), np.zeros(1))["primal"] <= 1e-15


def test_kkt_primal_residual_flags_a_violated_preference_constraint():
    """kkt_residuals' primal residual reads the preference constraints g_k = pi(w_k) - e^m pi(l_k) >= 0, not only
    the simplex: pi = pi_ref = (0.2, 0.5, 0.3) with zero reward, beta 1, pair (0, 1), margin 0.5 and mu = 0 is the
    unconstrained optimum (stationarity, dual and slackness all 0) but violates the pair by
    e^0.5 * 0.5 - 0.2 = 0.624361 (by hand), so primal must be that number and the point cannot pass KKT_TOL = 1e-9.
    A max of (-g)^+ replaced by a min (a survivor of mutation) read 0 there: a solver returning pi* and ignoring
    every constraint would have been certified "optimal". The pair at margin 0.3 with pi(w) = 0.6 > e^0.3 * 0.3 =
    0.404958 holds: primal stays 0."""
    inst = BanditInstance(np.array([0.2, 0.5, 0.3]), np.zeros(3), 1.0, [(0, 1)], 0.5)
    res = kkt_residuals(inst, np.array([0.2, 0.5, 0.3]), np.zeros(1))
    assert res["primal"] == pytest.approx(0.5 * math.exp(0.5) - 0.2, rel=1e-12)  # 0.6243606...
    assert res["stationarity"] <= 1e-15 and res["slackness"] == 0.0 and res["dual"] <= 0.0
    two = BanditInstance(np.array([0.5, 0.3, 0.2]), np.zeros(3), 1.0, [(0, 1), (1, 2)], 0.3)
    res2 = kkt_residuals(two, np.array([0.6, 0.3, 0.1]), np.zeros(2))  # (0,1) holds; (1,2): 0.3 - e^0.3 * 0.1 > 0
    assert res2["primal"] <= 1e-15
    res3 = kkt_residuals(two, np.array([0.3, 0.35, 0.35]), np.zeros(2))  # both violated: e^0.3*0.35 - 0.3 largest
    assert res3["primal"] == pytest.approx(max(math.exp(0.3) * 0.35 - 0.3, math.exp(0.3) * 0.35 - 0.35), rel=1e-12)
