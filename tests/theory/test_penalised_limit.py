"""Eq. 10's unboundedness rests on J staying finite along pi = (1/2, eps, 1/2 - eps): penalised_facts checks the
limit's value, J at (1/2, 0, 1/2), not only that SymPy calls it finite (a wrong limit, the bare symbol eps, was
'finite' too)."""

import sympy as sp

from theory import derivations as D


def test_j_limit_fact_holds_and_is_the_boundary_value():
    facts = D.penalised_facts()
    assert facts["J_limit_finite_as_pi_l_to_0"] is True
    assert facts["F_limit_is_+inf_as_pi_l_to_0"] is True


def test_j_limit_fact_reads_the_value_not_only_finiteness():
    # the value the fact compares with, at a numeric point: r = (1, 0, 2), pi_ref = (0.2, 0.5, 0.3), beta = 0.7
    eps = sp.Symbol("eps", positive=True)
    path = {D.p[D.W]: sp.Rational(1, 2), D.p[D.L]: eps, D.p[D.O]: sp.Rational(1, 2) - eps}
    vals = {D.r[0]: 1, D.r[1]: 0, D.r[2]: 2, D.pref[0]: sp.Rational(1, 5), D.pref[1]: sp.Rational(1, 2),
            D.pref[2]: sp.Rational(3, 10), D.beta: sp.Rational(7, 10)}
    lim = sp.limit(D._J(D.p).subs(path).subs(vals), eps, 0, "+")
    expected = 1.5 - 0.7 * (0.5 * sp.log(sp.Rational(5, 2)) + 0.5 * sp.log(sp.Rational(5, 3)))
    assert abs(float(lim - expected)) < 1e-12
