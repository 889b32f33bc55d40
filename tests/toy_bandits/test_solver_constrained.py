"""Constrained RLHF solvers (toy_bandits.constrained): closed form vs CVXPY (CLARABEL, SCS) vs the dual,
KKT and complementary slackness, invariances, cycles, extreme beta and near-zero probabilities.

Tolerances (absolute, on probabilities): CLARABEL 1e-5, SCS 1e-3 (CVXPY's error in pi is of the order of
sqrt(its gap tolerance); see toy_bandits.constrained), dual vs closed form 1e-8 (both log space).
"""

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from toy_bandits.constrained import (
    ConstrainedRLHF, InfeasiblePreferencesError, closed_form_pairs, compiled_problem, find_cycle, kkt_residuals,
    price_by_objectives, solve,
)
from toy_bandits.instance import BanditInstance, PairBatch

TOL_CLARABEL, TOL_SCS, TOL_DUAL = 1e-5, 1e-3, 1e-8


@st.composite
def pair_instances(draw, min_log_p=-12.0, log_beta=(-3.0, 3.0)):
    """One-pair instances: K in 2..6, pi_ref with entries down to 10^min_log_p, r in [-5, 5], beta 1e-3..1e3."""
    k = draw(st.integers(2, 6))
    weights = 10.0 ** np.array(draw(st.lists(st.floats(min_log_p, 0.0), min_size=k, max_size=k)))
    reward = draw(st.lists(st.floats(-5.0, 5.0), min_size=k, max_size=k))
    beta = 10.0 ** draw(st.floats(*log_beta))
    margin = draw(st.one_of(st.just(0.0), st.floats(0.0, 3.0)))
    w = draw(st.integers(0, k - 1))
    l = draw(st.integers(0, k - 1).filter(lambda v: v != w))
    return BanditInstance(weights / weights.sum(), reward, beta, [(w, l)], margin)


@st.composite
def dag_instances(draw):
    """K = 5 with a random DAG of 1..5 pairs (edges i -> j for i < j in a random order), beta 1e-2..1e2."""
    k = 5
    order = draw(st.permutations(range(k)))
    edges = draw(st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)).filter(lambda e: e[0] < e[1]),
                          min_size=1, max_size=5, unique=True))
    prefs = [(order[i], order[j]) for i, j in edges]
    weights = 10.0 ** np.array(draw(st.lists(st.floats(-3.0, 0.0), min_size=k, max_size=k)))
    reward = draw(st.lists(st.floats(-3.0, 3.0), min_size=k, max_size=k))
    beta = 10.0 ** draw(st.floats(-2.0, 2.0))
    margin = draw(st.floats(0.0, 2.0))
    return BanditInstance(weights / weights.sum(), reward, beta, prefs, margin)


# ---------------------------------------------------------------------------------------------
# closed form vs CVXPY, two solvers
# ---------------------------------------------------------------------------------------------

@given(inst=pair_instances())
@example(inst=BanditInstance([1e-12, 1 - 2e-12, 1e-12], [0.0, 5.0, 0.0], 1e-3, [(0, 1)], 1.0))
def test_closed_form_agrees_with_clarabel(inst):
    cf, cl = solve(inst, "closed-form"), solve(inst, "cvxpy", "CLARABEL")
    assert np.max(np.abs(cf.pi - cl.pi)) <= TOL_CLARABEL
    assert abs(cf.price_of_alignment - cl.price_of_alignment) <= TOL_CLARABEL * (inst.beta + cf.price_of_alignment)
    if min(cf.pi[inst.winners[0]], cf.pi[inst.losers[0]]) >= 1e-2:  # mu identifiable at solver accuracy
        assert abs(cf.multipliers[0] - cl.multipliers[0]) <= 1e-2 * (inst.beta + cf.multipliers[0])


@given(inst=pair_instances(log_beta=(-2.0, 2.0)))
def test_closed_form_agrees_with_scs(inst):
    cf, sc = solve(inst, "closed-form"), solve(inst, "cvxpy", "SCS")
    assert sc.status in ("optimal", "optimal_inaccurate")
    assert np.max(np.abs(cf.pi - sc.pi)) <= TOL_SCS


@given(inst=pair_instances(min_log_p=-30.0))
def test_closed_form_agrees_with_dual(inst):
    cf, du = solve(inst, "closed-form"), solve(inst, "dual")
    assert np.max(np.abs(cf.pi - du.pi)) <= TOL_DUAL
    assert abs(cf.price_of_alignment - du.price_of_alignment) <= TOL_DUAL * (inst.beta + cf.price_of_alignment)


