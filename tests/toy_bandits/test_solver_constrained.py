"""Constrained RLHF solvers (toy_bandits.constrained): closed form vs CVXPY (CLARABEL, SCS) vs the dual,
KKT and complementary slackness, invariances, cycles, extreme beta and near-zero probabilities.

Tolerances (absolute, on probabilities): CLARABEL 1e-5, SCS 1e-3 (CVXPY's error in pi is of the order of
sqrt(its gap tolerance); see toy_bandits.constrained), dual vs closed form 1e-8 (both log space).
``solve(inst, "cvxpy")`` returns the polished answer (exact, from the solver's active set); the single-pair
tests also compare the solver's own answer, ``.raw``, as an independent method.
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
# found by Hypothesis (thorough): CLARABEL's own pi is off by 1.02e-5 here (also before fresh solves; it reports
# "optimal_inaccurate"), so the raw pi is not held to TOL_CLARABEL; its price and multiplier are
@example(inst=BanditInstance([4.9955582500234863e-01, 8.8834983776668391e-04, 4.9955582500234868e-11,
                              1.0258503887547694e-10, 4.9955582500234862e-12, 4.9955582500234863e-01],
                             [0.0, 4.625, 1.2890625, 2.265625, 0.0, 0.0], 1.0, [(1, 3)], 0.0))
def test_closed_form_agrees_with_clarabel(inst):
    cf, polished = solve(inst, "closed-form"), solve(inst, "cvxpy", "CLARABEL")
    cl = polished.raw  # CLARABEL's own answer
    assert cl is not None and cl.status == polished.status
    assert np.max(np.abs(cf.pi - polished.pi)) <= TOL_DUAL
    assert abs(cf.price_of_alignment - polished.price_of_alignment) <= TOL_DUAL * (inst.beta + cf.price_of_alignment)
    assert abs(cf.multipliers[0] - polished.multipliers[0]) <= 1e-6 * (inst.beta + cf.multipliers[0])
    assert abs(cf.price_of_alignment - cl.price_of_alignment) <= TOL_CLARABEL * (inst.beta + cf.price_of_alignment)
    if min(cf.pi[inst.winners[0]], cf.pi[inst.losers[0]]) >= 1e-2:  # mu identifiable at solver accuracy
        assert abs(cf.multipliers[0] - cl.multipliers[0]) <= 1e-2 * (inst.beta + cf.multipliers[0])


@given(inst=pair_instances(log_beta=(-2.0, 2.0)))
def test_closed_form_agrees_with_scs(inst):
    cf, polished = solve(inst, "closed-form"), solve(inst, "cvxpy", "SCS")
    sc = polished.raw  # SCS's own answer
    assert sc is not None and sc.status in ("optimal", "optimal_inaccurate")
    assert np.max(np.abs(cf.pi - polished.pi)) <= TOL_DUAL
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
# a denormal reward difference: delta* = dr / beta = -5e-324 gives m - delta* > 0 but mu = 0 (underflow); delta* is
# now computed as delta_ref + dr / beta (exact signs, issue 11), so the inactive branch allows that one denormal
@example(inst=BanditInstance(np.full(3, 1 / 3), [0.0, -5e-324, 0.0], 1.0, [(1, 0)], 0.0))
def test_closed_form_kkt_in_log_space(inst):
    batch = PairBatch.from_instances([inst])
    sol = closed_form_pairs(batch)
    mu, d_c, m = sol.mu[0], sol.delta_c[0], inst.margin
    assert mu >= 0
    assert d_c >= m - 1e-9 * max(1.0, abs(m))  # primal feasibility (log form)
    if mu > 0:  # complementary slackness: the constraint binds
        assert abs(d_c - m) <= 1e-9 * max(1.0, abs(sol.delta_star[0]))
    else:  # inactive: pi_c = pi*
        assert sol.delta_star[0] >= m - 1e-300
        np.testing.assert_array_equal(sol.pi_c[0], np.exp(sol.log_pi_star[0]))
    res = kkt_residuals(inst, sol.pi_c[0], sol.mu)
    assert max(res.values()) <= 1e-9


@given(inst=dag_instances())
# found by Hypothesis: pi*(y_w) ~ e^-200, the L-BFGS-B dual stalled at delta_c = -81 (gradient underflow);
# fixed by the exact log-space active-set step in solve_dual
@example(inst=BanditInstance([0.2] * 5, [-2.0, 0.0, 0.0, 0.0, 0.0], 0.01, [(0, 1)], 0.0))
# found by Hypothesis (thorough): the pairs close the undirected cycle 3-0-1-4-3, so with all five binding the
# active-set system is singular; the step gave up and returned L-BFGS-B's nu (delta_c = -1.06e-7 < m = 0).
# Fixed by solving a singular binding system by NNLS (exact_active_set)
@example(inst=BanditInstance([0.2403846251969349, 0.2403846251969349, 0.23609902146143194, 0.0427471029477633,
                              0.2403846251969349], [2.0, -2.734375, 0.0, -0.1875, 0.0], 2.403584390890555,
                             ((3, 0), (3, 4), (1, 2), (1, 0), (1, 4)), 0.0))
# found by a random search: triangle 2 > 4 > 0 plus 2 > 0 with m > 0, beta = 0.014; L-BFGS-B stalls, the binding
# system of all three is inconsistent and the old step cycled, returning delta_c = -213 (kkt primal 7e-9 only)
@example(inst=BanditInstance([0.63209219, 0.01839393, 0.22954151, 0.10724122, 0.01273114],
                             [0.75, 0.25, -2.25, 3.0, 2.75], 0.014122055635220352, ((2, 0), (2, 4), (4, 0)),
                             1.0635679024542322))
def test_multi_pair_cvxpy_agrees_with_dual_and_kkt(inst):
    du, cl = solve(inst, "dual"), solve(inst, "cvxpy", "CLARABEL")
    assert du.status == "optimal"  # the exact active-set step settled
    assert cl.raw is not None  # ... also from CLARABEL's active set
    assert np.max(np.abs(du.pi - cl.pi)) <= TOL_DUAL  # two exact answers, from two starting active sets
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


@st.composite
def permuted_pair_instances(draw):
    """(a one-pair instance with pi_ref entries down to 1e-6, a permutation of its responses)."""
    inst = draw(pair_instances(min_log_p=-6.0))
    return inst, draw(st.permutations(range(inst.K)))


@given(case=permuted_pair_instances())
# found by Hypothesis (thorough): delta* = -2.3e-5, so mu ∝ m - delta* is a small difference, and the renormalised
# pi_ref (summed in response order) and pi*'s normaliser rounded differently after the permutation: mu moved by
# 1e-11 relative. Fixed by an order-free renormalisation, and delta* from the unnormalised logits in the closed form
@example(case=(BanditInstance([2.5000026604671444e-01, 4.6922157273295438e-06, 2.4999450964412928e-01,
                               2.5000026604671444e-01, 2.5000026604671444e-01], [0.0] * 5, 1.0, [(2, 0)], 0.0),
               [0, 1, 3, 2, 4]))
def test_permutation_permutes_the_answer(case):
    inst, perm = case
    perm = np.array(perm)  # new index j holds old response perm[j]
    inv = np.argsort(perm)
    (w, l), = inst.preferences
    permuted = BanditInstance(inst.pi_ref[perm], inst.reward[perm], inst.beta, [(int(inv[w]), int(inv[l]))],
                              inst.margin)
    a, b = solve(inst, "closed-form"), solve(permuted, "closed-form")
    np.testing.assert_allclose(b.pi, a.pi[perm], atol=1e-14)
    np.testing.assert_allclose(b.pi_star, a.pi_star[perm], atol=1e-14)
    assert b.multipliers[0] == pytest.approx(a.multipliers[0], rel=1e-12, abs=1e-300)


@given(inst=dag_instances(), perm=st.permutations(range(5)))
# found by Hypothesis (thorough), flaky: CLARABEL's raw answer was off by 2.5e-5 on a first solve and 6e-10 on
# later ones (warm start reused the solver and its equilibration). Fixed by fresh solves and the polish
@example(inst=BanditInstance([0.34666420943031273, 0.007075174992659388, 0.028059376725731645, 0.5620011262284512,
                              0.056200112622845126],
                             [-1.1990267565706947e-194, -1.6551917563976470, -4.6778266898795806e-01,
                              1.7789168068374179e-155, 1.0000000000000001e-09],
                             0.04899103150419676, ((2, 4), (1, 4), (3, 4), (3, 1)), 2.0),
         perm=[2, 3, 4, 1, 0])
def test_permutation_multi_pair_cvxpy(inst, perm):
    assert inst.K == len(perm)
    perm = np.array(perm)
    inv = np.argsort(perm)
    prefs = [(int(inv[w]), int(inv[l])) for w, l in inst.preferences]
    permuted = BanditInstance(inst.pi_ref[perm], inst.reward[perm], inst.beta, prefs, inst.margin)
    a, b = solve(inst, "cvxpy"), solve(permuted, "cvxpy")
    np.testing.assert_allclose(b.pi, a.pi[perm], atol=2 * TOL_CLARABEL)


@pytest.mark.parametrize("solver", ["CLARABEL", "SCS"])
def test_cvxpy_repeated_solves_are_identical(solver):
    """The same instance gives the same bits however often, and whatever the compiled problem solved before
    (CVXPY's default warm start made CLARABEL's answer move by 2.5e-5 between the first and later solves)."""
    prefs = ((2, 4), (1, 4), (3, 4), (3, 1))
    inst = BanditInstance([0.34666420943031273, 0.007075174992659388, 0.028059376725731645, 0.5620011262284512,
                           0.056200112622845126], [0.0, -1.6551917563976470, -0.46778266898795806, 0.0, 1e-9],
                          0.04899103150419676, prefs, 2.0)
    other = BanditInstance(np.full(5, 0.2), [3.0, -1.0, 0.5, -2.0, 1.0], 0.3, prefs, 0.5)
    prob = ConstrainedRLHF(5, prefs)
    first = prob.solve(inst, solver)
    for _ in range(2):
        prob.solve(other, solver)
        again = prob.solve(inst, solver)
        np.testing.assert_array_equal(again.raw.pi, first.raw.pi)
        np.testing.assert_array_equal(again.pi, first.pi)
        assert again.raw.status == first.raw.status
    np.testing.assert_array_equal(solve(inst, "cvxpy", solver).pi, first.pi)  # the cached compiled problem
    np.testing.assert_array_equal(prob.solve(inst, solver, polish=False).pi, first.raw.pi)


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


def test_resolution_limit_is_inclusive_at_1e8():
    """Gap fec3bd6fad (constrained.py:335, `worst <= LOG_RESOLUTION` -> `<`): the README says solve refuses
    |log pi*| beyond 1e8, so exactly 1e8 is solved. pi_ref [.5, .5], r [-1e8, 0], beta 1, pair (0, 1), m 1:
    log pi*(0) = -1e8 - log(1 + e^-1e8) = -1e8 and delta* = -1e8, exactly at the limit. By hand (docs/theory.md
    §9a, one active pair, constraint pi(w) - e^m pi(l) >= 0): pi_c ∝ pi* exp(nu (e_w - e^m e_l)), so
    delta_c = delta* + nu (1 + e^m) = m gives mu = beta nu = (m - delta*) / (1 + e) = (1 + 1e8) / (1 + e)."""
    from toy_bandits.constrained import UnresolvedInstanceError

    inst = BanditInstance(np.array([0.5, 0.5]), np.array([-1e8, 0.0]), 1.0, ((0, 1),), 1.0)
    sol = solve(inst)
    assert sol.status == "optimal"
    assert sol.delta_c[0] == pytest.approx(1.0, abs=1e-7)
    assert sol.multipliers[0] == pytest.approx((1.0 + 1e8) / (1.0 + math.e), rel=1e-7)  # 2.6894e7
    # one ulp of 1e8 is 1.5e-8 (constrained.py, LOG_RESOLUTION): delta_c keeps ~8 digits, pi = sigma(delta_c) 1e-8
    assert sol.pi == pytest.approx([math.e / (1.0 + math.e), 1.0 / (1.0 + math.e)], abs=1e-8)
    beyond = BanditInstance(np.array([0.5, 0.5]), np.array([-np.nextafter(1e8, np.inf), 0.0]), 1.0, ((0, 1),), 1.0)
    with pytest.raises(UnresolvedInstanceError) as err:
        solve(beyond)
    assert "\n" not in str(err.value) and "beyond 1e+08" in str(err.value)


def test_resolution_limit_reads_the_reward_difference_not_the_reward_size():
    """Pins resolution_problem's delta* = delta_ref + (r_w - r_l) / beta (a survivor of mutation:
    constrained.py:332 `r[w] - r[l]` -> `r[w] + r[l]` survived; it refuses solvable instances with a large common
    reward). A reward shift changes neither pi* nor pi_c, so an instance whose pair has equal rewards r with
    r / beta = 1e8 or 5e8 (shift of a tiny problem) must be solved, not refused as "beyond 1e+08". By hand
    (two responses, dr = 0, so pi* = pi_ref and delta* = delta_ref):
    - pi_ref [.5, .5], r [1e4, 1e4], beta 1e-4, m 0: delta_ref = 0 >= m, inactive: pi_c = [.5, .5], mu = 0;
    - pi_ref [.3, .7], r [5, 5], beta 1e-8, m 1: delta_ref = log(3/7) < 1, active: delta_c = 1,
      pi_c = [e / (1 + e), 1 / (1 + e)], and mu = beta (m - delta_ref) / (1 + e^m) (docs/theory.md §9a);
    - the chain 0 > 1 > 2 with pi_ref [.2, .3, .5], every r = 1e4, beta 1e-4, m 0: pi* = pi_ref violates both
      orderings, and the KL projection onto pi_0 >= pi_1 >= pi_2 pools all three: pi_c = [1/3, 1/3, 1/3]."""
    a = BanditInstance(np.array([0.5, 0.5]), np.array([1e4, 1e4]), 1e-4, ((0, 1),), 0.0)
    sol = solve(a)
    assert sol.status == "optimal"
    assert sol.pi == pytest.approx([0.5, 0.5], abs=1e-12) and sol.multipliers[0] == pytest.approx(0.0, abs=1e-12)
    b = BanditInstance(np.array([0.3, 0.7]), np.array([5.0, 5.0]), 1e-8, ((0, 1),), 1.0)
    sol = solve(b)
    assert sol.status == "optimal"
    assert sol.delta_c[0] == pytest.approx(1.0, abs=1e-9)
    assert sol.pi == pytest.approx([math.e / (1 + math.e), 1 / (1 + math.e)], abs=1e-9)
    assert sol.multipliers[0] == pytest.approx(1e-8 * (1.0 - math.log(3 / 7)) / (1 + math.e), rel=1e-7)
    c = BanditInstance(np.array([0.2, 0.3, 0.5]), np.full(3, 1e4), 1e-4, ((0, 1), (1, 2)), 0.0)
    sol = solve(c, method="dual")
    assert sol.pi == pytest.approx([1 / 3, 1 / 3, 1 / 3], abs=1e-8)


def test_dual_starts_its_exact_step_from_the_l_bfgs_b_guess(monkeypatch):
    """A 49-pair chain against the reward (y_k over y_k+1, r increasing): every constraint binds. L-BFGS-B's guess
    {nu > 0} is the whole set, so the exact step settles in one binding solve. A guess thrown away (res.x > 0 ->
    res.x < 0 survived mutation: the same answer, 50 binding solves here, 83 s against 4.9 s on a 399-pair chain)
    starts the exact step from nothing, adding one pair per solve."""
    import toy_bandits.constrained as C

    calls, real = [0], C._solve_binding

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(C, "_solve_binding", counting)
    k = 50
    inst = BanditInstance(pi_ref=np.full(k, 1 / k), reward=np.linspace(0.0, 5.0, k), beta=1.0,
                          preferences=tuple((i, i + 1) for i in range(k - 1)), margin=0.5)
    sol = C.solve_dual(inst)
    assert sol.status == "optimal" and np.all(sol.multipliers > 0)
    np.testing.assert_allclose(sol.delta_c, 0.5, rtol=0, atol=1e-12)
    assert calls[0] <= 2


def test_resolution_limit_reads_delta_star_with_the_reference_log_odds_added():
    """Pins the sign of dr in resolution_problem's delta* = delta_ref + (r_w - r_l) / beta (a survivor of mutation:
    constrained.py:332 `r[w] - r[l]` -> `r[l] - r[w]` survived; with pi_ref uniform on the pair, delta_ref = 0 and
    |delta*| is the same either way). pi_ref = [1, e^-700] (delta_ref = 700), r = [-(1e8 - 500), 0], beta 1, pair
    (0, 1), m 1. By hand: delta* = 700 - 1e8 + 500 = -(1e8 - 1200), and log pi*(0) = -(1e8 - 1200) to rounding,
    log pi*(1) = 0: every number within 1e8, so the instance is solved. The swapped form gives
    |700 + 1e8 - 500| = 1e8 + 200 and refuses it. The solution by hand (one active pair): delta_c = m = 1 and
    mu = (m - delta*) / (1 + e^m) = (1 + 1e8 - 1200) / (1 + e)."""
    inst = BanditInstance(np.array([1.0, math.exp(-700.0)]), np.array([-(1e8 - 500.0), 0.0]), 1.0, ((0, 1),), 1.0)
    from toy_bandits.constrained import resolution_problem

    assert resolution_problem(inst) is None
    sol = solve(inst)
    assert sol.status == "optimal"
    assert sol.delta_c[0] == pytest.approx(1.0, abs=1e-6)
    assert sol.multipliers[0] == pytest.approx((1.0 + 1e8 - 1200.0) / (1.0 + math.e), rel=1e-7)
    # the mirror (dr > 0, delta_ref = -700): delta* = 1e8 - 1200, also solved
    mirror = BanditInstance(np.array([math.exp(-700.0), 1.0]), np.array([1e8 - 500.0, 0.0]), 1.0, ((1, 0),), 1.0)
    assert resolution_problem(mirror) is None


@pytest.mark.parametrize("shift, expected", [((-0.05, 0.05, 0.0), 0.05), ((0.03, 0.0, -0.03), 0.03)])
def test_stationarity_residual_is_the_largest_gap_to_the_implied_policy(shift, expected):
    """kkt_residuals' stationarity is max_y |pi(y) - pi_mu(y)| (its docstring), not a smaller entry.

    K = 3, pi_ref (0.2, 0.5, 0.3), r (0, 0.3, -0.2), beta 1, y_1 over y_0 with margin 0.1. With mu = 0 the implied
    policy is pi* = pi_ref e^r / Z, computed here by hand (delta* = log 2.5 + 0.3 = 1.216 >= 0.1: the constraint
    is slack). pi = pi* moved by ``shift`` on two responses, one response untouched: still feasible (primal 0, dual
    0, slackness 0), so only stationarity tells it is not the optimum, and it must read the shift, 0.05 or 0.03
    (within 1e-12). A min over responses read 0 at the untouched one (0.0 < KKT_TOL 1e-9: a wrong policy
    certified optimal); for K = 2 the two gaps are equal, so only K >= 3 sees it (a survivor of mutation)."""
    pi_ref, reward = np.array([0.2, 0.5, 0.3]), np.array([0.0, 0.3, -0.2])
    inst = BanditInstance(pi_ref=pi_ref, reward=reward, beta=1.0, preferences=((1, 0),), margin=0.1)
    w = np.array([0.2, 0.5 * math.exp(0.3), 0.3 * math.exp(-0.2)])
    pi = w / w.sum() + np.array(shift)
    assert math.log(pi[1] / pi[0]) > 0.1  # still feasible
    res = kkt_residuals(inst, pi, np.zeros(1))
    assert res["primal"] <= 1e-15 and res["dual"] == 0.0 and res["slackness"] == 0.0
    assert abs(res["stationarity"] - expected) < 1e-12


@pytest.mark.parametrize("method", ["closed-form", "dual", "cvxpy"])
@pytest.mark.parametrize("pi_ref, reward, beta, holds, in_u", [
    ([0.1, 0.9], [1.0, 0.0], 0.5, False, True),  # delta_ref = log(1/9) = -2.197, delta* = -2.197 + 2 = -0.197
    ([0.2, 0.5, 0.3], [0.3, 0.0, 0.1], 0.2, True, False),  # delta_ref = log 0.4 = -0.916, delta* = 0.584
    ([0.2, 0.5, 0.3], [0.0, 0.5, 0.1], 2.0, False, False),  # delta_ref = -0.916, delta* = -1.166 < delta_ref
    ([0.5, 0.2, 0.3], [0.0, 4.0, 0.0], 1.0, False, False),  # delta_ref = 0.916, delta* = -3.084
])
def test_solution_fields_say_whether_pi_star_is_in_u(method, pi_ref, reward, beta, holds, in_u):
    """ConstrainedSolution.assumption_holds (delta* > 0) and in_U (delta_ref < delta* < 0) as documented, from
    every solver (they share _solution_from_policy; the CLI recomputes its own and does not read these fields).
    Pair y_0 over y_1, delta_ref = log pi_ref(0)/pi_ref(1), delta* = delta_ref + (r_0 - r_1)/beta, both by hand.
    assumption_and_u called with delta_ref and dr swapped gave wrong flags on three of the four instances, e.g. in_U
    False for the first, where -2.197 < -0.197 < 0 (a survivor of mutation)."""
    inst = BanditInstance(pi_ref=np.array(pi_ref), reward=np.array(reward), beta=beta, preferences=((0, 1),),
                          margin=0.0)
    d_ref = math.log(pi_ref[0] / pi_ref[1])
    d_star = d_ref + (reward[0] - reward[1]) / beta
    assert (d_star > 0) is holds and (d_ref < d_star < 0) is in_u  # the table's flags are the definitions
    sol = solve(inst, method)
    assert sol.assumption_holds.tolist() == [holds] and sol.in_U.tolist() == [in_u]
    assert abs(sol.delta_star[0] - d_star) < 1e-12


def test_closed_form_pairs_in_u_is_delta_ref_below_delta_star_below_zero():
    """``closed_form_pairs(...).in_U`` (documented: delta_ref < delta* < 0, docs §6), by hand on four pairs with
    beta = 1, winner 0, loser 1, delta* = delta_ref + dr:
    pi_ref (0.2, 0.8): delta_ref = log 0.25 = -1.386; dr = 1 -> delta* = -0.386, in U; dr = -1 -> -2.386, not in U
    (below delta_ref); dr = 2 -> 0.614, not in U. pi_ref (0.8, 0.2), dr = -1: delta* = 1.386 - 1 = 0.386, not in U.
    Nothing in the toolkit reads this field, so an in_U with the sign of dr flipped (a survivor of mutation) marked the
    dr = -1, delta* = -2.386 pair as in U unnoticed."""
    batch = PairBatch(np.array([[0.2, 0.8], [0.2, 0.8], [0.2, 0.8], [0.8, 0.2]]),
                      np.array([[1.0, 0.0], [-1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]]), 1.0,
                      np.zeros(4, dtype=np.int64), np.ones(4, dtype=np.int64), 0.0)
    sol = closed_form_pairs(batch)
    d_ref = math.log(0.25)
    np.testing.assert_allclose(sol.delta_star, [d_ref + 1, d_ref - 1, d_ref + 2, -d_ref - 1], atol=1e-12)
    assert sol.in_U.tolist() == [True, False, False, False]
    assert sol.assumption_holds.tolist() == [False, False, True, True]
