"""Constrained RLHF (docs/theory.md §9a, paper Sec. 4): exact solvers and their KKT certificates.

Problem, for one prompt with K responses, preference pairs (w_k, l_k), k = 1..P, and margin m >= 0:

    maximise_pi   J(pi) = sum_y pi(y) r(y) - beta KL(pi || pi_ref)
    subject to    pi(w_k) - e^m pi(l_k) >= 0      (k = 1..P; the linear form of delta_pi >= m)
                  sum_y pi(y) = 1,  pi >= 0.

Multiplier convention (the one docs/theory.md §9a uses). With the Lagrangian
``L = J(pi) + sum_k mu_k (pi(w_k) - e^m pi(l_k)) + nu (1 - sum_y pi(y))``, mu_k >= 0 is the multiplier
of the *linear* constraint k, in units of reward, and stationarity gives

    pi_c(y) ∝ pi_ref(y) exp((r(y) + sum_k mu_k a_k(y)) / beta),   a_k(w_k) = 1, a_k(l_k) = -e^m.

One pair: mu = max(0, (beta m - beta delta_ref - dr) / (1 + e^m)) (closed form, :func:`closed_form_pairs`).
The multiplier of the log-form constraint ``log pi(w) - log pi(l) >= m`` is mu * pi_c(w_k) at an
active constraint (its gradient is the linear one divided by pi_c(w_k)).

Price of alignment (§9c): J(pi*) - J(pi_c) = beta KL(pi_c || pi*) (exact identity, see
:func:`toy_bandits.rlhf.suboptimality`) = -beta log E_{pi*}[exp(sum_k mu_k a_k / beta)] (strong duality).

Methods:
- :func:`closed_form_pairs`: one pair per prompt, vectorised over a batch (numpy, log space, exact).
- :class:`ConstrainedRLHF`: CVXPY over any preference graph, built once per (K, graph) with
  ``cp.Parameter``s (DPP) and re-solved; CLARABEL by default, SCS as the second solver. It solves
  the equivalent problem ``minimise KL(pi || pi*)`` (``rel_entr``): since
  ``J(pi) = beta log Z - beta KL(pi || pi*)`` the optimiser is the same and the objective is scaled
  by 1/beta, so the constraint duals are divided by beta (we multiply them back). By default its
  answer is then polished: :func:`exact_active_set` started from the solver's own active set (the
  solver's answer stays in ``ConstrainedSolution.raw``, with its status).
- :func:`solve_dual`: the smooth dual ``min_{mu >= 0} beta log sum_y pi*(y) exp((A^T mu)(y)/beta)``
  by L-BFGS-B, then an exact active-set step in log space (the pairs' log-odds are linear in mu):
  a solver independent of CVXPY, exact for tiny probabilities.

Accuracy: CVXPY's solvers give *absolute* accuracy in the probabilities: measured against the
closed form on 140 random single-pair instances (beta 1e-3..1e3), max |pi_cvx - pi_c| was
5.6e-7 for CLARABEL (tolerances below; median 1e-11) and 3.2e-5 for SCS (eps 1e-9; median 5e-13);
Hypothesis found CLARABEL answers off by 1.0e-5 (one pair, pi_ref entries ~5e-12) and 2.5e-5 (four
pairs, pi_c entries ~1e-15), both "optimal_inaccurate" (pinned in tests/toy_bandits/test_solver_constrained.py).
Probabilities below that are not resolved relative to themselves, and a multiplier mu is not
identifiable from them when pi_c(w) or pi_c(l) is that small. Compare raw CVXPY answers with an
absolute tolerance (the checks and tests state theirs); the closed form, the dual and the
polished CVXPY answer are accurate in log space.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.optimize import minimize, nnls
from scipy.special import expit, logsumexp

from toy_bandits.instance import BanditInstance, PairBatch, _pairs
from toy_bandits.rlhf import log_gibbs_policy, optimal_value, rlhf_objective, suboptimality

SOLVERS = ("CLARABEL", "SCS")
METHODS = ("auto", "closed-form", "cvxpy", "dual")
OK_STATUSES = ("optimal", "optimal_inaccurate")
# See ConstrainedRLHF: errors in pi scale like sqrt(gap tolerance), hence the tight gaps.
CLARABEL_OPTS = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}
SCS_OPTS = {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200_000}


class InfeasiblePreferencesError(ValueError):
    """The constraints delta_pi >= m > 0 contain a directed preference cycle: no policy meets them.

    cycle: the response indices on the cycle, ``[v0, v1, ..., v0]`` with v_i preferred to v_{i+1}.
    """

    def __init__(self, cycle: Sequence[int], margin: float):
        self.cycle = list(cycle)
        self.margin = margin
        path = " > ".join(str(v) for v in self.cycle)
        super().__init__(
            f"preferences: cycle {path} with margin {margin} > 0 is infeasible (it needs pi(v) >= e^(m L) pi(v) "
            f"with L = {len(self.cycle) - 1} pairs); with margin 0 a cycle forces ties"
        )


class ConstrainedSolveError(RuntimeError):
    """The convex solver returned a status other than optimal / optimal_inaccurate."""


def find_cycle(preferences: Sequence[tuple[int, int]], K: int) -> list[int] | None:  # noqa: N803
    """A directed cycle of the graph winner -> loser as ``[v0, ..., v0]``, or None (iterative DFS)."""
    succ: list[list[int]] = [[] for _ in range(K)]
    for w, l in preferences:
        succ[w].append(l)
    color = [0] * K  # 0 unseen, 1 on the stack, 2 done
    parent = [-1] * K
    for root in range(K):
        if color[root]:
            continue
        stack = [(root, 0)]
        color[root] = 1
        while stack:
            v, i = stack[-1]
            if i < len(succ[v]):
                stack[-1] = (v, i + 1)
                u = succ[v][i]
                if color[u] == 1:  # back edge v -> u closes a cycle u -> ... -> v -> u
                    cycle = [v]
                    while cycle[-1] != u:
                        cycle.append(parent[cycle[-1]])
                    return [*reversed(cycle), u]
                if color[u] == 0:
                    color[u], parent[u] = 1, v
                    stack.append((u, 0))
            else:
                color[v] = 2
                stack.pop()
    return None


def check_feasible(preferences: Sequence[tuple[int, int]], K: int, margin: float) -> None:  # noqa: N803
    """Raise :class:`InfeasiblePreferencesError` when margin > 0 and the graph has a cycle.

    Note: with probabilities allowed to be 0 the *linear* constraints pi(w) >= e^m pi(l) could
    be met by putting zero mass on the cycle and on everything below it; the paper's constraint
    delta_pi = log pi(w) - log pi(l) >= m needs positive probabilities, so such a policy does not
    count: the instance is infeasible.
    """
    if margin > 0:
        cycle = find_cycle(preferences, K)
        if cycle is not None:
            raise InfeasiblePreferencesError(cycle, margin)


def constraint_matrix(preferences: Sequence[tuple[int, int]], K: int, margin: float) -> np.ndarray:  # noqa: N803
    """A (P, K): row k is a_k with a_k(w_k) = 1, a_k(l_k) = -e^m; constraints A pi >= 0."""
    a = np.zeros((len(preferences), K))
    for k, (w, l) in enumerate(preferences):
        a[k, w] = 1.0
        a[k, l] = -np.exp(margin)
    return a


@dataclass
class ConstrainedSolution:
    """The constrained optimum of one instance and what comes with it (P pairs, K responses).

    pi: (K,) pi_c. pi_star: (K,) the unconstrained Gibbs optimum. multipliers: (P,) mu_k in the
    module's convention (linear constraint, reward units). price_of_alignment: J(pi*) - J(pi_c).
    delta_ref, delta_star, delta_c: (P,) log-odds log pi(w) - log pi(l) under pi_ref, pi*, pi_c.
    assumption_holds: (P,) delta_star > 0 (docs/theory.md §3). in_U: (P,) delta_ref < delta_star < 0,
    i.e. pi* lies in the undesirable set U of that pair (§6). status: solver status (for CVXPY the
    solver's own, also when the answer was polished). method: "closed-form", "cvxpy:<SOLVER>" or
    "dual". kkt: residuals from :func:`kkt_residuals`.
    raw: CVXPY only, when the answer was polished (see :meth:`ConstrainedRLHF.solve`): the solver's
    own answer, a ConstrainedSolution with ``raw=None``; None otherwise. The raw answer is the one
    that is independent of the other methods.
    """

    pi: np.ndarray
    pi_star: np.ndarray
    multipliers: np.ndarray
    price_of_alignment: float
    delta_ref: np.ndarray
    delta_star: np.ndarray
    delta_c: np.ndarray
    assumption_holds: np.ndarray
    in_U: np.ndarray
    status: str
    method: str
    kkt: dict = field(default_factory=dict)
    raw: ConstrainedSolution | None = None
    log_pi: np.ndarray | None = None  # (K,) log pi_c, exact where pi_c underflows (-inf where pi_c = 0)
    note: str = ""  # how the method was chosen, and any fallback taken (see :func:`solve`)


def _pair_deltas(log_p: np.ndarray, winners: np.ndarray, losers: np.ndarray) -> np.ndarray:
    """log p(w) - log p(l); NaN where a solver left both probabilities at exactly 0 (undefined)."""
    with np.errstate(invalid="ignore"):
        return log_p[..., winners] - log_p[..., losers]


def delta_star_of(delta_ref: np.ndarray, dr: np.ndarray, beta) -> np.ndarray:
    """delta* = delta_ref + dr / beta (docs/theory.md §1), from the pair's own numbers.

    Not log pi*(w) - log pi*(l): that difference loses dr / beta under rounding when beta is huge
    (beta = 1e300: log(0.5) + 1e-300 == log(0.5)) and is -inf - -inf = NaN when pi* underflows at both
    responses. This form is +-inf only where dr / beta itself exceeds the float range (the sign is
    then exact), and never NaN (delta_ref is finite, rewards are finite).
    """
    with np.errstate(over="ignore"):
        return delta_ref + dr / beta


def assumption_and_u(delta_ref: np.ndarray, dr: np.ndarray, beta) -> tuple[np.ndarray, np.ndarray]:
    """(assumption holds: delta* > 0, pi* in U: delta_ref < delta* < 0) per pair, with exact signs.

    delta_ref < delta* iff dr > 0 (beta > 0), whatever rounding does to delta_ref + dr / beta. The sign
    of delta* = delta_ref + dr / beta is that of beta delta_ref + dr, decided in exact rational
    arithmetic on the floats given (``fractions.Fraction``), so beta = 1e300 with dr / beta = 1e-300 is
    not lost. delta_ref itself is a difference of two logs, rounded once.
    """
    from fractions import Fraction

    delta_ref = np.atleast_1d(np.asarray(delta_ref, dtype=np.float64))
    dr = np.atleast_1d(np.asarray(dr, dtype=np.float64))
    beta = np.broadcast_to(np.asarray(beta, dtype=np.float64), delta_ref.shape)
    def sign(b: float, d: float, g: float) -> int:
        x = Fraction(b) * Fraction(d) + Fraction(g)  # beta delta_ref + dr, exactly
        return (x > 0) - (x < 0)

    sign = np.array([sign(float(b), float(d), float(g)) for b, d, g in zip(beta, delta_ref, dr)],
                    dtype=np.int64).reshape(delta_ref.shape)
    return sign > 0, (dr > 0) & (sign < 0)


# --------------------------------------------------------------------------------------------
# Closed form, one pair per prompt, vectorised (docs/theory.md §9a)
# --------------------------------------------------------------------------------------------

@dataclass
class PairSolutions:
    """Closed-form solutions of N single-pair problems (arrays over the batch).

    log_pi_c, pi_c, log_pi_star: (N, K). mu, price, delta_ref, delta_star, delta_c: (N,).
    assumption_holds, in_U, active: (N,) bool (active: mu > 0, the constraint binds).
    """

    log_pi_c: np.ndarray
    pi_c: np.ndarray
    log_pi_star: np.ndarray
    mu: np.ndarray
    price: np.ndarray
    delta_ref: np.ndarray
    delta_star: np.ndarray
    delta_c: np.ndarray
    assumption_holds: np.ndarray
    in_U: np.ndarray
    active: np.ndarray


def closed_form_pairs(batch: PairBatch) -> PairSolutions:
    """Single-pair constrained RLHF in closed form for every row of ``batch``. docs/theory.md §9a.

    mu = max(0, beta (m - delta*) / (1 + e^m)) with delta* = delta_ref + dr/beta, and
    log pi_c = log pi* + mu a / beta - log E_{pi*}[exp(mu a / beta)]. The tilt on the winner is
    (m - delta*)^+ sigmoid(-m) and on the loser -(m - delta*)^+ sigmoid(m): written with expit so
    e^m never overflows. The price is -beta log E_{pi*}[exp(mu a / beta)] (strong duality; the
    constraint is active whenever mu > 0, so E_{pi_c}[mu a] = 0), summed with log1p/expm1 so a
    small price keeps its relative accuracy. Rows beyond float64's resolution (:func:`resolution_problem`)
    are not meaningful here; :func:`solve` refuses them.
    """
    n = batch.N
    rows = np.arange(n)
    w, l, beta, m = batch.winner, batch.loser, batch.beta, batch.margin
    log_star = log_gibbs_policy(batch.pi_ref, batch.reward, beta)  # (N, K)
    log_ref = np.log(batch.pi_ref)
    delta_ref = log_ref[rows, w] - log_ref[rows, l]
    # delta* from the pair's own numbers, not from log pi*: pi*'s normaliser is a sum whose rounding depends on the
    # order of the responses (mu ∝ m - delta* may be a small difference), and log pi* loses dr / beta for huge beta
    dr = batch.reward[rows, w] - batch.reward[rows, l]
    delta_star = delta_star_of(delta_ref, dr, beta)
    gap = np.maximum(m - delta_star, 0.0)  # = (beta m - beta delta_ref - dr)^+ / beta
    mu = beta * gap * expit(-m)  # (beta m - beta delta_ref - dr)^+ / (1 + e^m)
    tilt_w = gap * expit(-m)  # mu / beta
    tilt_l = -gap * expit(m)  # -mu e^m / beta
    # log E_{pi*}[e^t] = log(1 + p_w (e^{t_w} - 1) + p_l (e^{t_l} - 1)), t_w >= 0 >= t_l. Each term in log
    # space: p_w (e^{t_w} - 1) = exp(log p_w + t_w + log(1 - e^{-t_w})) stays finite when p_w underflows
    # and t_w is huge (tiny beta); at the optimum p_w e^{t_w} <= 1, so it cannot overflow.
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        pos = tilt_w > 0
        safe_tw = np.where(pos, tilt_w, 1.0)
        term_w = np.where(pos, np.exp(log_star[rows, w] + safe_tw + np.log(-np.expm1(-safe_tw))), 0.0)
        neg = tilt_l < 0
        safe_tl = np.where(neg, tilt_l, -1.0)
        term_l = np.where(neg, -np.exp(log_star[rows, l] + np.log(-np.expm1(safe_tl))), 0.0)
        inner = term_w + term_l
        small = np.log1p(np.clip(inner, -0.5, 0.5))
    # log1p keeps a small price's relative accuracy; where |inner| >= 0.5 (1 + inner could cancel, or
    # e^{t_w} overflows for tiny beta) logsumexp over the tilted logits is the accurate one.
    tilted = log_star.copy()
    tilted[rows, w] += tilt_w
    tilted[rows, l] += tilt_l
    exact_norm = logsumexp(tilted, axis=1)
    log_norm = np.where(np.abs(inner) < 0.5, small, exact_norm)
    log_pi_c = tilted - log_norm[:, None]
    price = -beta * log_norm  # >= 0 up to rounding; not clamped, so a check can see a negative one
    with np.errstate(invalid="ignore"):
        delta_c = log_pi_c[rows, w] - log_pi_c[rows, l]
    with np.errstate(under="ignore"):
        pi_c = np.exp(log_pi_c)
    return PairSolutions(
        log_pi_c=log_pi_c, pi_c=pi_c, log_pi_star=log_star, mu=mu, price=price,
        delta_ref=delta_ref, delta_star=delta_star, delta_c=delta_c,
        assumption_holds=delta_star > 0, in_U=(dr > 0) & (delta_star < 0), active=gap > 0,
    )


def _solution_from_policy(inst: BanditInstance, pi: np.ndarray, log_pi: np.ndarray, mu: np.ndarray,
                          status: str, method: str) -> ConstrainedSolution:
    log_star = log_gibbs_policy(inst.pi_ref, inst.reward, inst.beta)
    w, l = inst.winners, inst.losers
    delta_ref = _pair_deltas(np.log(inst.pi_ref), w, l)
    dr = inst.reward[w] - inst.reward[l]
    delta_star = delta_star_of(delta_ref, dr, inst.beta)
    holds, in_u = assumption_and_u(delta_ref, dr, inst.beta) if len(w) else (np.zeros(0, bool), np.zeros(0, bool))
    return ConstrainedSolution(
        pi=pi, pi_star=np.exp(log_star), multipliers=mu,
        price_of_alignment=float(suboptimality(pi, inst.pi_ref, inst.reward, inst.beta)),
        delta_ref=delta_ref, delta_star=delta_star, delta_c=_pair_deltas(log_pi, w, l),
        assumption_holds=holds, in_U=in_u,
        status=status, method=method, kkt=kkt_residuals(inst, pi, mu), log_pi=np.asarray(log_pi, dtype=np.float64),
    )


# Largest |log pi*| (at a response of a pair) and |delta*| the log-space solvers resolve: one ulp of 1e8 is
# 1.5e-8, so log-odds such as delta_c = m keep about 8 digits. Beyond it (r / beta of 1e300 with beta 1e-4),
# pi* is still exact (a point mass), but the constrained optimum's log-odds are differences of numbers whose
# rounding error exceeds the answer.
LOG_RESOLUTION = 1e8


class UnresolvedInstanceError(ConstrainedSolveError):
    """float64 cannot resolve the constrained optimum of this instance (see :func:`resolution_problem`)."""


def resolution_problem(inst: BanditInstance) -> str | None:
    """Why the constrained optimum of ``inst`` is beyond float64 (r / beta too large at a pair), or None."""
    if not inst.preferences:
        return None
    w, l = inst.winners, inst.losers
    log_star = log_gibbs_policy(inst.pi_ref, inst.reward, inst.beta)
    d_star = delta_star_of(np.log(inst.pi_ref[w]) - np.log(inst.pi_ref[l]), inst.reward[w] - inst.reward[l],
                           inst.beta)
    worst = float(max(np.max(np.abs(log_star[np.union1d(w, l)])), np.max(np.abs(d_star))))
    if worst <= LOG_RESOLUTION:
        return None
    return (f"r/beta puts |log pi*| or |delta*| at {worst:.3g} on a preference pair, beyond {LOG_RESOLUTION:g} where "
            "float64 resolves the constrained optimum's log-odds; the RLHF optimum is exact (a point mass where it "
            "shows one), the constrained one is not computed")


#: log of the smallest normal float64 (2.2e-308): below it a probability has lost relative precision, and 0.0
#: stands for anything under 4.9e-324.
LOG_SMALLEST_NORMAL = math.log(np.finfo(np.float64).tiny)


def underflow_problem(inst: BanditInstance, sol: ConstrainedSolution) -> str | None:
    """Why ``sol`` cannot be reported in probabilities (as the ``solve`` command does), or None: pi_c below the
    normal float64 range at a response of a preference pair. There pi_c prints as 0 (or a subnormal) next to a
    finite delta_cpo taken from log pi_c, and the KKT residuals, absolute and in probabilities
    (pi(w) - e^m pi(l)), are ~0 whatever the answer: the status "optimal" would rest on nothing. (Chain
    0 > 1 > 2 with margin 700: pi_c = [1, 9.9e-305, 0], delta_cpo = 700 on (1, 2), residuals 0.)"""
    if not inst.preferences:
        return None
    on_pairs = np.union1d(inst.winners, inst.losers)
    with np.errstate(divide="ignore"):  # pi_c = 0 is log -inf: underflowed
        log_pi = sol.log_pi if sol.log_pi is not None else np.log(np.maximum(sol.pi, 0.0))
    low = [int(j) for j in on_pairs if not log_pi[j] >= LOG_SMALLEST_NORMAL]
    if not low:
        return None
    shown = ", ".join(f"response {j} (log pi_c = {log_pi[j]:.6g})" for j in low[:3]) + (" ..." if len(low) > 3 else "")
    return (f"pi_c underflows float64 at {shown} of a preference pair, below the smallest normal float "
            f"(log {LOG_SMALLEST_NORMAL:.4g}): its probabilities, delta_cpo and KKT residuals cannot be checked "
            "in float64, so the constrained optimum is not computed")


def solve_closed_form(inst: BanditInstance) -> ConstrainedSolution:
    """The closed form for an instance with exactly one pair (docs/theory.md §9a)."""
    if len(inst.preferences) != 1:
        raise ValueError(f"preferences: the closed form needs exactly one pair, got {len(inst.preferences)}")
    sol = closed_form_pairs(PairBatch.from_instances([inst]))
    out = _solution_from_policy(inst, sol.pi_c[0], sol.log_pi_c[0], sol.mu, "optimal", "closed-form")
    out.price_of_alignment = float(sol.price[0])  # the dual form, accurate for tiny prices
    return out


# --------------------------------------------------------------------------------------------
# KKT residuals
# --------------------------------------------------------------------------------------------

def kkt_residuals(inst: BanditInstance, pi: np.ndarray, mu: np.ndarray) -> dict[str, float]:
    """Residuals of the KKT conditions of §9a at (pi, mu), all absolute, all >= 0.

    primal: max(|sum pi - 1|, max_y (-pi(y))^+, max_k (-(pi(w_k) - e^m pi(l_k)))^+).
    dual: max_k (-mu_k)^+. slackness: max_k |mu_k g_k| / (1 + mu_k) with g_k = pi(w_k) - e^m pi(l_k)
    (relative to mu_k once mu_k > 1, so a large multiplier does not inflate it).
    stationarity: max_y |pi(y) - pi_mu(y)| with pi_mu ∝ pi* exp(A^T mu / beta), the policy the
    multipliers imply (computed in log space).
    """
    pi = np.asarray(pi, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64)
    a = constraint_matrix(inst.preferences, inst.K, inst.margin)
    g = a @ pi if a.size else np.zeros(0)
    # pi_mu is the Gibbs policy of the tilted reward r + A^T mu (reward units: no mu / beta overflow for tiny beta)
    with np.errstate(over="ignore", invalid="ignore"):
        tilted = inst.reward + (a.T @ mu if a.size else 0.0)
    if not np.all(np.isfinite(tilted)):
        return {"primal": float("inf"), "dual": float("inf"), "slackness": float("inf"), "stationarity": float("inf")}
    pi_mu = np.exp(log_gibbs_policy(inst.pi_ref, tilted, inst.beta))
    primal = max(abs(pi.sum() - 1.0), float(np.max(-pi, initial=0.0)), float(np.max(-g, initial=0.0)))
    return {
        "primal": primal,
        "dual": float(np.max(-mu, initial=0.0)),
        "slackness": float(np.max(np.abs(mu * g) / (1.0 + mu), initial=0.0)),
        "stationarity": float(np.max(np.abs(pi - pi_mu))),
    }


# --------------------------------------------------------------------------------------------
# CVXPY over any preference graph
# --------------------------------------------------------------------------------------------

class _SolverOutput:
    """Captures what a solver writes to stdout / stderr while it runs, at both levels.

    SCS prints "ERROR: init_lin_sys_work failure" and the like straight to fd 1, past Python's sys.stdout, and
    "ERROR: could not determine problem status." through Python's own sys.stdout: either would corrupt
    ``solve --json`` output. File descriptors 1 and 2 and Python's sys.stdout / sys.stderr are redirected for the
    solve; the captured text of both is kept in ``text`` for error messages.
    """

    def __enter__(self):
        import io
        import os
        import tempfile

        self.text = ""
        sys.stdout.flush()
        sys.stderr.flush()
        self._python = (sys.stdout, sys.stderr)
        self._python_text = io.StringIO()
        sys.stdout = sys.stderr = self._python_text
        try:
            self._tmp = tempfile.TemporaryFile()
            self._saved = [os.dup(1), os.dup(2)]
            os.dup2(self._tmp.fileno(), 1)
            os.dup2(self._tmp.fileno(), 2)
        except (OSError, ValueError, AttributeError):  # no real file descriptors (an embedding): Python's only
            self._saved = None
        return self

    def __exit__(self, *exc):
        import os

        sys.stdout, sys.stderr = self._python
        captured = self._python_text.getvalue()
        if self._saved is not None:
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
            for fd in self._saved:
                os.close(fd)
            self._tmp.seek(0)
            captured = self._tmp.read().decode("utf-8", errors="replace") + captured
            self._tmp.close()
        self.text = " ".join(captured.split())
        return False


class ConstrainedRLHF:
    """Constrained RLHF over a fixed (K, preference graph), compiled once and re-solved (DPP).

    Convex program (equivalent to §9a, see the module docstring):

        minimise_pi  sum_y rel_entr(pi(y), 1) - sum_y log pi*(y) pi(y)
                                                         [= KL(pi || pi*) = (J(pi*) - J(pi)) / beta]
        subject to   sum_y pi(y) = 1,  pi >= 0,
                     pi[W] - e^m * pi[L] >= 0              (one row per pair)

    Parameters: ``log pi*`` (K, from :func:`toy_bandits.rlhf.log_gibbs_policy`) and ``e^m``
    (P, nonnegative); both enter DPP-compliantly (linearly), so a new (pi_ref, reward, beta,
    margin) only re-fills them. ``solve`` names the solver.

    Why ``log pi*`` and not ``rel_entr(pi, pi*)`` with ``pi*`` a parameter: for small beta, pi*
    has entries like 1e-100; as the second argument of an exponential cone they wreck the
    solver's scaling (CLARABEL returned "optimal" with an error of 1.0 in pi on such instances),
    while log pi* ~ -230 is an ordinary linear cost.

    Tolerances: the objective is flat (quadratic) at the optimum, so the solver's gap tolerance
    eps gives errors of order sqrt(eps) in pi; CLARABEL runs with gap/feasibility tolerances
    1e-12 (``CLARABEL_OPTS``; it then often reports "optimal_inaccurate", meaning it met its
    reduced tolerances; the status is passed on) and SCS with eps 1e-9 (``SCS_OPTS``). Even so a
    raw CLARABEL answer can be off by 2.5e-5 where pi_c has entries ~1e-15 (see ``solve``'s polish).

    Determinism: every solve starts the solver afresh (``warm_start=False``). CVXPY's default warm
    start keeps the solver object of the previous solve and updates its data: CLARABEL then reuses
    the first instance's equilibration (on one instance its answer moved by 2.5e-5 between the
    first and later solves) and SCS starts from the previous solution, so an answer would depend on
    what the compiled problem solved before.
    """

    def __init__(self, K: int, preferences: Sequence[tuple[int, int]]):  # noqa: N803
        import cvxpy as cp

        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 2:
            raise ValueError(f"K: must be an integer >= 2, got {K!r}")
        self.K = int(K)
        self.preferences = _pairs(preferences, self.K)
        self.cycle = find_cycle(self.preferences, self.K)
        self.pi = cp.Variable(self.K, nonneg=True, name="pi")
        self.log_pi_star = cp.Parameter(self.K, name="log_pi_star")
        constraints = [cp.sum(self.pi) == 1]
        self.pair_constraint = None
        if self.preferences:
            p = len(self.preferences)
            self.exp_margin = cp.Parameter(p, nonneg=True, name="exp_margin")
            w = [a for a, _ in self.preferences]
            l = [b for _, b in self.preferences]
            self.pair_constraint = self.pi[w] - cp.multiply(self.exp_margin, self.pi[l]) >= 0
            constraints.append(self.pair_constraint)
        kl_to_gibbs = cp.sum(cp.rel_entr(self.pi, np.ones(self.K))) - self.log_pi_star @ self.pi
        self.problem = cp.Problem(cp.Minimize(kl_to_gibbs), constraints)
        if not self.problem.is_dcp(dpp=True):  # pragma: no cover - a construction error, not an input error
            raise AssertionError("the constrained RLHF program must be DPP-compliant")

    def solve(self, inst: BanditInstance, solver: str = "CLARABEL", polish: bool = True,
              **solver_opts) -> ConstrainedSolution:
        """Solve for ``inst`` (its K and preferences must be this object's); raise on a bad status.

        polish: finish exactly from the solver's own active set, {k : dual_k > slack_k} (whichever of
        a constraint's dual and slack the interior-point answer left larger), by
        :func:`exact_active_set`; the returned solution then meets the KKT conditions to rounding,
        keeps the solver's status, and carries the solver's own answer in ``raw``. If that step does
        not settle, the raw answer is returned (``raw`` None). polish=False returns the raw answer.
        """
        if solver not in SOLVERS:
            raise ValueError(f"solver: must be one of {SOLVERS}, got {solver!r}")
        if inst.K != self.K or tuple(inst.preferences) != self.preferences:
            raise ValueError("instance: its K and preferences differ from the compiled problem's")
        if inst.margin > 0 and self.cycle is not None:
            raise InfeasiblePreferencesError(self.cycle, inst.margin)
        self.log_pi_star.value = log_gibbs_policy(inst.pi_ref, inst.reward, inst.beta)
        if self.pair_constraint is not None:
            self.exp_margin.value = np.full(len(self.preferences), np.exp(inst.margin))
        opts = {**(CLARABEL_OPTS if solver == "CLARABEL" else SCS_OPTS), **solver_opts}
        with warnings.catch_warnings():
            # "Solution may be inaccurate": the status says so ("optimal_inaccurate") and is returned.
            warnings.filterwarnings("ignore", message="Solution may be inaccurate", category=UserWarning)
            with _SolverOutput() as printed:  # the solvers' C code must not write into our output
                try:
                    self.problem.solve(solver=solver, warm_start=False, **opts)  # a fresh solver: see the class doc
                except Exception as err:  # noqa: BLE001 - re-raised with what the solver printed
                    failure = err
                else:
                    failure = None
            if failure is not None:
                detail = f" (it printed: {printed.text[:200]})" if printed.text else ""
                raise ConstrainedSolveError(f"{solver} failed: {' '.join(str(failure).split())}{detail}") from failure
        status = self.problem.status
        if status not in OK_STATUSES:
            raise ConstrainedSolveError(f"{solver} returned status {status!r}")
        pi = np.clip(np.asarray(self.pi.value, dtype=np.float64), 0.0, None)
        pi = pi / pi.sum()
        if self.pair_constraint is not None:
            # The program's objective is (J(pi*) - J(pi)) / beta: its duals are mu / beta.
            mu = inst.beta * np.clip(np.asarray(self.pair_constraint.dual_value, dtype=np.float64).ravel(), 0.0, None)
        else:
            mu = np.zeros(0)
        with np.errstate(divide="ignore"):
            log_pi = np.log(pi)
        raw = _solution_from_policy(inst, pi, log_pi, mu, status, f"cvxpy:{solver}")
        if not polish:
            return raw
        log_star = log_gibbs_policy(inst.pi_ref, inst.reward, inst.beta)
        a = constraint_matrix(inst.preferences, inst.K, inst.margin)
        nu = exact_active_set(log_star, inst.preferences, inst.margin, mu / inst.beta > a @ pi)
        if nu is None:
            return raw
        logits = log_star + a.T @ nu
        log_pi = logits - logsumexp(logits)
        out = _solution_from_policy(inst, np.exp(log_pi), log_pi, inst.beta * nu, status, f"cvxpy:{solver}")
        out.raw = raw
        return out


_COMPILED: dict[tuple, ConstrainedRLHF] = {}


def compiled_problem(K: int, preferences: Sequence[tuple[int, int]]) -> ConstrainedRLHF:  # noqa: N803
    """The cached :class:`ConstrainedRLHF` of (K, preferences) (built on first use)."""
    key = (int(K), tuple(tuple(p) for p in preferences))
    if key not in _COMPILED:
        _COMPILED[key] = ConstrainedRLHF(K, preferences)
    return _COMPILED[key]


# --------------------------------------------------------------------------------------------
# The dual, by L-BFGS-B (independent of CVXPY)
# --------------------------------------------------------------------------------------------

def solve_dual(inst: BanditInstance, *, tol: float = 1e-13, max_iter: int = 10_000,
               progress: bool = False) -> ConstrainedSolution:
    """Solve §9a through its dual: ``min_{nu >= 0} log sum_y pi*(y) exp((A^T nu)(y))``, mu = beta nu.

    The dual function is convex and smooth; its gradient is A pi_nu (the constraint values at the
    tilted policy pi_nu ∝ pi* exp(A^T nu)), so L-BFGS-B with bounds nu >= 0 solves it approximately;
    :func:`exact_active_set` then finishes from L-BFGS-B's active set {nu > 0} and the primal optimum
    is pi_nu at the final nu (log space throughout). status: "optimal" when that step settles (its
    answer meets the KKT conditions to rounding), else it names the failure and the L-BFGS-B answer
    is returned.
    """
    check_feasible(inst.preferences, inst.K, inst.margin)
    log_star = log_gibbs_policy(inst.pi_ref, inst.reward, inst.beta)
    a = constraint_matrix(inst.preferences, inst.K, inst.margin)
    if a.size == 0:
        return _solution_from_policy(inst, np.exp(log_star), log_star, np.zeros(0), "optimal", "dual")

    from scipy.sparse import csr_matrix

    a_sparse = csr_matrix(a)  # two entries per row: on a 1,999-pair chain the dense products took 12 of 20 s
    a_sparse_t = a_sparse.T.tocsr()

    def fun(nu):
        logits = log_star + a_sparse_t @ nu
        lz = logsumexp(logits)
        return lz, a_sparse @ np.exp(logits - lz)

    from tqdm import tqdm

    # Long solves (thousands of pairs take minutes) show their iterations; no bar below 200 pairs.
    bar = tqdm(desc=f"dual: L-BFGS-B on {a.shape[0]} multipliers", unit="it", file=sys.stderr,
               disable=not progress or a.shape[0] < 200, leave=False)
    w, l = inst.winners, inst.losers
    # L-BFGS-B only has to guess the active set: the exact step settles the answer. A short run first (on a
    # 1,999-pair chain the full tol = 1e-13 run took minutes of L-BFGS-B iterations for the same answer); the
    # full run only when the exact step does not settle from that guess.
    for maxiter in dict.fromkeys((min(max_iter, 300), max_iter)):
        res = minimize(fun, np.zeros(a.shape[0]), jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * a.shape[0],
                       options={"ftol": tol, "gtol": tol, "maxiter": maxiter}, callback=lambda _x: bar.update(1))
        bar.set_description(f"dual: exact active-set step on {a.shape[0]} pairs")
        nu = _active_set_lcp(log_star[w] - log_star[l], a[:, w].T - a[:, l].T, inst.margin, res.x > 0, progress=bar)
        if nu is not None:
            break
    bar.close()
    if nu is None:
        nu, status = res.x, f"dual: the exact active-set step did not settle; L-BFGS-B: {res.message}"
    else:
        status = "optimal"
    logits = log_star + a.T @ nu
    log_pi = logits - logsumexp(logits)
    return _solution_from_policy(inst, np.exp(log_pi), log_pi, inst.beta * nu, status, "dual")


def exact_active_set(log_star: np.ndarray, preferences: Sequence[tuple[int, int]], margin: float,
                     active: np.ndarray) -> np.ndarray | None:
    """The optimal dual variables nu = mu / beta, exactly, by an active-set iteration in log space.

    log_star: (K,) log pi*. preferences: P pairs. active: (P,) bool, the starting guess of the set
    of binding constraints (from L-BFGS-B or from a CVXPY solver's answer). Returns nu (P,), >= 0,
    or None when the iteration does not settle.

    With log pi_nu = log pi* + A^T nu - const, the log-odds of every pair is *linear* in nu:
    delta(nu) = delta* + D nu with D[k, j] = a_j(w_k) - a_j(l_k). So the KKT conditions of §9a are
    exactly the linear complementarity problem nu >= 0, delta(nu) - m >= 0, nu_k (delta_k - m) = 0,
    with no tiny probabilities involved (unlike the dual gradient A pi_nu, which underflows for small
    beta). On a guessed set S the binding conditions delta_S = m are the linear system
    D_SS nu_S = m - delta*_S. When D_SS is singular (the pairs of S close an undirected cycle, e.g.
    (3,0), (3,4), (1,0), (1,4), or a tie-forcing cycle with m = 0) the system has many solutions,
    all with the same pi (the equality-constrained problem on S is strictly convex), and a
    nonnegative one is found by NNLS. A multiplier that must be negative drops its pair from S
    (:func:`_pair_to_drop` when D_SS is singular), the most violated pair outside S joins it. If a
    set repeats, the iteration starts again from S empty; None if that also repeats a set.
    """
    w = np.array([p[0] for p in preferences], dtype=np.int64)
    l = np.array([p[1] for p in preferences], dtype=np.int64)
    a = constraint_matrix(preferences, log_star.size, margin)
    with np.errstate(invalid="ignore"):
        d_star = log_star[w] - log_star[l]
    if not np.all(np.isfinite(d_star)):
        return None  # pi* underflows at a pair's responses (see resolution_problem)
    return _active_set_lcp(d_star, a[:, w].T - a[:, l].T, margin, active)


def _active_set_lcp(d_star: np.ndarray, d_mat: np.ndarray, margin: float, active: np.ndarray,
                    progress=None) -> np.ndarray | None:
    """The LCP nu >= 0, d_star + D nu - margin >= 0, nu_k (d_star + D nu - margin)_k = 0 (see exact_active_set).

    The same problem in reward units (mu = beta nu) is d_star -> beta delta*, margin -> beta m.
    progress: an optional tqdm bar, advanced once per iteration.
    """
    tol = 1e-12 * max(1.0, margin, float(np.max(np.abs(d_star), initial=0.0)))
    for start in (np.array(active, dtype=bool), np.zeros(len(d_star), dtype=bool)):
        seen: set[bytes] = set()
        while start.tobytes() not in seen:
            seen.add(start.tobytes())
            if progress is not None:
                progress.update(1)
            nu, drop = _solve_binding(d_star, d_mat, margin, start, tol)
            if drop is not None:
                start[drop] = False
                continue
            delta = d_star + d_mat @ nu
            viol = ~start & (delta < margin - tol)
            if not viol.any():
                return nu
            start[np.argmin(np.where(viol, delta, np.inf))] = True
    return None


def _well_conditioned(sub: np.ndarray) -> bool:
    """Whether D_SS is safely nonsingular: its LU condition estimate (LAPACK gecon, 1-norm) is below 1 / (10 n eps).

    The role matrix_rank had (an SVD: 6.8 s of a 1,999-pair solve), at the cost of one LU factorisation; a
    borderline matrix goes to the NNLS branch, which is correct for nonsingular matrices too.
    """
    from scipy.linalg import LinAlgWarning, lu_factor
    from scipy.linalg.lapack import dgecon

    n = sub.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LinAlgWarning)  # "diagonal number k is exactly zero": singular, rcond 0
        lu, _ = lu_factor(sub, check_finite=False)
    rcond, info = dgecon(lu, float(np.abs(sub).sum(axis=0).max()), norm="1")
    return info == 0 and rcond > 10 * n * np.finfo(float).eps


def _solve_binding(d_star: np.ndarray, d_mat: np.ndarray, margin: float, active: np.ndarray,
                   tol: float) -> tuple[np.ndarray, int | None]:
    """nu >= 0 supported on ``active`` with delta_S(nu) = m, or (_, k): pair k must leave the set."""
    nu = np.zeros_like(d_star)
    idx = np.flatnonzero(active)
    if idx.size == 0:
        return nu, None
    sub, rhs = d_mat[np.ix_(idx, idx)], margin - d_star[idx]
    if _well_conditioned(sub):
        x = np.linalg.solve(sub, rhs)
        if np.any(x < 0):
            return nu, int(idx[np.argmin(x)])
    else:
        x, _ = nnls(sub, rhs)
        resid = sub @ x - rhs
        if np.max(np.abs(resid)) > tol:
            return nu, int(idx[_pair_to_drop(sub, rhs, resid, tol)])
    nu[idx] = x
    return nu, None


def _pair_to_drop(sub: np.ndarray, rhs: np.ndarray, resid: np.ndarray, tol: float) -> int:
    """Which pair leaves a binding set S whose singular system D_SS nu = m - delta*_S has no solution >= 0.

    Inconsistent system (e.g. a triangle w > v > l plus w > l with m > 0: delta(w, l) = delta(w, v) +
    delta(v, l) cannot equal m on all three): take c = -(projection of rhs onto the left null space of
    D_SS). As c^T D_SS = 0, at the optimum (if S holds the support of nu)
    c^T (delta_S - m) = c^T (D_SS nu_S - rhs) = ||c||^2 > 0 with delta_S - m >= 0, so some pair with
    c_k > 0 is slack there: drop the one with the largest c_k (in the triangle, c > 0 only on w > l).
    Consistent but no nonnegative solution: the most negative multiplier of the least-norm solution,
    or if it has none, the pair the best nonnegative fit over-satisfies most.
    """
    u, sv, _ = np.linalg.svd(sub)
    null = u[:, sv <= sv[0] * sub.shape[0] * np.finfo(float).eps]
    c = -null @ (null.T @ rhs)
    if np.max(np.abs(c)) > tol:
        return int(np.argmax(c))
    x_ls = np.linalg.lstsq(sub, rhs, rcond=None)[0]
    return int(np.argmin(x_ls) if np.any(x_ls < 0) else np.argmax(resid))


def solve(inst: BanditInstance, method: str = "auto", solver: str = "CLARABEL",
          polish: bool = True, progress: bool = False) -> ConstrainedSolution:
    """Solve constrained RLHF for ``inst``; ``ConstrainedSolution.note`` says which method ran and why.

    method: "auto", "closed-form", "cvxpy", "dual". "auto" takes
      - the closed form for one pair;
      - else CVXPY with ``solver``, and when that solver fails (a SolverError, a bad status, or a
        non-finite answer; CLARABEL does on some chains with margins of 55-700, SCS on others) the
        dual solver, saying so in ``note``.
    An explicit method runs that method only. Every method first refuses, with
    :class:`UnresolvedInstanceError`, an instance whose r / beta float64 cannot resolve
    (:func:`resolution_problem`). The answer is exact in log space (``log_pi``) also where pi_c underflows;
    :func:`underflow_problem` says when it cannot be reported in probabilities (the ``solve`` command then does
    not). solver: the CVXPY solver, one of SOLVERS. polish: CVXPY only, see
    :meth:`ConstrainedRLHF.solve`. progress: show a tqdm bar on stderr for the dual's iterations.
    Raises InfeasiblePreferencesError for a cycle with margin > 0 (checked by graph search before any
    solver runs), ConstrainedSolveError when the chosen method fails.
    """
    if method not in METHODS:
        raise ValueError(f"method: must be one of {METHODS}, got {method!r}")
    check_feasible(inst.preferences, inst.K, inst.margin)
    p = len(inst.preferences)
    problem = resolution_problem(inst)
    if problem is not None:
        raise UnresolvedInstanceError(problem)
    if method == "closed-form" or (method == "auto" and p == 1):
        sol = solve_closed_form(inst)
        sol.note = "closed form (one pair)" if method == "closed-form" else "auto: one pair, so the exact closed form"
        return sol
    if method == "dual":
        sol = solve_dual(inst, progress=progress)
        sol.note = "dual (L-BFGS-B, then the exact active-set step)"
        return sol
    why = f"auto: {p} pairs have no closed form, so CVXPY ({solver}), the default for a graph"
    if progress and p >= 200:  # the CVXPY solvers report no progress of their own: say what runs
        print(f"solve: {p} pairs, {inst.K} responses: compiling and solving with CVXPY ({solver})...", file=sys.stderr,
              flush=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sol = compiled_problem(inst.K, inst.preferences).solve(inst, solver=solver, polish=polish)
        if not (np.all(np.isfinite(sol.pi)) and np.all(np.isfinite(sol.multipliers))):
            raise ConstrainedSolveError(f"{solver} returned a non-finite answer")
    except Exception as err:  # noqa: BLE001 - cvxpy.error.SolverError, a bad status, a solver's own exception
        if isinstance(err, InfeasiblePreferencesError) or method == "cvxpy":
            if isinstance(err, ConstrainedSolveError) or isinstance(err, InfeasiblePreferencesError):
                raise
            raise ConstrainedSolveError(f"{solver} failed: {' '.join(str(err).split())}") from err
        sol = solve_dual(inst, progress=progress)
        reason = " ".join(str(err).split())[:200]
        if not reason.startswith(solver):
            reason = f"{solver} failed: {reason}"
        sol.note = f"{why}; {reason}; so the dual solver instead"
        return sol
    sol.note = why if method == "auto" else f"cvxpy ({solver})"
    return sol


def price_by_objectives(inst: BanditInstance, pi_c: np.ndarray) -> float:
    """J(pi*) - J(pi_c) by evaluating J twice (a cross-check of the exact identity used elsewhere)."""
    pi_star = np.exp(log_gibbs_policy(inst.pi_ref, inst.reward, inst.beta))
    return float(rlhf_objective(pi_star, inst.pi_ref, inst.reward, inst.beta)
                 - rlhf_objective(pi_c, inst.pi_ref, inst.reward, inst.beta))