def test_multiplier_convention_planted_example():
    """K = 2, pi_ref uniform, r = (0, 1), beta = 1, m = 0: delta* = -1, mu = (0 - 0 - (-1))/(1 + 1)... with
    dr = r(w) - r(l) = -1: mu = (beta m - beta delta_ref - dr)/(1 + e^m) = 1/2 and pi_c = (1/2, 1/2)."""
    inst = BanditInstance([0.5, 0.5], [0.0, 1.0], 1.0, [(0, 1)], 0.0)
    for method, solver, tol in (("closed-form", "CLARABEL", 1e-12), ("dual", "CLARABEL", 1e-9),
                                ("cvxpy", "CLARABEL", 1e-5), ("cvxpy", "SCS", 1e-3)):
        sol = solve(inst, method, solver)
        assert abs(sol.multipliers[0] - 0.5) <= tol, (method, solver, sol.multipliers)
        np.testing.assert_allclose(sol.pi, [0.5, 0.5], atol=tol)
    # price: J(pi*) - J(pi_c) = beta log Z - (1/2) = log((1 + e)/2) - 1/2
    assert solve(inst).price_of_alignment == pytest.approx(math.log((1 + math.e) / 2) - 0.5, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# KKT and complementary slackness
# ---------------------------------------------------------------------------------------------

@given(inst=pair_instances(min_log_p=-30.0))
def test_closed_form_kkt_in_log_space(inst):
    batch = PairBatch.from_instances([inst])
    sol = closed_form_pairs(batch)
    mu, d_c, m = sol.mu[0], sol.delta_c[0], inst.margin
    assert mu >= 0
    assert d_c >= m - 1e-9 * max(1.0, abs(m))  # primal feasibility (log form)
    if mu > 0:  # complementary slackness: the constraint binds
        assert abs(d_c - m) <= 1e-9 * max(1.0, abs(sol.delta_star[0]))
    else:  # inactive: pi_c = pi*
        assert sol.delta_star[0] >= m
        np.testing.assert_array_equal(sol.pi_c[0], np.exp(sol.log_pi_star[0]))
    res = kkt_residuals(inst, sol.pi_c[0], sol.mu)
    assert max(res.values()) <= 1e-9


@given(inst=dag_instances())
# found by Hypothesis: pi*(y_w) ~ e^-200, the L-BFGS-B dual stalled at delta_c = -81 (gradient underflow);
# fixed by the exact log-space active-set step in solve_dual
@example(inst=BanditInstance([0.2] * 5, [-2.0, 0.0, 0.0, 0.0, 0.0], 0.01, [(0, 1)], 0.0))
def test_multi_pair_cvxpy_agrees_with_dual_and_kkt(inst):
    du, cl = solve(inst, "dual"), solve(inst, "cvxpy", "CLARABEL")
    assert np.max(np.abs(du.pi - cl.pi)) <= TOL_CLARABEL
    assert max(du.kkt.values()) <= 1e-7
    assert max(cl.kkt.values()) <= TOL_CLARABEL
    assert np.all(du.multipliers >= 0)
    # complementary slackness, pair by pair, in log space for the dual solution
    for k in range(len(inst.preferences)):
        assert du.delta_c[k] >= inst.margin - 1e-7
        if du.multipliers[k] > 1e-9:
            assert abs(du.delta_c[k] - inst.margin) <= 1e-6


# ---------------------------------------------------------------------------------------------
# invariances
# ---------------------------------------------------------------------------------------------

@given(inst=pair_instances(min_log_p=-6.0), shift=st.floats(-100.0, 100.0))
def test_reward_shift_leaves_both_optima_unchanged(inst, shift):
    shifted = BanditInstance(inst.pi_ref, inst.reward + shift, inst.beta, inst.preferences, inst.margin)
    a, b = solve(inst, "closed-form"), solve(shifted, "closed-form")
    # r/beta up to 1e5 for beta = 1e-3: log-space rounding ~ 1e-16 * 1e5 in log pi
    np.testing.assert_allclose(a.pi_star, b.pi_star, atol=1e-9)
    np.testing.assert_allclose(a.pi, b.pi, atol=1e-9)
    assert abs(a.multipliers[0] - b.multipliers[0]) <= 1e-9 * (1 + abs(shift) + a.multipliers[0])


@given(inst=dag_instances(), shift=st.floats(-20.0, 20.0))
def test_reward_shift_invariance_multi_pair_cvxpy(inst, shift):
    shifted = BanditInstance(inst.pi_ref, inst.reward + shift, inst.beta, inst.preferences, inst.margin)
    np.testing.assert_allclose(solve(inst, "cvxpy").pi, solve(shifted, "cvxpy").pi, atol=2 * TOL_CLARABEL)


@given(inst=pair_instances(min_log_p=-6.0), data=st.data())
def test_permutation_permutes_the_answer(inst, data):
    perm = np.array(data.draw(st.permutations(range(inst.K))))  # new index j holds old response perm[j]
    inv = np.argsort(perm)
    (w, l), = inst.preferences
    permuted = BanditInstance(inst.pi_ref[perm], inst.reward[perm], inst.beta, [(int(inv[w]), int(inv[l]))],
                              inst.margin)
    a, b = solve(inst, "closed-form"), solve(permuted, "closed-form")
    np.testing.assert_allclose(b.pi, a.pi[perm], atol=1e-14)
    np.testing.assert_allclose(b.pi_star, a.pi_star[perm], atol=1e-14)
    assert b.multipliers[0] == pytest.approx(a.multipliers[0], rel=1e-12, abs=1e-300)


@given(inst=dag_instances(), data=st.data())
def test_permutation_multi_pair_cvxpy(inst, data):
    perm = np.array(data.draw(st.permutations(range(inst.K))))
    inv = np.argsort(perm)
    prefs = [(int(inv[w]), int(inv[l])) for w, l in inst.preferences]
    permuted = BanditInstance(inst.pi_ref[perm], inst.reward[perm], inst.beta, prefs, inst.margin)
    a, b = solve(inst, "cvxpy"), solve(permuted, "cvxpy")
    np.testing.assert_allclose(b.pi, a.pi[perm], atol=2 * TOL_CLARABEL)


# ---------------------------------------------------------------------------------------------
# cycles
# ---------------------------------------------------------------------------------------------

@given(k=st.integers(2, 6), data=st.data(), margin=st.floats(1e-3, 3.0))
def test_cycle_with_positive_margin_raises_naming_the_cycle(k, data, margin):
    nodes = data.draw(st.permutations(range(k)))
    length = data.draw(st.integers(2, k))
    cyc = list(nodes[:length])
    prefs = [(cyc[i], cyc[(i + 1) % length]) for i in range(length)]
    extra = data.draw(st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)).filter(lambda e: e[0] != e[1]),
                               max_size=3))
    for e in extra:
        if e not in prefs:
            prefs.append(e)
    inst = BanditInstance(np.full(k, 1 / k), np.zeros(k), 1.0, prefs, margin)
    for method in ("cvxpy", "dual", "auto"):
        with pytest.raises(InfeasiblePreferencesError) as err:
            solve(inst, method)
        found = err.value.cycle
        assert found[0] == found[-1] and len(found) >= 3
        assert all((found[i], found[i + 1]) in prefs for i in range(len(found) - 1))
        assert " > ".join(map(str, found)) in str(err.value)
        assert isinstance(err.value, ValueError)


