"""Shared SymPy symbols, their assumptions, and small proof and numeric helpers.

Assumptions are declared on the symbols (SymPy style): ``beta`` and ``gamma`` positive,
probabilities positive, rewards and log-odds real, the margin ``m`` non-negative.
A three-response instance (``y_w`` = index 0, ``y_l`` = index 1, a third response
index 2) is enough to show every identity that involves the simplex, since the third
response carries the normalisation.

Proofs use :func:`is_identity` (``simplify(lhs - rhs) == 0``, cached), never ``==`` on
expressions. Numeric back-up evaluates the same SymPy expressions with mpmath at 50
digits (:func:`max_identity_error`) and compares float64 implementations against them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import mpmath
import numpy as np
import sympy as sp
from scipy.special import expit, logsumexp, rel_entr

# --- symbols (docs/theory.md notation) -------------------------------------------------------
beta = sp.Symbol("beta", positive=True)
gamma = sp.Symbol("gamma", positive=True)
m = sp.Symbol("m", nonnegative=True)
mu = sp.Symbol("mu", nonnegative=True)
lam = sp.Symbol("lambda", real=True)
delta, delta_ref, dr = sp.symbols("delta delta_ref dr", real=True)
h, a, s, t, u, x = sp.symbols("h a s t u x", real=True)
q = sp.Symbol("q", positive=True)
loss_sym = sp.Symbol("l", positive=True)
Z = sp.Symbol("Z", positive=True)

# three responses: 0 = y_w, 1 = y_l, 2 = another
p = sp.symbols("p_w p_l p_o", positive=True)  # a policy pi
pref = sp.symbols("a_w a_l a_o", positive=True)  # the reference pi_ref
r = sp.symbols("r_w r_l r_o", real=True)  # rewards

# the same without assumptions, to show where an assumption is needed
beta_any = sp.Symbol("beta")
a_any, b_any = sp.symbols("a_any b_any")


def sp_sigma(z):
    """The logistic function ``1 / (1 + e^-z)`` as a SymPy expression."""
    return 1 / (1 + sp.exp(-z))


def sp_softplus(z):
    """``log(1 + e^z)`` as a SymPy expression (``-log sigma(z) = softplus(-z)``)."""
    return sp.log(1 + sp.exp(z))


@lru_cache(maxsize=None)
def is_identity(expr: sp.Expr) -> bool:
    """True when ``simplify(expr) == 0`` (the expression is identically zero under the symbols' assumptions)."""
    return sp.simplify(expr) == 0


@lru_cache(maxsize=None)
def is_identity_log(expr: sp.Expr) -> bool:
    """``is_identity`` after expanding logs (valid because the log arguments are declared positive)."""
    return is_identity(sp.expand_log(expr)) or is_identity(sp.simplify(sp.expand_log(sp.expand(expr))))


def log_split_needs_positivity() -> dict:
    """``log(a b) = log a + log b`` is what turns ratios of probabilities into log-odds.

    With positive symbols SymPy proves it; without assumptions it does not, and a = b = -1 is a
    counterexample (``log 1 = 0`` but ``log(-1) + log(-1) = 2 pi i``).
    """
    ap, bp = sp.symbols("a_pos b_pos", positive=True)
    with_assumption = is_identity(sp.expand_log(sp.log(ap * bp)) - sp.log(ap) - sp.log(bp))
    general = sp.expand_log(sp.log(a_any * b_any)) - sp.log(a_any) - sp.log(b_any)
    without = is_identity(general)
    value = complex(general.subs({a_any: -1, b_any: -1}).evalf())
    return {
        "log_split_proved_with_positive_symbols": bool(with_assumption),
        "log_split_proved_without_assumptions": bool(without),
        "log_split_counterexample": {"a": -1, "b": -1, "lhs_minus_rhs": [value.real, value.imag]},
    }


# --- numerics (float64, stable) ----------------------------------------------------------
def softplus(z):
    """``log(1 + e^z)`` without overflow (``logaddexp(0, z)``)."""
    return np.logaddexp(0.0, z)


def log_sigmoid(z):
    """``log sigma(z) = -softplus(-z)``; ``log(expit(z))`` would give -inf for z < -745."""
    return -softplus(-np.asarray(z, dtype=np.float64))


def sigmoid(z):
    return expit(z)


def gibbs_log_policy(log_pi_ref: np.ndarray, rewards: np.ndarray, beta_value: float) -> np.ndarray:
    """``log pi*`` = ``log pi_ref + r/beta - log Z`` via logsumexp (docs/theory.md §1). Shapes (K,)."""
    logits = np.asarray(log_pi_ref, dtype=np.float64) + np.asarray(rewards, dtype=np.float64) / beta_value
    return logits - logsumexp(logits)


def objective_J(pi: np.ndarray, rewards: np.ndarray, pi_ref: np.ndarray, beta_value: float) -> float:
    """``J(pi) = E_pi[r] - beta KL(pi || pi_ref)`` (``rel_entr`` gives 0 log 0 = 0)."""
    pi = np.asarray(pi, dtype=np.float64)
    return float(pi @ rewards - beta_value * np.sum(rel_entr(pi, pi_ref)))


def extreme_betas() -> list[float]:
    """The decades from 1e-3 to 1e3."""
    return [10.0 ** k for k in range(-3, 4)]


def extreme_probabilities() -> list[float]:
    """Probabilities near 0 and 1 and in between."""
    return [1e-12, 1e-6, 1e-3, 0.1, 0.5, 0.9, 1 - 1e-3, 1 - 1e-6, 1 - 1e-12]


def random_betas(rng: np.random.Generator, n: int) -> np.ndarray:
    """The extreme decades, then log-uniform draws on [1e-3, 1e3]."""
    draws = 10.0 ** rng.uniform(-3, 3, size=max(0, n))
    return np.concatenate([extreme_betas(), draws])


def random_reference_pairs(rng: np.random.Generator, n: int) -> np.ndarray:
    """(M, 2) values (pi_ref(y_w), pi_ref(y_l)) with sum < 1: extremes near 0 and 1, then random draws."""
    ex = [(1e-12, 1 - 2e-12), (1 - 2e-12, 1e-12), (1e-6, 0.5), (0.5, 1e-6), (0.45, 0.45), (1e-3, 0.99),
          (0.99, 1e-3)]
    logs = rng.uniform(-28, 0, size=(max(0, n), 3))
    w = np.exp(logs - logsumexp(logs, axis=1, keepdims=True))[:, :2]
    return np.concatenate([np.asarray(ex), w])


def max_identity_error(lhs: sp.Expr, rhs: sp.Expr, symbols: Sequence[sp.Symbol], points: Sequence[Sequence[float]],
                       dps: int = 50) -> float:
    """Largest ``|lhs - rhs| / max(1, |lhs|, |rhs|)`` over the points, evaluated with mpmath at ``dps`` digits."""
    f_l = sp.lambdify(list(symbols), lhs, modules="mpmath")
    f_r = sp.lambdify(list(symbols), rhs, modules="mpmath")
    worst = mpmath.mpf(0)
    with mpmath.workdps(dps):
        for pt in points:
            args = [mpmath.mpf(float(v)) for v in pt]
            vl, vr = f_l(*args), f_r(*args)
            err = abs(vl - vr) / max(mpmath.mpf(1), abs(vl), abs(vr))
            worst = max(worst, err)
    return float(worst)


#: Digits of every mpmath reference of the numeric methods, set locally (:func:`ref_precision`), never globally: a
#: reference at mpmath's global precision would depend on what else was imported or set (15 digits by default).
REF_DPS = 50


def ref_precision():
    """``with ref_precision(): exact = ...``: mpmath at :data:`REF_DPS` digits inside the block only."""
    return mpmath.workdps(REF_DPS)


def rel_err(value: float, reference) -> float:
    """``|value - reference| / max(1e-300, |reference|)`` with the reference as mpmath or float, at :data:`REF_DPS`
    digits."""
    with ref_precision():
        ref = mpmath.mpf(reference) if not isinstance(reference, mpmath.mpf) else reference
        return float(abs(mpmath.mpf(float(value)) - ref) / max(mpmath.mpf("1e-300"), abs(ref)))
