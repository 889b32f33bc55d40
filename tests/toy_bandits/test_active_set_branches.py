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