def test_cycle_with_zero_margin_forces_ties():
    rng = np.random.default_rng(3)
    prefs = [(0, 1), (1, 2), (2, 0)]
    for _ in range(5):
        inst = BanditInstance(rng.dirichlet(np.ones(5)), rng.normal(scale=2, size=5), 0.5, prefs, 0.0)
        du, cl, sc = solve(inst, "dual"), solve(inst, "cvxpy", "CLARABEL"), solve(inst, "cvxpy", "SCS")
        assert np.ptp(du.pi[:3]) <= 1e-9
        assert np.ptp(cl.pi[:3]) <= TOL_CLARABEL and np.ptp(sc.pi[:3]) <= TOL_SCS
        np.testing.assert_allclose(cl.pi, du.pi, atol=TOL_CLARABEL)
        # the untouched responses keep the Gibbs ratios
        assert du.pi[3] / du.pi[4] == pytest.approx(du.pi_star[3] / du.pi_star[4], rel=1e-9)


def test_find_cycle_cases():
    assert find_cycle([(0, 1), (1, 2), (0, 2)], 3) is None
    assert find_cycle([], 3) is None
    assert find_cycle([(0, 1), (1, 0)], 2) in ([0, 1, 0], [1, 0, 1])
    cyc = find_cycle([(4, 0), (0, 1), (1, 2), (2, 3), (3, 1)], 5)
    assert cyc[0] == cyc[-1] and set(cyc) == {1, 2, 3}


