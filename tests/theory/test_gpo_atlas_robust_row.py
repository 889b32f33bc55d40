"""The atlas row of loss_type='robust' (rDPO, eps = label_smoothing = 0.1, beta = 0.1): its f, time in U and exit
gradient against rDPO's formula written here by hand."""

import math

import mpmath
import pytest
import sympy as sp

from dpo_rlhf_checks.atlas_rows import ROWS
from theory import gpo_atlas as G

EPS = 0.1


def _sigma(x):
    return 1 / (1 + mpmath.exp(-x))


def _f_by_hand(t):
    """rDPO Eq. 3: ((1 - eps) softplus(-t) - eps softplus(t)) / (1 - 2 eps)."""
    return ((1 - EPS) * math.log1p(math.exp(-t)) - EPS * math.log1p(math.exp(t))) / (1 - 2 * EPS)


def _minus_fprime(t):
    """-f'(t) = ((1 - eps) sigma(-t) + eps sigma(t)) / (1 - 2 eps), by hand from :func:`_f_by_hand`."""
    return ((1 - EPS) * _sigma(-t) + EPS * _sigma(t)) / (1 - 2 * EPS)


def _robust_row():
    [setting] = [s for s in ROWS if s.loss == "robust"]
    assert setting.params == {"label_smoothing": EPS} and setting.beta == 0.1 and setting.f_div == "reverse_kl"
    return setting, G.symbolic_row(setting)


def test_robust_f_is_rdpo_eq3_with_its_normalisation():
    """f_expr('robust') at t in {-3, 0, 0.7, 4} equals rDPO Eq. 3 including the 1/(1 - 2 eps) = 1.25 factor (f(0) =
    log 2 (1 - 2 eps)/(1 - 2 eps) = log 2). Without the factor every value is 0.8 of this (a survivor of mutation:
    theory/gpo_atlas.py::f_expr::drop-term::5372f90d19): the population optimum does not move (a positive scale), so
    no claim noticed, but the atlas's time law and exit gradient did (tests below)."""
    f = G.f_expr("robust", {"label_smoothing": EPS}, 0.1)
    for x in (-3.0, 0.0, 0.7, 4.0):
        assert float(f.subs(G.t, sp.Float(x, 30))) == pytest.approx(_f_by_hand(x), rel=1e-12)
    assert float(f.subs(G.t, 0)) == pytest.approx(math.log(2), rel=1e-12)


@pytest.mark.parametrize("u0", [0.5, 3.0, 8.0])
def test_robust_atlas_time_in_u_is_the_quadrature_of_its_flow(u0):
    """The row's T(U0) = (1/(2 beta^2)) int_0^U0 dt / (-f'(t)) (summed h: d(beta h)/dt = -2 beta^2 f'), here by
    mpmath quadrature of -f' written by hand: at beta = 0.1, T(3) = 512.944... With f missing its 1/(1 - 2 eps) the
    row printed 1.25 x this (641.18 at U0 = 3; the atlas CLI's bandit comparison flags it, rel err 0.2, but exits 0
    and no test runs the robust row; a survivor of mutation: theory/gpo_atlas.py::f_expr::drop-term::5372f90d19)."""
    setting, row = _robust_row()
    assert row["class"] == "transient"
    b = setting.beta
    with mpmath.workdps(30):
        expected = float(mpmath.quad(lambda x: 1 / _minus_fprime(x), [0, u0]) / (2 * b * b))
    law = row["_time_law_expr"].subs({G.U0: sp.Float(u0, 30), G.beta: sp.Rational(1, 10)})
    assert float(law) == pytest.approx(expected, rel=1e-10)
    if u0 == 3.0:
        assert expected == pytest.approx(512.9443, rel=1e-6)


def test_robust_atlas_exit_gradient_factor():
    """The row's gradient factor at the exit, -f'(U0), printed as an expression in U0 ("... at the exit (t = U0),
    ..."), evaluated at U0 in {0, 2, 6}: ((1 - eps) sigma(-U0) + eps sigma(U0))/(1 - 2 eps), 0.625 at U0 = 0 (0.5 when
    f lacks its normalisation; a survivor of mutation: theory/gpo_atlas.py::f_expr::drop-term::5372f90d19)."""
    _, row = _robust_row()
    text = row["grad_factor"]
    assert " at the exit (t = U0)" in text
    expr = sp.sympify(text.split(" at the exit")[0], locals={"U0": G.U0})
    for u0 in (0.0, 2.0, 6.0):
        assert float(expr.subs(G.U0, u0)) == pytest.approx(float(_minus_fprime(u0)), rel=1e-12)
    assert float(expr.subs(G.U0, 0)) == pytest.approx(0.625, rel=1e-12)
