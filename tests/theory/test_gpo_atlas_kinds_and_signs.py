"""theory.gpo_atlas: the kind of stationary points that lie close together, and the sign of the atlas's printed
gradient factor at the exit of U (two survivors of mutation, seed 1120)."""

import math

import pytest
import sympy as sp

import theory.gpo_atlas as G
from dpo_rlhf_checks.atlas_rows import Setting


@pytest.mark.parametrize("fprime, expected", [
    # f'(t) = t (t - 1/10^4): positive left of 0, negative between the roots, positive right of 1e-4
    (G.t * (G.t - sp.Rational(1, 10 ** 4)), [(0.0, "max"), (1e-4, "min")]),
    # f'(t) = (t + 1e-4) t (t - 1e-4): -, +, -, + on the four intervals
    ((G.t + sp.Rational(1, 10 ** 4)) * G.t * (G.t - sp.Rational(1, 10 ** 4)),
     [(-1e-4, "min"), (0.0, "max"), (1e-4, "min")]),
])
def test_stationary_points_closer_than_the_default_side_step(fprime, expected):
    """Stationary points 1e-4 apart, closer than the default side step 1e-3: the first-derivative test must look at
    f' within half the distance to the nearest other root, not past it (kinds by hand from the sign of f' on each
    interval). A side step that ignored the other roots (2/|y - x| for |y - x|/2 made it always 1e-3) stepped over
    the neighbour and called both points "neither" (a survivor of mutation)."""
    f = sp.integrate(fprime, G.t)
    got = G.stationary_points(f)
    assert [k for _, k in sorted(got)] == [k for _, k in expected]
    assert [x for x, _ in sorted(got)] == pytest.approx([x for x, _ in expected], abs=1e-15)


def _sigma(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _exit_factor(row: dict) -> sp.Expr:
    text = row["grad_factor"]
    assert " at the exit (t = U0)" in text, text
    return sp.sympify(text.split(" at the exit")[0])


@pytest.mark.parametrize("setting, by_hand", [
    # DPO: f = softplus(-t), -f'(t) = sigma(-t) (the documented exit factor sigma(-U0))
    (Setting("sigmoid"), lambda u: _sigma(-u)),
    # rDPO, eps = 0.1: f = ((1 - e) softplus(-t) - e softplus(t))/(1 - 2e), -f' = ((1 - e) sigma(-t) + e sigma(t))/(1 - 2e)
    (Setting("robust", params={"label_smoothing": 0.1}), lambda u: (0.9 * _sigma(-u) + 0.1 * _sigma(u)) / 0.8),
])
def test_transient_rows_print_a_positive_gradient_factor_at_the_exit(setting, by_hand):
    """A transient row's printed gradient factor at the exit of U is -f'(U0) (the gradient that pushes delta up,
    positive for a decreasing f): evaluated at U0 = 0, 2, 5 against the hand-derived derivative (DPO sigma(-U0):
    1/2, 0.1192, 0.00669). With the sign dropped the atlas printed -1/(exp(U0) + 1), a negative factor, and no
    verdict or test read it (a survivor of mutation)."""
    row = G.symbolic_row(setting)
    assert row["class"] == "transient"
    expr = _exit_factor(row)
    assert len(expr.free_symbols) == 1
    for u in (0.0, 2.0, 5.0):
        val = float(expr.subs({s: u for s in expr.free_symbols}))
        assert val > 0 and val == pytest.approx(by_hand(u), rel=1e-12), (u, val)
    if setting.loss == "sigmoid":
        assert float(expr.subs({s: 2.0 for s in expr.free_symbols})) == pytest.approx(0.11920292202211755, rel=1e-12)


@pytest.mark.parametrize("eps", [sp.Rational(1, 10 ** 15), sp.Rational(1, 10 ** 16), sp.Rational(1, 10 ** 18)])
def test_stationary_points_far_closer_than_float_spacing_keep_their_kinds(eps):
    """f'(t) = t (t - eps) with eps from 1e-15 to 1e-18: two distinct stationary points (SymPy finds both exactly;
    the module works at 30 digits), a max at 0 and a min at eps (by hand: f' > 0 left of 0, < 0 between, > 0 right
    of eps). Only roots closer than 1e-20 are the same root found twice; a threshold of 5^-20 = 1.05e-14 merged
    these two, stepped 1e-3 over the neighbour and called both "neither" (a survivor of mutation, seed 1123)."""
    f = sp.integrate(G.t * (G.t - eps), G.t)
    got = sorted(G.stationary_points(f))
    assert [k for _, k in got] == ["max", "min"]
    assert [x for x, _ in got] == pytest.approx([0.0, float(eps)], abs=1e-30)