# ---------------------------------------------------------------------------------------------
# extreme beta, near-zero probabilities
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("beta", [1e-3, 1e3])
@given(inst=pair_instances(min_log_p=-30.0, log_beta=(0.0, 0.0)))
def test_extreme_beta_and_tiny_probabilities(beta, inst):
    inst = BanditInstance(inst.pi_ref, inst.reward, beta, inst.preferences, inst.margin)
    cf = solve(inst, "closed-form")
    assert np.all(np.isfinite(cf.pi)) and abs(cf.pi.sum() - 1) < 1e-12
    assert math.isfinite(cf.price_of_alignment) and cf.price_of_alignment >= 0
    assert np.isfinite(cf.delta_c[0]) and cf.delta_c[0] >= inst.margin - 1e-9 * max(1.0, abs(cf.delta_star[0]))
    du = solve(inst, "dual")
    np.testing.assert_allclose(cf.pi, du.pi, atol=TOL_DUAL)
    cl = solve(inst, "cvxpy")
    np.testing.assert_allclose(cf.pi, cl.pi, atol=TOL_CLARABEL)


def test_tiny_beta_planted_answer():
    """beta = 1e-3, pi* puts mass ~1 on the loser; the constraint moves it: K = 2 gives pi_c(w) = e^m/(1+e^m)."""
    m = 0.7
    inst = BanditInstance([0.5, 0.5], [0.0, 1.0], 1e-3, [(0, 1)], m)
    cf = solve(inst, "closed-form")
    assert cf.pi_star[0] < 1e-300 or cf.pi_star[0] == 0.0
    assert cf.pi[0] == pytest.approx(math.exp(m) / (1 + math.exp(m)), rel=1e-12)
    assert cf.delta_c[0] == pytest.approx(m, abs=1e-12)
    # price = J(pi*) - J(pi_c) = beta log Z - [pi_c(l) * 1 - beta KL(pi_c || uniform)], beta log Z = 1 + beta log(1/2)
    pc = cf.pi
    expected = (1.0 + 1e-3 * math.log(0.5)) - (pc[1] - 1e-3 * float(np.sum(pc * np.log(pc / 0.5))))
    assert cf.price_of_alignment == pytest.approx(expected, rel=1e-10)
    assert cf.price_of_alignment == pytest.approx(price_by_objectives(inst, cf.pi), rel=1e-10)
    np.testing.assert_allclose(solve(inst, "cvxpy").pi, cf.pi, atol=TOL_CLARABEL)


# ---------------------------------------------------------------------------------------------
# the compiled problem
# ---------------------------------------------------------------------------------------------

def test_compiled_problem_is_dpp_and_reused():
    prob = compiled_problem(4, [(0, 1), (1, 2)])
    assert prob is compiled_problem(4, [(0, 1), (1, 2)])
    assert prob.problem.is_dcp(dpp=True)
    rng = np.random.default_rng(0)
    for _ in range(3):
        inst = BanditInstance(rng.dirichlet(np.ones(4)), rng.normal(size=4), float(rng.uniform(0.1, 2)),
                              [(0, 1), (1, 2)], float(rng.uniform(0, 1)))
        np.testing.assert_allclose(prob.solve(inst).pi, solve(inst, "dual").pi, atol=TOL_CLARABEL)
    other = BanditInstance(np.full(4, 0.25), np.zeros(4), 1.0, [(0, 1)], 0.0)
    with pytest.raises(ValueError, match="differ from the compiled"):
        prob.solve(other)
    with pytest.raises(ValueError, match="solver"):
        prob.solve(inst, solver="ECOS")
    with pytest.raises(ValueError, match="^K"):
        ConstrainedRLHF(1, [])
    with pytest.raises(ValueError, match="method"):
        solve(inst, method="newton")


def test_no_preferences_returns_the_gibbs_policy():
    inst = BanditInstance([0.2, 0.3, 0.5], [1.0, 0.0, -1.0], 0.7, [], 0.0)
    for method in ("cvxpy", "dual"):
        sol = solve(inst, method)
        np.testing.assert_allclose(sol.pi, sol.pi_star, atol=TOL_CLARABEL)
        assert sol.multipliers.size == 0 and abs(sol.price_of_alignment) <= 1e-8
    with pytest.raises(ValueError, match="exactly one pair"):
        solve(inst, "closed-form")
