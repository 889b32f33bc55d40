"""Maps of where DPO's optimum is misaligned: the phase diagram, the simplex region, violation rates, U_eps.

docs/theory.md §3, §4, §6, §7, §9a. Notation: one preference pair ``(y_w, y_l)``,
``delta_ref = log pi_ref(y_w) - log pi_ref(y_l)``, ``dr = r(y_w) - r(y_l)``,
``delta* = delta_ref + dr / beta`` (the Gibbs optimum's log-odds, docs/theory.md §1).

Reading used for "DPO's limit policy" in the phase diagram: the *population* reading (docs/theory.md §4a).
With BT labels ``q = sigma(dr)`` the DPO population loss is minimised at ``beta (delta - delta_ref) = dr``,
i.e. at ``delta*``; so DPO's limit policy is misaligned exactly where ``delta* < 0``. (Under the
ordered-pair reading §4b there is no finite limit: ``delta -> +inf``; see :mod:`toy_bandits.map_claims`.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# --------------------------------------------------------------------------------------------------
# (i) Phase diagram over (delta_ref, dr / beta)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PhaseDiagram:
    """Every array has shape (A, B) = (len(delta_ref_grid), len(dr_over_beta_grid)), indexing "ij".

    delta_ref, dr_over_beta: the grid coordinates (broadcast views, no copy).
    delta_star: delta_ref + dr/beta, the log-odds of the RLHF optimum pi* (docs/theory.md §1).
    assumption_fails: delta_ref + dr/beta <= 0 (negation of docs/theory.md §3's strict inequality).
    dpo_misaligned: population reading (§4a): the BT-labelled DPO minimiser has delta = delta* < 0.
    pi_star_in_U: delta_ref < delta* < 0 (pi* lies in the undesirable space, §6).
    delta_cpo: the log-odds of constrained RLHF with margin m (§9a, one pair), from the KKT multiplier:
        delta_c = delta* + (1 + e^m) mu / beta, mu / beta = max(0, (m - delta*) / (1 + e^m)).
    cpo_binding: the constraint is active (delta* < m): the CPO fix changes the answer.
    cpo_meets_margin: delta_c >= m (up to 1e-12 relative rounding of the KKT formula).
    margin: m >= 0.
    reading: "population" (the reading of dpo_misaligned).
    """

    delta_ref: np.ndarray
    dr_over_beta: np.ndarray
    delta_star: np.ndarray
    assumption_fails: np.ndarray
    dpo_misaligned: np.ndarray
    pi_star_in_U: np.ndarray
    delta_cpo: np.ndarray
    cpo_binding: np.ndarray
    cpo_meets_margin: np.ndarray
    margin: float
    reading: str = "population"


def _grid_1d(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 1:
        raise ValueError(f"{name} must be a non-empty 1-d array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def phase_diagram(delta_ref_grid, dr_over_beta_grid, margin: float = 0.0) -> PhaseDiagram:
    """The phase diagram of one preference pair over the plane (delta_ref, dr/beta). docs/theory.md §3, §6, §9a.

    delta_ref_grid: (A,) finite. dr_over_beta_grid: (B,) finite. margin: m >= 0 of constrained RLHF.
    Vectorised numpy (broadcasting; one pass per output array): a 1000 x 1000 grid takes a few
    hundredths of a second.
    """
    d = _grid_1d("delta_ref_grid", delta_ref_grid)[:, None]  # (A, 1)
    s = _grid_1d("dr_over_beta_grid", dr_over_beta_grid)[None, :]  # (1, B)
    if not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be finite and >= 0, got {margin!r}")
    shape = (d.shape[0], s.shape[1])
    delta_star = d + s  # (A, B)
    # KKT multiplier of the single-pair constraint (docs/theory.md §9a), divided by beta so that it lives on this plane.
    mu_over_beta = np.maximum(0.0, (margin - delta_star) / (1.0 + np.exp(margin)))
    delta_cpo = delta_star + (1.0 + np.exp(margin)) * mu_over_beta
    return PhaseDiagram(
        delta_ref=np.broadcast_to(d, shape),
        dr_over_beta=np.broadcast_to(s, shape),
        delta_star=delta_star,
        assumption_fails=delta_star <= 0,
        dpo_misaligned=delta_star < 0,
        pi_star_in_U=(d < delta_star) & (delta_star < 0),
        delta_cpo=delta_cpo,
        cpo_binding=delta_star < margin,
        cpo_meets_margin=delta_cpo >= margin - 1e-12 * max(1.0, margin),
        margin=float(margin),
    )


# --------------------------------------------------------------------------------------------------
# (ii) The 3-response simplex: DPO loss < log 2 but pi(y_w) < pi(y_l)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SimplexRegion:
    """Cell centroids of a uniform triangulation of the 3-simplex (n^2 congruent cells, equal area).

    points: (n^2, 3) policies; y_w = 0, y_l = 1, response 2 the third one.
    loss: (n^2,) DPO ordered-pair loss of each point (from :func:`dpo_rlhf_checks.losses.dpo_loss`).
    delta: (n^2,) log pi(y_w) - log pi(y_l).
    region: (n^2,) loss < log 2 and pi(y_w) < pi(y_l) (the set the paper warns about).
    in_U: (n^2,) delta_ref < delta < 0 (docs/theory.md §6), computed from delta alone.
    area_fraction: region.mean(); analytic_fraction: max(0, 1/2 - sigma(delta_ref)) (see
        :func:`analytic_region_fraction`); tolerance: 2/n, the share of cells two lines through a vertex cut.
    """

    points: np.ndarray
    loss: np.ndarray
    delta: np.ndarray
    region: np.ndarray
    in_U: np.ndarray
    delta_ref: float
    area_fraction: float
    analytic_fraction: float
    tolerance: float


def simplex_centroids(n: int) -> np.ndarray:
    """Centroids of the n^2 equal-area triangles of the 3-simplex cut into n parts per side, shape (n^2, 3).

    Upward cells (i, j), i + j <= n - 1, have centroid ((i + 1/3)/n, (j + 1/3)/n, .); downward cells,
    i + j <= n - 2, have ((i + 2/3)/n, (j + 2/3)/n, .). Every coordinate is >= 1/(3n) > 0.
    """
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    up = (i + j) <= n - 1
    down = (i + j) <= n - 2
    a = np.concatenate([(i[up] + 1 / 3) / n, (i[down] + 2 / 3) / n])
    b = np.concatenate([(j[up] + 1 / 3) / n, (j[down] + 2 / 3) / n])
    return np.stack([a, b, 1.0 - a - b], axis=1)


def analytic_region_fraction(delta_ref) -> np.ndarray:
    """Area share of the 3-simplex where delta_ref < log(pi_0/pi_1) < 0: ``max(0, 1/2 - sigma(delta_ref))``.

    Under the uniform (Dirichlet(1,1,1)) law on the simplex, pi_0/(pi_0 + pi_1) ~ Uniform(0, 1), and
    delta_ref < log(pi_0/pi_1) < 0 <=> sigma(delta_ref) < pi_0/(pi_0 + pi_1) < 1/2. The region is the
    wedge between two lines through the vertex of y_2; it does not depend on pi_ref(y_2).
    """
    d = np.asarray(delta_ref, dtype=np.float64)
    # 1/2 - sigma(d) = (1/2) tanh(-d/2): no cancellation near d = 0.
    return np.maximum(0.0, 0.5 * np.tanh(-d / 2.0))


def simplex_region(pi_ref, n: int = 300) -> SimplexRegion:
    """The region {pi : DPO loss(pi) < log 2, pi(y_w) < pi(y_l)} on the 3-simplex, y_w = 0, y_l = 1.

    pi_ref: (3,) full support, sums to 1. n: cells per side (n^2 cells). docs/theory.md §6 (ii), §7.
    The loss is the toolkit's :func:`dpo_rlhf_checks.losses.dpo_loss` with beta = 1 (the sign of
    l - log 2 does not depend on beta: l < log 2 <=> delta > delta_ref for every beta > 0).
    """
    import torch

    from dpo_rlhf_checks.losses import dpo_loss

    pi_ref = np.asarray(pi_ref, dtype=np.float64)
    if pi_ref.shape != (3,) or np.any(pi_ref <= 0) or abs(pi_ref.sum() - 1) > 1e-8:
        raise ValueError(f"pi_ref must be 3 positive numbers summing to 1, got {pi_ref}")
    pts = simplex_centroids(n)
    logp = np.log(pts)
    ref = np.broadcast_to(np.log(pi_ref), pts.shape)
    t = lambda x: torch.as_tensor(np.ascontiguousarray(x))  # noqa: E731
    loss = dpo_loss(t(logp[:, 0]), t(logp[:, 1]), t(ref[:, 0]), t(ref[:, 1]), beta=1.0).losses.numpy()
    delta = logp[:, 0] - logp[:, 1]
    delta_ref = float(np.log(pi_ref[0]) - np.log(pi_ref[1]))
    region = (loss < np.log(2.0)) & (pts[:, 0] < pts[:, 1])
    return SimplexRegion(points=pts, loss=loss, delta=delta, region=region,
                         in_U=(delta_ref < delta) & (delta < 0), delta_ref=delta_ref,
                         area_fraction=float(region.mean()),
                         analytic_fraction=float(analytic_region_fraction(delta_ref)), tolerance=2.0 / n)


# --------------------------------------------------------------------------------------------------
# (iii) How often the assumption fails for random instances
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ViolationRates:
    """Violation rate P(beta delta_ref + dr < 0) over a (beta, K) grid, by Monte Carlo and by quadrature.

    Distributions (one prompt = one instance): pi_ref ~ Dirichlet(a, ..., a) on K responses with
    a = concentration (a number, or "1/K"); rewards r(y) iid N(0, 1); one pair of distinct responses
    drawn uniformly; labelled by reward order (y_w the higher reward, so dr > 0). With dr > 0 a
    violation (assumption fails) is the same event as pi* in U.
    betas: (nb,); ks: (nk,); mc: (nb, nk) Monte-Carlo rates from n_samples draws each; mc_se: their
    standard errors; exact: (nb, nk) the quadrature value (:func:`violation_rate_quadrature`).
    """

    betas: np.ndarray
    ks: np.ndarray
    concentration: str
    n_samples: int
    seed: int
    mc: np.ndarray
    mc_se: np.ndarray
    exact: np.ndarray


def _concentration(concentration, k: int) -> float:
    if concentration == "1/K":
        return 1.0 / k
    value = float(concentration)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"concentration must be > 0 or '1/K', got {concentration!r}")
    return value


def random_pair_instances(n: int, k: int, rng: np.random.Generator, concentration="1"):
    """n random single-pair instances (distributions: :class:`ViolationRates`).

    Returns log_pi_ref (n, K) (normalised, log space), reward (n, K) iid N(0, 1), and the pair
    w, l (n,) of distinct responses drawn uniformly, labelled by reward order (y_w has the higher reward).
    Dirichlet draws are made in log space (log G = log Gamma(a + 1) + log(U)/a for G ~ Gamma(a)), so
    tiny concentrations (a = 1/K) never underflow to a zero probability.
    """
    from scipy.special import logsumexp

    if k < 2 or n < 1:
        raise ValueError(f"need K >= 2 and n >= 1; got {k}, {n}")
    a = _concentration(concentration, k)
    log_g = np.log(rng.gamma(a + 1.0, size=(n, k))) + np.log(rng.random((n, k))) / a  # (n, K) log Gamma(a) draws
    log_pi_ref = log_g - logsumexp(log_g, axis=1, keepdims=True)
    reward = rng.standard_normal((n, k))
    i = rng.integers(0, k, size=n)
    j = (i + rng.integers(1, k, size=n)) % k  # a distinct second response, uniform
    rows = np.arange(n)
    w = np.where(reward[rows, i] >= reward[rows, j], i, j)
    l = np.where(w == i, j, i)
    return log_pi_ref, reward, w, l


def violation_rate_mc(beta: float, k: int, n: int, rng: np.random.Generator, concentration="1") -> tuple[float, float]:
    """Monte-Carlo rate and standard error of ``beta delta_ref + dr < 0`` (distributions: :class:`ViolationRates`)."""
    if not (beta > 0 and np.isfinite(beta)):
        raise ValueError(f"need beta > 0, got {beta}")
    log_pi_ref, reward, w, l = random_pair_instances(n, k, rng, concentration)
    rows = np.arange(n)
    delta_ref = log_pi_ref[rows, w] - log_pi_ref[rows, l]
    dr = reward[rows, w] - reward[rows, l]
    hits = (beta * delta_ref + dr) < 0
    p = hits.mean()
    return float(p), float(np.sqrt(max(p * (1 - p), 1.0 / n) / n))


def violation_rate_quadrature(beta: float, k: int, concentration="1") -> float:
    """The same probability by one-dimensional quadrature.

    For a symmetric Dirichlet(a), pi(y_w)/(pi(y_w) + pi(y_l)) ~ Beta(a, a) independently of K (beyond a)
    and of the rewards; dr = |Z1 - Z2| ~ half-normal with scale sqrt 2. Hence
    P = int_0^inf I_{sigma(-x/beta)}(a, a) f_dr(x) dx, I the regularised incomplete beta function.
    For a = 1, I_s(1, 1) = s: P = E[sigma(-dr/beta)], the same for every K.
    """
    from scipy import integrate, special

    a = _concentration(concentration, k)

    def integrand(x):
        s = special.expit(-x / beta)
        return special.betainc(a, a, s) * np.sqrt(2 / np.pi) / np.sqrt(2) * np.exp(-x * x / 4.0)

    value, _ = integrate.quad(integrand, 0.0, np.inf, epsabs=1e-11, epsrel=1e-10, limit=200)
    return float(value)


def violation_rates(betas, ks, *, n_samples: int, seed: int, concentration="1") -> ViolationRates:
    """Monte Carlo and quadrature over the (beta, K) grid; seeded (one generator, fixed order)."""
    betas = _grid_1d("betas", betas)
    ks = np.asarray(ks, dtype=np.int64)
    rng = np.random.default_rng(seed)
    mc = np.zeros((betas.size, ks.size))
    se = np.zeros_like(mc)
    exact = np.zeros_like(mc)
    for a, beta in enumerate(betas):
        for b, k in enumerate(ks):
            mc[a, b], se[a, b] = violation_rate_mc(float(beta), int(k), n_samples, rng, concentration)
            exact[a, b] = violation_rate_quadrature(float(beta), int(k), concentration)
    return ViolationRates(betas, ks, str(concentration), n_samples, seed, mc, se, exact)


# --------------------------------------------------------------------------------------------------
# (iv) U_eps = {pi : l(pi) <= eps, pi(y_w) <= pi(y_l)}: a polytope; CVXPY
# --------------------------------------------------------------------------------------------------

def delta_at_loss(eps, delta_ref, beta) -> np.ndarray:
    """The log-odds where the DPO loss equals eps: ``delta_ref - log(e^eps - 1) / beta`` (docs/theory.md §7).

    l(pi) <= eps <=> delta_pi >= delta_at_loss(eps) (l is strictly decreasing in delta). eps > 0.
    ``log(expm1(eps))`` is written ``eps + log(-expm1(-eps))`` so it neither overflows for large eps
    nor loses digits for small eps.
    """
    eps = np.asarray(eps, dtype=np.float64)
    if np.any(eps <= 0):
        raise ValueError(f"eps must be > 0 (the DPO loss is > 0), got {eps}")
    return delta_ref - (eps + np.log(-np.expm1(-eps))) / beta


def pair_target_policy(pi_ref, reward, beta: float, w: int, l: int, target: float) -> np.ndarray:
    """argmax J(pi) subject to delta_pi = target (one pair), by KKT: pi ∝ pi_ref exp((r + nu a)/beta).

    a(y_w) = 1, a(y_l) = -e^target, a = 0 elsewhere, nu = beta (target - delta*) / (1 + e^target);
    this is docs/theory.md §9a's closed form with the margin ``target`` (any real number) and the multiplier
    allowed either sign. reward = 0, beta = 1 gives the I-projection (KL-closest policy to pi_ref).
    Log space throughout.
    """
    from scipy.special import logsumexp

    pi_ref = np.asarray(pi_ref, dtype=np.float64)
    reward = np.asarray(reward, dtype=np.float64)
    log_ref = np.log(pi_ref)
    delta_star = log_ref[w] - log_ref[l] + (reward[w] - reward[l]) / beta
    nu = beta * (target - delta_star) / (1.0 + np.exp(target))
    a = np.zeros_like(pi_ref)
    a[w], a[l] = 1.0, -np.exp(target)
    logits = log_ref + (reward + nu * a) / beta
    return np.exp(logits - logsumexp(logits))


@dataclass
class UEpsSolution:
    """One eps: whether U_eps holds a policy, the RLHF-best and the KL-closest policy in it (CVXPY).

    nonempty: max pi(y_w) + pi(y_l) over the polytope is > 1/2 (it is 1 or 0: for c(eps) > 1 the only
        points are pi(y_w) = pi(y_l) = 0, where delta and the loss are undefined: no policy of U).
    best: argmax J over U_eps (None when empty); closest: argmin KL(pi || pi_ref) over U_eps.
    status: the CVXPY statuses of the three programs.
    """

    eps: float
    c: float
    nonempty: bool
    best: np.ndarray | None
    closest: np.ndarray | None
    status: tuple[str, ...]


# Tighter than the solvers' defaults (about 1e-5 on the policy): the checks compare with closed forms at 1e-6.
_SOLVER_OPTIONS = {
    "CLARABEL": {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11, "tol_ktratio": 1e-9},
    "SCS": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200000},
}


class UEpsProblem:
    """Three convex programs over U_eps for one pair of one instance, eps swept through ``cp.Parameter``s.

    A tool, not an independent check of the loss-to-delta bridge: the polytope's coefficient c comes from the
    closed-form inverse :func:`delta_at_loss`. The ``undesirable-space`` claim's convex method
    (``toy_bandits.map_claims.undesirable_space_convex``) minimises the loss over log-policies instead.

    With c = exp(delta_at_loss(eps)) (docs/theory.md §7), U_eps is the polytope

        { pi : sum pi = 1, pi >= 0, pi(y_w) >= c pi(y_l), pi(y_w) <= pi(y_l) }.

    feasibility (LP):  maximise pi(y_w) + pi(y_l) over it;
    best:              maximise sum_y pi r - beta sum_y rel_entr(pi, pi_ref) over it;
    closest:           minimise sum_y rel_entr(pi, pi_ref) over it.
    solver: a CVXPY solver name ("CLARABEL" or "SCS"); status is checked, a non-optimal one raises.
    """

    def __init__(self, pi_ref, reward, beta: float, w: int, l: int, solver: str = "CLARABEL"):
        import cvxpy as cp

        self.pi_ref = np.asarray(pi_ref, dtype=np.float64)
        self.reward = np.asarray(reward, dtype=np.float64)
        if self.pi_ref.ndim != 1 or self.pi_ref.shape != self.reward.shape or np.any(self.pi_ref <= 0):
            raise ValueError("pi_ref (K,) > 0 and reward (K,) must have the same shape")
        if not (beta > 0) or w == l or not (0 <= w < self.pi_ref.size and 0 <= l < self.pi_ref.size):
            raise ValueError(f"need beta > 0 and distinct indices w, l in [0, K); got {beta}, {w}, {l}")
        if solver not in ("CLARABEL", "SCS"):
            raise ValueError(f"solver must be 'CLARABEL' or 'SCS', got {solver!r}")
        self.beta, self.w, self.l, self.solver = float(beta), int(w), int(l), solver
        self.delta_ref = float(np.log(self.pi_ref[w]) - np.log(self.pi_ref[l]))
        # pi(y_w) >= c pi(y_l) is written a pi(y_w) >= b pi(y_l) with (a, b) = (1, c) for c <= 1 and (1/c, 1)
        # for c > 1: both coefficients stay in [0, 1] however large c = exp(delta_at_loss(eps)) gets.
        self.a = cp.Parameter(nonneg=True)
        self.b = cp.Parameter(nonneg=True)
        self.log_c = 0.0
        pi = cp.Variable(self.pi_ref.size, nonneg=True)
        cons = [cp.sum(pi) == 1, self.a * pi[w] >= self.b * pi[l], pi[w] <= pi[l]]
        kl = cp.sum(cp.rel_entr(pi, self.pi_ref))
        self._pi = pi
        self._feas = cp.Problem(cp.Maximize(pi[w] + pi[l]), cons)
        self._best = cp.Problem(cp.Maximize(self.reward @ pi - self.beta * kl), cons)
        self._closest = cp.Problem(cp.Minimize(kl), cons)

    def _solve(self, problem, lp: bool = False) -> str:
        import cvxpy as cp

        # The feasibility LP is a 0-or-1 decision: the solver's default tolerances suffice (tight ones make the
        # degenerate LP at c ~ 1, where the feasible set collapses to a face, fail to converge).
        try:
            problem.solve(solver=self.solver, **({} if lp else _SOLVER_OPTIONS[self.solver]))
        except cp.error.SolverError as err:
            raise RuntimeError(f"U_eps program: {self.solver} failed at log c = {self.log_c:.6g}: {err}") from None
        if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            raise RuntimeError(f"U_eps program ended with status {problem.status!r} ({self.solver})")
        return problem.status

    def set_eps(self, eps: float) -> None:
        """Set the parameters for the loss level eps > 0 (log c = delta_at_loss(eps))."""
        self.log_c = float(delta_at_loss(eps, self.delta_ref, self.beta))
        if self.log_c <= 0:
            self.a.value, self.b.value = 1.0, float(np.exp(self.log_c))
        else:
            self.a.value, self.b.value = float(np.exp(-self.log_c)), 1.0

    def nonempty(self, eps: float) -> bool:
        self.set_eps(eps)
        self._solve(self._feas, lp=True)
        return bool(self._feas.value > 0.5)

    def solve(self, eps: float) -> UEpsSolution:
        nonempty = self.nonempty(eps)
        statuses = [self._feas.status]
        best = closest = None
        if nonempty:
            statuses.append(self._solve(self._best))
            best = np.clip(self._pi.value, 0, None).copy()
            statuses.append(self._solve(self._closest))
            closest = np.clip(self._pi.value, 0, None).copy()
        return UEpsSolution(float(eps), float(np.exp(self.log_c)), nonempty, best, closest, tuple(statuses))

    def emptiness_boundary(self, tol: float = 1e-10) -> float:
        """The smallest eps with U_eps non-empty, by bisection on the LP (bracket found by doubling/halving)."""
        lo, hi = 1e-3, 1.0
        while self.nonempty(lo):
            lo /= 4
            if lo < 1e-12:
                return 0.0
        while not self.nonempty(hi):
            hi *= 2
            if hi > 1e6:
                raise RuntimeError("U_eps empty for every eps tried")
        while hi - lo > tol * max(1.0, hi):
            mid = 0.5 * (lo + hi)
            if self.nonempty(mid):
                hi = mid
            else:
                lo = mid
        return 0.5 * (lo + hi)
