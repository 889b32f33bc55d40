"""The empirical ordered-pair DPO loss on a labelled comparison multigraph over one prompt's responses.

docs/theory.md §13. Responses ``0..K-1``; labels ``(i, j, n_ij)``: ``n_ij >= 1`` annotators preferred
``i`` over ``j`` (repeats add up; both orders may appear: contradictory labels). With
``u = log pi - log pi_ref`` (defined up to an additive constant, since ``log pi`` is normalised) and
``h_ij = u_i - u_j = delta_ij - delta_ref_ij``, the loss is

    L(u) = sum_{(i, j)} n_ij softplus(-beta h_ij),

i.e. minus the Bradley-Terry log-likelihood of the labels with scores ``theta = beta u``. So the
empirical DPO minimiser is the BT maximum-likelihood estimate scaled by ``1/beta``, and its existence
is the classical condition (Zermelo 1929; Ford 1957): in every weakly connected component of the
*win graph* (an edge ``i -> j`` when ``n_ij >= 1``) every response can reach every other along
wins, i.e. the component is strongly connected. When it is not, the infimum of ``L`` is not
attained: ``h -> +inf`` on every labelled pair between two different strongly connected components
(SCCs), while ``h`` on pairs inside one SCC converges to that SCC's own BT MLE.

Three computations of the minimiser, meant to be checked against each other:
- :func:`empirical_minimiser`: the graph condition (SCCs) plus Newton's method on each SCC (the
  library answer; ``solve`` prints it);
- :func:`cvx_empirical_minimiser`: CVXPY, with "unbounded" as a typed outcome read off CVXPY's own
  status on the recession-cone LP, and ``cp.logistic`` on the loss;
- :func:`bt_mm_fit`: Zermelo's / Hunter's MM iteration for the BT MLE, which neither solves a convex
  program nor looks at the graph.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import expit

# ---------------------------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


_MAX_COUNT = int(np.finfo(np.float64).max)


def merge_labels(labels: Iterable, K: int, field_name: str = "labels") -> dict[tuple[int, int], int]:  # noqa: N803
    """Validate ``[[winner, loser, count], ...]`` and add up repeats: ``{(winner, loser): n}``, first-seen order.

    winner, loser: integer indices in [0, K), different. count: a whole number >= 1 (an int, or a float
    with no fractional part such as 2.0). Any violation is a ``ValueError`` starting with ``field_name``.
    """
    if not _is_int(K) or K < 2:
        raise ValueError(f"K: must be an integer >= 2, got {K!r}")
    if isinstance(labels, (str, bytes, dict)) or not hasattr(labels, "__iter__"):
        raise ValueError(f"{field_name}: must be a list of [winner, loser, count] triples, got {labels!r}")
    out: dict[tuple[int, int], int] = {}
    for k, item in enumerate(labels):
        if isinstance(item, (str, bytes, dict)) or not hasattr(item, "__len__") or len(item) != 3:
            raise ValueError(f"{field_name}[{k}]: must be a [winner, loser, count] triple, got {item!r}")
        w, l, n = item
        for name, v in (("winner", w), ("loser", l)):
            if not _is_int(v):
                raise ValueError(f"{field_name}[{k}]: {name} must be an integer index, got {v!r}")
            if not 0 <= v < K:
                raise ValueError(f"{field_name}[{k}]: {name} index {v} is out of range [0, {K})")
        if w == l:
            raise ValueError(f"{field_name}[{k}]: self-pair ({w}, {l}) compares a response with itself")
        # an int is whole as it is (np.isfinite rejected a Python int past int64 with a TypeError); a float must be
        # finite and whole
        whole = _is_int(n) or (isinstance(n, (float, np.floating)) and bool(np.isfinite(n)) and float(n) == int(n))
        if not whole or n < 1:
            raise ValueError(f"{field_name}[{k}]: count must be a whole number >= 1, got {n!r}")
        key = (int(w), int(l))
        out[key] = out.get(key, 0) + int(n)
        if out[key] > _MAX_COUNT:  # the solvers work in float64
            raise ValueError(f"{field_name}[{k}]: the count of pair ({w}, {l}) passes the largest float64 "
                             f"({float(_MAX_COUNT):.3g})")
    if not out:
        raise ValueError(f"{field_name}: must hold at least one [winner, loser, count] triple")
    return out


def _arrays(labels: dict[tuple[int, int], int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = np.array([p[0] for p in labels], dtype=np.int64)
    l = np.array([p[1] for p in labels], dtype=np.int64)
    n = np.array(list(labels.values()), dtype=np.float64)
    return w, l, n


def empirical_dpo_loss(log_pi, log_pi_ref, labels: dict[tuple[int, int], int], beta: float) -> float:
    """L = sum n_ij softplus(-beta h_ij), h_ij = (log pi(i) - log pi(j)) - (log pi_ref(i) - log pi_ref(j)). §13.

    log_pi, log_pi_ref: (K,) finite log-probabilities. labels: from :func:`merge_labels`. beta > 0.
    """
    u = np.asarray(log_pi, dtype=np.float64) - np.asarray(log_pi_ref, dtype=np.float64)
    w, l, n = _arrays(labels)
    # logaddexp(0, x) is softplus(x) without overflow for large x.
    return float(np.sum(n * np.logaddexp(0.0, -beta * (u[w] - u[l]))))


# ---------------------------------------------------------------------------------------------------------------
# Graph structure: the existence condition
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WinGraph:
    """The structure of the win graph of a label set.

    scc: (K,) strongly connected component of each response. weak: (K,) weakly connected component.
    finite: True iff every weak component is one SCC (then L has a finite minimiser).
    divergent: labelled pairs (winner, loser) joining two different SCCs (h -> +inf along every minimising
        sequence); empty iff ``finite``.
    order: (K,) a level of each SCC in the condensation DAG (a winner's SCC has a higher level than its loser's).
    """

    scc: np.ndarray
    weak: np.ndarray
    finite: bool
    divergent: tuple[tuple[int, int], ...]
    order: np.ndarray


def win_graph(labels: dict[tuple[int, int], int], K: int) -> WinGraph:  # noqa: N803
    """SCCs and weak components of the win graph (scipy.sparse.csgraph), and the pairs that diverge."""
    w, l, _ = _arrays(labels)
    adj = csr_matrix((np.ones(w.size), (w, l)), shape=(K, K))
    _, scc = connected_components(adj, directed=True, connection="strong")
    _, weak = connected_components(adj, directed=True, connection="weak")
    divergent = tuple((int(a), int(b)) for a, b in zip(w, l) if scc[a] != scc[b])
    # level of each SCC in the condensation DAG: longest path from a sink (losers lower than winners)
    n_scc = int(scc.max()) + 1
    level = np.zeros(n_scc, dtype=np.int64)
    for _ in range(n_scc):  # Bellman-Ford style relaxation; the condensation is a DAG of n_scc nodes
        for a, b in divergent:
            level[scc[a]] = max(level[scc[a]], level[scc[b]] + 1)
    # every weak component is one SCC iff no labelled pair joins two SCCs
    return WinGraph(scc=scc, weak=weak, finite=not divergent, divergent=divergent, order=level[scc])


def minimiser_exists(labels: dict[tuple[int, int], int], K: int) -> bool:  # noqa: N803
    """True iff the empirical ordered-pair DPO loss has a finite minimiser (every weak component strongly connected)."""
    return win_graph(labels, K).finite


# ---------------------------------------------------------------------------------------------------------------
# The library answer: graph condition + Newton per SCC
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmpiricalOptimum:
    """The empirical ordered-pair DPO minimiser (or the limit of every minimising sequence).

    status: "finite" (a finite minimiser exists) or "unbounded" (the infimum is not attained: some
        ``h -> +inf``; "unbounded" names the minimiser, the loss itself stays >= 0).
    u: (K,) log pi - log pi_ref at the minimiser, each SCC's mean set to 0; where unbounded, the
        within-SCC part of the limit (between SCCs it is meaningless and set to 0 per SCC mean).
    h: {(winner, loser): h or None}: h = delta - delta_ref for each labelled pair; None where h -> +inf.
    divergent: pairs with h -> +inf. scc: SCC index per response.
    loss: the infimum of L (attained iff finite).
    """

    status: str
    u: np.ndarray
    h: dict[tuple[int, int], float | None]
    divergent: tuple[tuple[int, int], ...]
    scc: np.ndarray
    loss: float
    info: dict[str, Any] = field(default_factory=dict)


def _newton_scores(w: np.ndarray, l: np.ndarray, n: np.ndarray, comp: np.ndarray, K: int,  # noqa: N803
                   tol: float = 1e-13, max_iter: int = 200) -> tuple[np.ndarray, float]:
    """argmin_theta sum n softplus(-(theta_w - theta_l)) on a graph whose weak components are strongly connected.

    Damped Newton in theta with each component's mean pinned to 0 (the Hessian is a weighted Laplacian, singular
    along the per-component constants: solved with lstsq, which returns the minimum-norm step). Returns theta and
    the final gradient's max-norm.
    """
    theta = np.zeros(K)

    def f(t):
        return float(np.sum(n * np.logaddexp(0.0, -(t[w] - t[l]))))

    gmax, gtol = np.inf, tol * max(1.0, float(n.sum()))
    for _ in range(max_iter):
        x = theta[w] - theta[l]
        # n sigma(-x) with sigma from expit: 1 - tanh(x/2) lost every digit past x ~ 30 (1e12:1 counts gave h off by
        # 0.025, 1e14:1 by 2.1)
        s = n * expit(-x)
        grad = np.zeros(K)
        np.add.at(grad, w, -s)
        np.add.at(grad, l, s)
        gmax = float(np.max(np.abs(grad))) if grad.size else 0.0
        c = n * expit(x) * expit(-x)  # n sigma(x) sigma(-x)
        hess = np.zeros((K, K))
        np.add.at(hess, (w, w), c)
        np.add.at(hess, (l, l), c)
        np.add.at(hess, (w, l), -c)
        np.add.at(hess, (l, w), -c)
        step = -np.linalg.lstsq(hess, grad, rcond=None)[0]
        f0, t, slope = f(theta), 1.0, float(grad @ step)
        if -slope <= 1e-15 * max(1.0, abs(f0)):
            theta = theta + step  # the predicted decrease is below rounding: a plain Newton step (quadratic regime)
            # converged: the gradient small against the counts AND the Newton decrement below rounding (a gradient of
            # 0.03 against 1e12 labels alone left h 0.025 off: the pair with one label has curvature 1, not 1e12; a
            # step-size test instead never stops where rounding keeps the step at ~1e-9, e.g. 1e8 labels)
            if gmax <= gtol:
                break
            continue
        while f(theta + t * step) > f0 + 1e-4 * t * slope and t > 1e-12:
            t *= 0.5
        theta = theta + t * step
    else:
        raise ArithmeticError(f"the empirical minimiser's Newton iteration did not converge in {max_iter} steps (max "
                              f"gradient {gmax:.3g}, tolerance {gtol:.3g}, over "
                              f"{float(n.sum()):.3g} labels): the counts are too lopsided for this solver (a response "
                              "whose comparisons are almost all one-sided has almost no curvature)")
    for c_id in np.unique(comp):
        theta[comp == c_id] -= theta[comp == c_id].mean()
    return theta, gmax


def empirical_minimiser(labels: dict[tuple[int, int], int], K: int, beta: float) -> EmpiricalOptimum:  # noqa: N803
    """The empirical ordered-pair DPO minimiser by the graph condition and Newton's method. §13.

    labels: from :func:`merge_labels`; K >= 2; beta > 0, finite. Within each SCC the minimiser of the
    within-SCC labels is finite and unique up to a constant; pairs between SCCs have h -> +inf.
    """
    if not (np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta: must be finite and > 0, got {beta}")
    g = win_graph(labels, K)
    inside = {p: c for p, c in labels.items() if g.scc[p[0]] == g.scc[p[1]]}
    if inside:
        w, l, n = _arrays(inside)
        theta, gmax = _newton_scores(w, l, n, g.scc, K)
    else:
        theta, gmax = np.zeros(K), 0.0
    for c_id in np.unique(g.scc):
        theta[g.scc == c_id] -= theta[g.scc == c_id].mean()
    u = theta / beta
    h = {p: (None if p in g.divergent else float(u[p[0]] - u[p[1]])) for p in labels}
    if inside:
        w, l, n = _arrays(inside)
        loss = float(np.sum(n * np.logaddexp(0.0, -(theta[w] - theta[l]))))
    else:
        loss = 0.0
    return EmpiricalOptimum(status="finite" if g.finite else "unbounded", u=u, h=h, divergent=g.divergent,
                            scc=g.scc, loss=loss, info={"newton_grad_max": gmax})


def unbounded_sentence(opt: EmpiricalOptimum, labels: dict[tuple[int, int], int]) -> str | None:
    """A sentence naming the responses and pairs that make the minimiser infinite; None when it is finite."""
    if opt.status == "finite":
        return None
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(opt.scc):
        groups.setdefault(int(c), []).append(i)
    involved = sorted({int(opt.scc[i]) for p in opt.divergent for i in p})
    parts = ", ".join("{" + ", ".join(str(i) for i in groups[c]) + "}" for c in involved)
    pairs = ", ".join(f"({a}, {b})" for a, b in opt.divergent)
    return (f"no finite minimiser: the win graph is not strongly connected within its components "
            f"(strongly connected groups {parts}); no response of a losing group ever beats its winner, so "
            f"h = delta - delta_ref -> +inf on the pair(s) {pairs} and the loss only approaches its infimum "
            f"{opt.loss:.6g}")


# ---------------------------------------------------------------------------------------------------------------
# CVXPY: unbounded as a typed outcome
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CvxOutcome:
    """CVXPY's answer. status: "finite" or "unbounded" (CVXPY's own status on the recession LP).

    lp_status: CVXPY's status string of the recession LP. theta: (K,) beta u on the finite part (per-SCC
    constants free, set by pinning). divergent: pairs that a recession direction separates strictly.
    """

    status: str
    lp_status: str
    theta: np.ndarray
    divergent: tuple[tuple[int, int], ...]
    solver_status: str


def cvx_empirical_minimiser(labels: dict[tuple[int, int], int], K: int, solver: str = "CLARABEL") -> CvxOutcome:  # noqa: N803
    """Existence by the recession-cone LP, then the minimiser by CVXPY's exponential cone (theta = beta u).

    (1) Recession LP:  maximise  sum_e n_e (d_w - d_l)  s.t.  d_w - d_l >= 0 for every labelled e.
        L decreases without end along d iff this LP is unbounded (CVXPY status "unbounded"): a typed outcome.
    (2) Which pairs diverge: maximise sum_e t_e s.t. t_e <= d_w - d_l, t_e <= 1, d_w - d_l >= 0, 0 <= d <= K;
        a pair with t_e > 1/2 is separated by some recession direction.
    (3) On the pairs that do not diverge:  minimise  sum_e n_e logistic(-(theta_w - theta_l)),
        theta_0 of each weak component of those pairs pinned to 0.
    """
    import cvxpy as cp

    w, l, n = _arrays(labels)
    d = cp.Variable(K)
    lp = cp.Problem(cp.Maximize(n @ (d[w] - d[l])), [d[w] - d[l] >= 0])
    lp.solve(solver=solver)
    lp_status = lp.status
    if lp_status not in (cp.OPTIMAL, cp.UNBOUNDED, cp.OPTIMAL_INACCURATE, cp.UNBOUNDED_INACCURATE):
        raise RuntimeError(f"recession LP: unexpected CVXPY status {lp_status!r}")
    unbounded = lp_status in (cp.UNBOUNDED, cp.UNBOUNDED_INACCURATE)
    divergent: tuple[tuple[int, int], ...] = ()
    keep = np.ones(w.size, dtype=bool)
    if unbounded:
        t = cp.Variable(w.size)
        lp2 = cp.Problem(cp.Maximize(cp.sum(t)), [t <= d[w] - d[l], t <= 1, d[w] - d[l] >= 0, d >= 0, d <= K])
        lp2.solve(solver=solver)
        keep = np.asarray(t.value) <= 0.5
        divergent = tuple((int(a), int(b)) for a, b, k in zip(w, l, keep) if not k)
    theta = np.zeros(K)
    solver_status = "no pairs"
    if keep.any():
        wk, lk, nk = w[keep], l[keep], n[keep]
        adj = csr_matrix((np.ones(wk.size), (wk, lk)), shape=(K, K))
        _, comp = connected_components(adj, directed=True, connection="weak")
        th = cp.Variable(K)
        pins = [th[int(np.flatnonzero(comp == c)[0])] == 0 for c in np.unique(comp)]
        prob = cp.Problem(cp.Minimize(nk @ cp.logistic(-(th[wk] - th[lk]))), pins)
        # tight tolerances (as toy_bandits.constrained uses for CLARABEL): the defaults leave ~1e-4 in theta
        tight = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}
        with warnings.catch_warnings():  # at these tolerances CLARABEL may stop at "optimal_inaccurate" (accepted)
            warnings.simplefilter("ignore", UserWarning)
            prob.solve(solver=solver, **(tight if solver == "CLARABEL" else {}))
        solver_status = prob.status
        if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            raise RuntimeError(f"logistic program: unexpected CVXPY status {prob.status!r}")
        theta = np.asarray(th.value, dtype=np.float64)
        for c in np.unique(comp):
            theta[comp == c] -= theta[comp == c].mean()
    return CvxOutcome(status="unbounded" if unbounded else "finite", lp_status=lp_status, theta=theta,
                      divergent=divergent, solver_status=solver_status)


# ---------------------------------------------------------------------------------------------------------------
# Zermelo / Hunter MM: the BT MLE by an iteration that neither solves a program nor reads the graph
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MMFit:
    """BT MLE by the MM iteration. converged: the gradient of the log-likelihood fell below ``tol`` (a stationary
    point of a convex function: a finite minimiser exists). theta: (K,) log-strengths, mean 0.
    spread: max theta - min theta at the checkpoints ``iters`` (grows without end when no MLE exists)."""

    converged: bool
    theta: np.ndarray
    grad_max: float
    iterations: int
    spread: tuple[float, ...]
    iters: tuple[int, ...]


def bt_mm_fit(labels: dict[tuple[int, int], int], K: int, *, max_iter: int = 20000, tol: float = 1e-10) -> MMFit:  # noqa: N803
    """Zermelo's iteration (Hunter 2004, MM):  p_i <- W_i / sum_j N_ij / (p_i + p_j),  renormalised.

    W_i: wins of i; N_ij = n_ij + n_ji comparisons. Iterated in log space (p = exp(theta), theta shifted to
    max 0 each step so nothing overflows). A response with no wins has W_i = 0: p_i -> 0 (theta -> -inf); the
    fit then reports converged=False.
    """
    wins = np.zeros(K)
    comps = np.zeros((K, K))
    for (a, b), c in labels.items():
        wins[a] += c
        comps[a, b] += c
        comps[b, a] += c
    theta = np.zeros(K)
    spread, iters = [], []
    grad_max = np.inf
    it = 0
    checkpoints = {max_iter // 8, max_iter // 4, max_iter // 2, max_iter}
    for it in range(1, max_iter + 1):
        # sum_j N_ij / (p_i + p_j) in log space: N_ij exp(-logaddexp(theta_i, theta_j))
        denom = (comps * np.exp(-np.logaddexp(theta[:, None], theta[None, :]))).sum(axis=1)
        with np.errstate(divide="ignore"):
            new = np.log(wins) - np.log(np.where(denom > 0, denom, 1.0))
        new = np.where(denom > 0, new, theta)  # an uncompared response stays where it is
        new = np.maximum(new - new[np.isfinite(new)].max(), -700.0)  # keep exp() representable
        theta = new
        if it % 50 == 0 or it == max_iter or theta.min() <= -699.0:
            x = theta[:, None] - theta[None, :]
            grad = wins - (comps * 0.5 * (1.0 + np.tanh(x / 2.0))).sum(axis=1)  # W_i - sum_j N_ij sigma(x_ij)
            grad_max = float(np.abs(grad).max())
            if it in checkpoints:
                spread.append(float(theta.max() - theta.min()))
                iters.append(it)
            if theta.min() <= -699.0:
                break  # a strength reached 0 (exp(-700) relative): the MLE does not exist
            if grad_max <= tol * max(1.0, wins.sum()):
                break
    converged = bool(grad_max <= tol * max(1.0, wins.sum()) and theta.min() > -699.0)
    spread.append(float(theta.max() - theta.min()))
    iters.append(it)
    return MMFit(converged=converged, theta=theta - theta.mean(), grad_max=grad_max, iterations=it,
                 spread=tuple(spread), iters=tuple(iters))


# ---------------------------------------------------------------------------------------------------------------
# Named graphs for the checks
# ---------------------------------------------------------------------------------------------------------------


def named_graphs() -> dict[str, tuple[int, list[list[int]]]]:
    """Label sets with a known structure: name -> (K, [[winner, loser, count], ...])."""
    return {
        "single pair": (2, [[0, 1, 1]]),
        "repeated pair": (2, [[0, 1, 5]]),
        "contradictory repeats 3:1": (2, [[0, 1, 3], [1, 0, 1]]),
        "chain 0>1>2": (3, [[0, 1, 1], [1, 2, 1]]),
        "DAG 0>1, 0>2, 1>2": (3, [[0, 1, 2], [0, 2, 1], [1, 2, 1]]),
        "3-cycle 0>1>2>0 (2,1,1)": (3, [[0, 1, 2], [1, 2, 1], [2, 0, 1]]),
        "cycle plus a tail 3 loses to 2": (4, [[0, 1, 1], [1, 2, 1], [2, 0, 1], [2, 3, 2]]),
        "two components: 0<>1 and 2>3": (4, [[0, 1, 2], [1, 0, 1], [2, 3, 1]]),
        "pooled: 0~1 tied, 0>>2, 2>>1": (3, [[0, 1, 1], [1, 0, 1], [0, 2, 3], [2, 0, 1], [2, 1, 3], [1, 2, 1]]),
    }


def random_labels(rng: np.random.Generator, K: int, n_edges: int, max_count: int = 4) -> list[list[int]]:  # noqa: N803
    """Random label triples on K responses (any structure: DAGs, cycles, contradictions, components)."""
    out = []
    for _ in range(n_edges):
        a, b = rng.choice(K, size=2, replace=False)
        out.append([int(a), int(b), int(rng.integers(1, max_count + 1))])
    return out
