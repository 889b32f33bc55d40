"""The active-set LCP of toy_bandits.constrained on a binding set whose system is singular and consistent but has
no nonnegative solution (the branch of _pair_to_drop after the left-null-space test; no solver test reached it)."""

import numpy as np
import pytest

import toy_bandits.constrained as C


def _lcp(prefs, k, margin, log_star):
    w = np.array([p[0] for p in prefs])
    l = np.array([p[1] for p in prefs])
    a = C.constraint_matrix(prefs, k, margin)
    return log_star[w] - log_star[l], a[:, w].T - a[:, l].T


@pytest.mark.parametrize("prefs, margin, log_star", [
    # an undirected 4-cycle 3 > 0 < 1 > 4 < 3 (D_SS singular), all pairs binding at the start; pi* violates 3 of 4
    ([(3, 0), (3, 4), (1, 0), (1, 4)], 0.5, [-1.113, -2.095, -5.362, -0.945, -1.863]),
    # a 6-pair set with two singular cycles, pi* satisfying every pair (nu = 0 from a singular start)
    ([(3, 0), (3, 4), (1, 0), (1, 4), (2, 0), (2, 4)], 0.5, [-3.211, -0.974, -1.408, -1.548, -2.08]),
])
def test_singular_consistent_binding_set_reaches_the_lcp_solution(monkeypatch, prefs, margin, log_star):
    log_star = np.array(log_star) - np.logaddexp.reduce(log_star)
    d_star, d_mat = _lcp(prefs, 5, margin, log_star)
    branch = []
    orig = C._pair_to_drop

    def spy(sub, rhs, resid, tol):
        u, sv, _ = np.linalg.svd(sub)
        null = u[:, sv <= sv[0] * sub.shape[0] * np.finfo(float).eps]
        consistent = np.max(np.abs(null @ (null.T @ rhs))) <= tol
        x_ls = np.linalg.lstsq(sub, rhs, rcond=None)[0]
        branch.append(bool(consistent and np.any(x_ls < 0)))
        return orig(sub, rhs, resid, tol)

    monkeypatch.setattr(C, "_pair_to_drop", spy)
    nu = C._active_set_lcp(d_star, d_mat, margin, np.ones(len(prefs), dtype=bool))
    assert any(branch), "the instance no longer reaches the branch under test"
    assert nu is not None
    delta = d_star + d_mat @ nu
    assert np.all(nu >= 0)
    assert np.all(delta >= margin - 1e-9)
    assert np.max(np.abs(nu * (delta - margin))) < 1e-9
    if np.all(d_star >= margin):  # pi* satisfies every pair: no multiplier
        assert np.all(nu == 0)
    else:
        assert np.any(np.abs(delta - margin) < 1e-9)


def test_singular_consistent_binding_set_is_accepted_in_one_solve(monkeypatch):
    """A zero-margin complete graph on K = 8 responses (both orders of every pair: 56 pairs). Each pair and its
    reverse must both hold with margin 0, so every delta is 0: all responses tie and pi_c is uniform (by hand,
    whatever pi*). D_SS on the all-binding start (what L-BFGS-B guesses here) has rank K - 1 = 7 and the system is
    consistent, so NNLS solves it with zero residual and _solve_binding accepts it: one binding solve. A residual
    taken as -rhs instead of D_SS nu - rhs rejected every singular set; the answer (pi) stayed the same, reached by
    dropping one redundant pair per solve (56 solves here; solve_dual on K = 16, 240 pairs: 217 solves and 33 s
    against 1 solve and 0.06 s) (a survivor of mutation)."""
    k = 8
    prefs = [(i, j) for i in range(k) for j in range(k) if i != j]
    log_star = np.random.default_rng(3).normal(scale=2.0, size=k)
    log_star = log_star - np.logaddexp.reduce(log_star)
    d_star, d_mat = _lcp(prefs, k, 0.0, log_star)
    calls, real = [0], C._solve_binding

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(C, "_solve_binding", counting)
    nu = C._active_set_lcp(d_star, d_mat, 0.0, np.ones(len(prefs), dtype=bool))
    assert nu is not None and np.all(nu >= 0)
    delta = d_star + d_mat @ nu
    assert np.max(np.abs(delta)) < 1e-9
    logits = log_star + C.constraint_matrix(prefs, k, 0.0).T @ nu
    np.testing.assert_allclose(logits - np.logaddexp.reduce(logits), np.full(k, -np.log(k)), rtol=0, atol=1e-9)
    assert calls[0] == 1


def test_tie_forcing_complete_graph_settles_at_large_log_odds():
    """Pins the scale of _active_set_lcp's tolerance, 1e-12 x max(1, m, max |delta*|) (a survivor of mutation:
    constrained.py:680 max |delta*| -> min |delta*| survived). The zero-margin complete graph on K = 8 responses
    forces every delta to 0, so pi_c is uniform whatever pi* (by hand). With log pi* of size ~2e4 (normal scale 2e4,
    seeds 0..3) NNLS leaves a residual ~1e-11 on the consistent singular all-binding set (rounding of numbers ~4e4),
    inside 1e-12 x 4e4 = 4e-8 but not inside 1e-12 x min |delta*| (~1e-12..1e-8): the min-scaled tolerance rejects the
    set, drops pairs until the sets repeat and returns None (measured: 8 of 8 starts), so solve_dual reports "did not
    settle" and the CVXPY polish falls back to its raw answer."""
    k = 8
    prefs = [(i, j) for i in range(k) for j in range(k) if i != j]
    for seed in range(4):
        log_star = np.random.default_rng(seed).normal(scale=2.0, size=k) * 1e4
        log_star = log_star - np.logaddexp.reduce(log_star)
        d_star, d_mat = _lcp(prefs, k, 0.0, log_star)
        for start in (np.ones(len(prefs), dtype=bool), np.zeros(len(prefs), dtype=bool)):
            nu = C._active_set_lcp(d_star, d_mat, 0.0, start)
            assert nu is not None, f"seed {seed}: the LCP did not settle"
            assert np.all(nu >= 0)
            delta = d_star + d_mat @ nu
            assert np.max(np.abs(delta)) < 1e-6 * np.max(np.abs(d_star))  # every delta 0 (rounding of ~4e4 numbers)
            logits = log_star + C.constraint_matrix(prefs, k, 0.0).T @ nu
            np.testing.assert_allclose(logits - np.logaddexp.reduce(logits), np.full(k, -np.log(k)), rtol=0, atol=1e-6)
