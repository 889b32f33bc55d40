"""U_eps by CVXPY against the loss-to-delta bridge (docs/theory.md §7) and the KKT closed forms."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toy_bandits.maps import UEpsProblem, delta_at_loss, pair_target_policy
from toy_bandits.rlhf import gibbs_policy, rlhf_objective


def softplus(x):
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


@settings(max_examples=6 * settings.default.max_examples // 60)  # scaled by the profile
@given(st.floats(-4.0, 1.5), st.floats(0.2, 3.0), st.floats(0.05, 0.5))
def test_emptiness_boundary_is_l_crit(delta_ref, beta, third):
    pw = (1 - third) / (1 + math.exp(-delta_ref))
    pi_ref = np.array([pw, 1 - third - pw, third])
    prob = UEpsProblem(pi_ref, np.array([0.3, 0.0, 0.1]), beta, 0, 1)
    l_crit = softplus(beta * math.log(pi_ref[0] / pi_ref[1]))
    assert prob.emptiness_boundary() == pytest.approx(l_crit, abs=1e-6)
    assert prob.nonempty(l_crit * (1 + 1e-3))
    assert not prob.nonempty(l_crit * (1 - 1e-3))


def test_delta_at_loss_inverts_the_dpo_loss():
    for delta_ref, beta, delta in ((-1.0, 0.5, 0.3), (2.0, 3.0, -4.0), (0.0, 1e-2, 50.0)):
        eps = softplus(-beta * (delta - delta_ref))
        assert float(delta_at_loss(eps, delta_ref, beta)) == pytest.approx(delta, rel=1e-9, abs=1e-9)
    with pytest.raises(ValueError, match="eps"):
        delta_at_loss(0.0, 0.0, 1.0)


@pytest.mark.parametrize("solver,tol", [("CLARABEL", 1e-5), ("SCS", 1e-5)])
def test_best_and_closest_policies_match_closed_forms(solver, tol):
    pi_ref = np.array([0.1, 0.6, 0.3])
    reward = np.array([1.0, 0.0, 0.5])
    beta = 1.0
    prob = UEpsProblem(pi_ref, reward, beta, 0, 1, solver=solver)
    d_star = prob.delta_ref + 1.0
    for eps in (0.2, 0.3, 0.5):
        sol = prob.solve(eps)
        assert sol.nonempty
        d_eps = float(delta_at_loss(eps, prob.delta_ref, beta))
        best = pair_target_policy(pi_ref, reward, beta, 0, 1, float(np.clip(d_star, d_eps, 0.0)))
        closest = pair_target_policy(pi_ref, np.zeros(3), 1.0, 0, 1, float(np.clip(prob.delta_ref, d_eps, 0.0)))
        np.testing.assert_allclose(sol.best, best, atol=tol)
        np.testing.assert_allclose(sol.closest, closest, atol=tol)
    # for eps >= l(pi*), pi* (in U here) is feasible, so it is the RLHF-best point of U_eps
    np.testing.assert_allclose(prob.solve(0.5).best, gibbs_policy(pi_ref, reward, beta), atol=tol)


@settings(max_examples=30 * settings.default.max_examples // 60)  # scaled by the profile
@given(st.lists(st.floats(0.05, 1.0), min_size=3, max_size=5), st.lists(st.floats(-2, 2), min_size=5, max_size=5),
       st.floats(0.1, 5.0), st.floats(-3.0, 3.0))
def test_pair_target_policy_is_the_constrained_optimum(raw, reward, beta, target):
    pi_ref = np.array(raw) / sum(raw)
    reward = np.array(reward[: len(raw)])
    pi = pair_target_policy(pi_ref, reward, beta, 0, 1, target)
    assert pi.sum() == pytest.approx(1.0, abs=1e-12)
    assert math.log(pi[0] / pi[1]) == pytest.approx(target, abs=1e-9)
    # moving mass along any direction that keeps delta = target lowers J (tangent perturbation with a fixed ratio)
    j0 = float(rlhf_objective(pi, pi_ref, reward, beta))
    for k in range(2, len(pi)):
        for s in (-1e-4, 1e-4):
            other = pi.copy()
            other[k] += s
            other[0] -= s * pi[0] / (pi[0] + pi[1])
            other[1] -= s * pi[1] / (pi[0] + pi[1])
            if other.min() > 0:
                assert float(rlhf_objective(other, pi_ref, reward, beta)) <= j0 + 1e-12


def test_ueps_rejects_bad_arguments():
    with pytest.raises(ValueError, match="distinct"):
        UEpsProblem(np.array([0.5, 0.5]), np.zeros(2), 1.0, 0, 0)
    # indices in [0, K): l = K or w = K is the clear error too, not an IndexError from inside (l <= K, a survivor of
    # mutation, let l = 2 through to pi_ref[2])
    for w, l in ((0, 2), (2, 0), (-1, 1), (0, -1)):
        with pytest.raises(ValueError, match=r"distinct indices w, l in \[0, K\)"):
            UEpsProblem(np.array([0.5, 0.5]), np.zeros(2), 1.0, w, l)
    with pytest.raises(ValueError, match="solver"):
        UEpsProblem(np.array([0.5, 0.5]), np.zeros(2), 1.0, 0, 1, solver="ECOS_BB")
    with pytest.raises(ValueError, match="pi_ref"):
        UEpsProblem(np.array([0.5, 0.5]), np.zeros(3), 1.0, 0, 1)
    for beta in (0.0, -0.0, -1.0, float("nan")):  # beta > 0 strictly: at -0.0 the U_eps sets came out wrong
        with pytest.raises(ValueError, match="beta > 0"):
            UEpsProblem(np.array([0.5, 0.5]), np.zeros(2), beta, 0, 1)
