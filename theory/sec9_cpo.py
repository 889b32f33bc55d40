"""docs/theory.md §9 (paper Sec. 4, Eq. 10-16): constrained RLHF (KKT closed form), the penalised objective Eq. 10
as printed, and the adaptive margin at its stationary points. Methods of ``cpo-constrained-kkt``,
``cpo-penalized-eq10`` and ``cpo-stationary-margin`` (their convex and general-K numeric methods live in
:mod:`toy_bandits.solver_claims`)."""

from __future__ import annotations

import math

import numpy as np
import sympy as sp
from scipy.optimize import brentq
from scipy.special import logsumexp

from dpo_rlhf_checks.registry import get_claim
from dpo_rlhf_checks.result import CheckContext, MethodResult
from theory import derivations as D
from theory import symbols as S
from theory.common import DEP_J_NP, DEP_SYMPY_J, TOL_IDENTITY, TOL_KKT, holds_only, n_for, proofs, rng_for, wmax

DEP_CLOSED_FORM = "theory.sec9_cpo.constrained_single_pair"


def constrained_single_pair(log_pi_ref: np.ndarray, rewards: np.ndarray, beta: float, m: float, w: int = 0,
                            l: int = 1) -> tuple[np.ndarray, float]:
    """Closed-form solution of max J(pi) s.t. log pi(y_w) - log pi(y_l) >= m (docs/theory.md §9a).

    log_pi_ref, rewards: (K,), pi_ref full support. beta > 0, m >= 0. Returns (log pi_c, mu) with
    mu = max(0, (beta m - beta delta_ref - dr) / (1 + e^m)) and pi_c ∝ pi_ref exp((r + mu a)/beta),
    a(y_w) = 1, a(y_l) = -e^m. Log space throughout (logsumexp).
    """
    log_pi_ref = np.asarray(log_pi_ref, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64)
    if log_pi_ref.shape != rewards.shape or log_pi_ref.ndim != 1 or log_pi_ref.size < 2:
        raise ValueError(f"log_pi_ref and rewards must have the same shape (K,), K >= 2; got {log_pi_ref.shape}, "
                         f"{rewards.shape}")
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    if not (m >= 0 and math.isfinite(m)):
        raise ValueError(f"m must be a finite number >= 0, got {m!r}")
    if w == l:
        raise ValueError("y_w and y_l must differ")
    dref = log_pi_ref[w] - log_pi_ref[l]
    dr = rewards[w] - rewards[l]
    mu = max(0.0, (beta * m - beta * dref - dr) / (1 + math.exp(m)))
    a = np.zeros_like(rewards)
    a[w], a[l] = 1.0, -math.exp(m)
    logits = log_pi_ref + (rewards + mu * a) / beta
    return logits - logsumexp(logits), mu


def kkt_residuals(log_pi: np.ndarray, mu: float, log_pi_ref: np.ndarray, rewards: np.ndarray, beta: float, m: float,
                  w: int = 0, l: int = 1) -> dict:
    """KKT residuals of the linear-form problem at (pi, mu), each relative to max(1, |r|, mu e^m).

    stationarity: spread over y of r(y) + mu a(y) - beta log(pi(y)/pi_ref(y)) (must be one constant, the
    multiplier of sum pi = 1); primal: max(0, m - delta); dual: max(0, -mu); slackness: |mu (delta - m)|.
    """
    a = np.zeros_like(rewards)
    a[w], a[l] = 1.0, -math.exp(m)
    v = rewards + mu * a - beta * (log_pi - log_pi_ref)
    scale = max(1.0, float(np.abs(rewards).max()), mu * math.exp(m), beta * float(np.abs(log_pi - log_pi_ref).max()))
    delta = log_pi[w] - log_pi[l]
    return {"stationarity": float(v.max() - v.min()) / scale, "primal": max(0.0, m - delta) / max(1.0, abs(m)),
            "dual": max(0.0, -mu), "slackness": abs(mu * (delta - m)) / scale, "active": mu > 0}


def penalised_objective(pi: np.ndarray, rewards: np.ndarray, pi_ref: np.ndarray, beta: float, gamma: float,
                        w: int = 0, l: int = 1) -> float:
    """Eq. 10: F(pi) = J(pi) + gamma (log pi(y_w) - log pi(y_l)). pi on the open simplex."""
    pi = np.asarray(pi, dtype=np.float64)
    return S.objective_J(pi, rewards, pi_ref, beta) + gamma * (math.log(pi[w]) - math.log(pi[l]))


def eq10_two_response_stationary_points(beta: float, gamma: float, delta_ref: float, dr: float) -> dict:
    """Stationary points of Eq. 10 with two responses, in x = log-odds delta (docs/theory.md §9b).

    dF/dp = G(x) = gamma (e^x + 2 + e^-x) - beta x + beta delta_ref + dr, strictly convex in x with its
    minimum at x0 = asinh(beta/(2 gamma)). Returns x0, G_min and the roots (0 or 2) with their kind.
    """
    if not (beta > 0 and gamma > 0):
        raise ValueError(f"beta and gamma must be > 0, got beta={beta!r}, gamma={gamma!r}")

    def G(xv):
        return gamma * (math.exp(xv) + 2 + math.exp(-xv)) - beta * xv + beta * delta_ref + dr

    x0 = math.asinh(beta / (2 * gamma))
    g_min = math.sqrt(4 * gamma ** 2 + beta ** 2) + 2 * gamma - beta * x0 + beta * delta_ref + dr
    roots = []
    if g_min < 0:
        lo = x0 - 1.0
        while G(lo) < 0:
            lo = x0 - 2 * (x0 - lo)
        hi = x0 + 1.0
        while G(hi) < 0:
            hi = x0 + 2 * (hi - x0)
        roots = [(brentq(G, lo, x0, xtol=1e-14, rtol=1e-15), "local max"),
                 (brentq(G, x0, hi, xtol=1e-14, rtol=1e-15), "local min")]
    return {"x0": x0, "G_min": g_min, "roots": roots}


def eq10_kind_on_simplex(log_pi: np.ndarray, beta: float, gamma: float, w: int = 0, l: int = 1) -> dict:
    """Second-order check of Eq. 10 at an interior stationary point: the Hessian of F restricted to the simplex's
    tangent space {v : sum v = 0}.

    F's Hessian is diagonal: h_y = -beta/pi(y), plus -gamma/pi(y_w)^2 at y_w and +gamma/pi(y_l)^2 at y_l. Returns
    the tangent eigenvalues (orthonormal basis by QR), the kind, and the closed-form criterion: with at most
    one positive h_y (h_l), the restriction is negative definite iff h_l < 0 or sum_y 1/h_y > 0.
    """
    pi = np.exp(np.asarray(log_pi, dtype=np.float64))
    k = pi.size
    hdiag = -beta / pi
    hdiag[w] -= gamma / pi[w] ** 2
    hdiag[l] += gamma / pi[l] ** 2
    basis = np.vstack([np.eye(k - 1), -np.ones((1, k - 1))])
    q, _ = np.linalg.qr(basis)
    eig = np.linalg.eigvalsh(q.T @ np.diag(hdiag) @ q)
    kind = "local max" if eig.max() < 0 else ("local min" if eig.min() > 0 else "saddle")
    criterion_max = bool(hdiag[l] < 0 or np.sum(1.0 / hdiag) > 0)
    return {"eigenvalues": eig, "kind": kind, "criterion_says_local_max": criterion_max, "h_l": float(hdiag[l])}


def eq10_stationarity_residual(log_pi: np.ndarray, rewards: np.ndarray, log_pi_ref: np.ndarray, beta: float,
                               log_gamma: float, w: int = 0, l: int = 1) -> float:
    """Spread over y of dF/dpi(y) = r(y) - beta (log(pi/pi_ref) + 1) + gamma c(y)/pi(y), c(y_w) = 1, c(y_l) = -1,
    relative to its scale; zero at an interior stationary point of Eq. 10 on the simplex.

    Log space: gamma/pi(y) = exp(log gamma - log pi(y)), finite even where pi(y) underflows. NaN or inf in,
    NaN or inf out (never silently dropped).
    """
    c = np.zeros_like(rewards)
    c[w], c[l] = 1.0, -1.0
    pen = np.zeros_like(rewards)
    pen[[w, l]] = c[[w, l]] * np.exp(log_gamma - log_pi[[w, l]])
    g = rewards - beta * (log_pi - log_pi_ref + 1) + pen
    scale = max(1.0, float(np.abs(rewards).max()), float(np.abs(pen).max()),
                beta * float(np.abs(log_pi - log_pi_ref).max()))
    return float(g.max() - g.min()) / scale


# =====================================================================================
# cpo-constrained-kkt
# =====================================================================================
def cpo_constrained_kkt_symbolic(ctx: CheckContext) -> MethodResult:
    """SymPy, general K (one pair, a generic other response) and the 3-response instance: the closed form is
    stationary for the Lagrangian with one multiplier for every response, sums to one, gives delta_c = m at the
    active mu, complementary slackness, mu = 0 gives pi*; J strictly concave and the constraint linear; mpmath
    back-up of delta_c = m at extreme points."""
    facts = D.kkt_facts()
    gk = D.general_k_facts()
    k_keys = ("K_kkt_stationary_at_pi_c_(any_c_j,any_mu)", "K_pi_c_sums_to_one",
              "K_delta_c_is_delta_ref+(dr+mu(1+e^m))/beta", "K_active_mu_gives_delta_c=m",
              "K_hessian_diagonal_negative_(beta>0,p>0)")
    sym = {**proofs(facts), **{k: bool(gk[k]) for k in k_keys}}
    mm, dref_s, dr_s = sp.symbols("mm dref_s dr_s", real=True)
    mu_act = (S.beta * mm - S.beta * dref_s - dr_s) / (1 + sp.exp(mm))
    delta_c = dref_s + (dr_s + mu_act * (1 + sp.exp(mm))) / S.beta
    pts = [(b, mv, dv, rv) for b in S.extreme_betas() for mv in (0.0, 0.5, 5.0) for dv in (-27.6, 0.0, 27.6)
           for rv in (-20.0, 3.0)]
    mp_err = S.max_identity_error(delta_c, mm, [S.beta, mm, dref_s, dr_s], pts)
    conditions = {"proofs": all(sym.values()), "mpmath_active_margin": mp_err < TOL_IDENTITY}
    return holds_only(conditions, f"KKT of the closed form proved for general K ({sum(sym.values())}/{len(sym)}); "
                                  f"mpmath delta_c - m {mp_err:.0e}", {"proofs": sym, "mpmath_delta_c_minus_m": mp_err},
                      depends_on=(
                          DEP_SYMPY_J, "theory.derivations._J_K", "theory.derivations._branch",
                          "theory.derivations._kkt_objects", "theory.derivations.general_k_facts",
                          "theory.derivations._gibbs_delta_star",
                          "theory.derivations.kkt_facts", "theory.derivations.rlhf_facts",
                      ))


def cpo_constrained_kkt_numeric(ctx: CheckContext) -> MethodResult:
    """float64: KKT residuals of :func:`constrained_single_pair` (K = 2..6, beta 1e-3..1e3, references near 0 and 1,
    active and inactive cases) and J(pi_c) against random feasible policies (J from ``theory.symbols.objective_J``)."""
    rng = rng_for(ctx, 431)
    betas = S.random_betas(rng, n_for(ctx, 33, 8))
    worst = {"stationarity": 0.0, "primal": 0.0, "dual": 0.0, "slackness": 0.0}
    n_active = n_inactive = 0
    opt_violations, opt_trials = 0, 0
    for i, b in enumerate(betas):
        K = int(rng.integers(2, 7))
        log_ref = np.log(rng.dirichlet(np.full(K, 0.5)) + 1e-300)
        log_ref = log_ref - logsumexp(log_ref)
        if i % 5 == 0:
            log_ref = np.log(np.r_[1e-9, 1 - 1e-9 - 1e-10 * (K - 2), np.full(K - 2, 1e-10)])
        rew = rng.normal(scale=2.0, size=K)
        m = float([0.0, 0.5, 2.0][i % 3])
        log_pc, mu = constrained_single_pair(log_ref, rew, float(b), m)
        res = kkt_residuals(log_pc, mu, log_ref, rew, float(b), m)
        for k in worst:
            worst[k] = wmax(worst[k], res[k])
        n_active += bool(res["active"])
        n_inactive += not res["active"]
        pc, ref = np.exp(log_pc), np.exp(log_ref)
        j_c = S.objective_J(pc, rew, ref, float(b))
        cand = rng.dirichlet(np.ones(K), size=n_for(ctx, 200, 50))
        cand = np.vstack([cand, 0.5 * cand + 0.5 * pc])
        feas = np.log(cand[:, 0]) - np.log(cand[:, 1]) >= m
        for pi in cand[feas]:
            opt_trials += 1
            opt_violations += j_c - S.objective_J(pi, rew, ref, float(b)) < -1e-10 * max(1.0, abs(j_c))
    conditions = {"residuals_below_tol": all(v < TOL_KKT for v in worst.values()), "active_case_seen": n_active > 0,
                  "inactive_case_seen": n_inactive > 0, "pi_c_beats_random_feasible": opt_violations == 0 and opt_trials > 0}
    evidence = {"n_instances": int(len(betas)), "n_active": n_active, "n_inactive_mu_0": n_inactive,
                "max_kkt_residuals": worst, "tolerance_kkt": TOL_KKT, "random_feasible_policies_compared": opt_trials,
                "J_pi_c_below_a_feasible_policy": opt_violations}
    return holds_only(conditions, f"closed form KKT at {len(betas)} instances ({n_active} active; max residual "
                                  f"{max(worst.values()):.1e}); beats all {opt_trials} random feasible policies", evidence,
                      depends_on=(
                          DEP_CLOSED_FORM, DEP_J_NP, "theory.sec9_cpo.kkt_residuals",
                      ))


# =====================================================================================
# cpo-penalized-eq10
# =====================================================================================
def cpo_penalized_eq10_symbolic(ctx: CheckContext) -> MethodResult:
    """SymPy: F -> +inf along pi = (1/2, eps, 1/2 - eps) while J stays finite (so 'maximise Eq. 10' is not well
    posed); with two responses dF/dp = G(x), G strictly convex with minimum G_min at asinh(beta/(2 gamma)); pi_c is a
    root of G for gamma = nu* and G'(m) = mu (e^m - 1) - beta there (the kind: local max iff negative)."""
    facts = D.penalised_facts()
    sym = proofs(facts)
    unbounded = bool(facts["F_limit_is_+inf_as_pi_l_to_0"] and facts["J_limit_finite_as_pi_l_to_0"])
    proved = all(sym.values())
    return MethodResult(
        literal=not unbounded, amended=proved and unbounded,
        summary=f"lim F = +inf as pi(y_l) -> 0 with J finite: no maximiser; 2-response stationary structure proved "
                f"({sum(sym.values())}/{len(sym)})",
        evidence={"proofs": sym}, depends_on=(
            DEP_SYMPY_J, "theory.derivations.penalised_facts", "theory.symbols.sp_sigma",
        ),
        counterexample={"path": "pi = (1/2, eps, 1/2 - eps), eps -> 0", "limit_F": "+oo", "limit_J": "finite"}
        if unbounded else None,
        amended_statement=get_claim("cpo-penalized-eq10").amendment if proved and unbounded else None)


def cpo_penalized_eq10_numeric(ctx: CheckContext) -> MethodResult:
    """float64, two and three responses: F along pi(y_l) -> 1e-300 with J inside its bounds; the stationary points of
    the two-response G counted by root-finding vs sign changes on a grid and classified by F's values; the kind of
    pi_c with gamma = nu* against mu (e^m - 1) vs beta (and against the tangent-space Hessian for K = 3..5)."""
    rng = rng_for(ctx, 441)
    b0, g0 = 1.0, 0.1
    ref0, rew0 = np.array([0.2, 0.5, 0.3]), np.array([1.0, 0.0, 0.5])
    epss = [10.0 ** -k for k in (1, 10, 50, 100, 300)]
    F_path = [penalised_objective(np.array([0.5, e, 0.5 - e]), rew0, ref0, b0, g0) for e in epss]
    J_path = [S.objective_J(np.array([0.5, e, 0.5 - e]), rew0, ref0, b0) for e in epss]
    J_bounds = [float(rew0.min() - b0 * math.log(1 / ref0.min())), float(b0 * logsumexp(np.log(ref0) + rew0 / b0))]
    unbounded = bool(np.all(np.diff(F_path) > 0)) and F_path[-1] > 60 and all(
        J_bounds[0] - 1e-12 <= j <= J_bounds[1] + 1e-12 for j in J_path)
    n_inst = n_for(ctx, 60, 20)
    count_ok = kind_ok = True
    n_two = n_none = 0
    for _ in range(n_inst):
        b = float(10 ** rng.uniform(-3, 3))
        g = float(10 ** rng.uniform(-3, 1))
        pw_ref = float(rng.uniform(0.01, 0.99))
        dref = math.log(pw_ref / (1 - pw_ref))
        dr = float(rng.normal(scale=3.0))
        out = eq10_two_response_stationary_points(b, g, dref, dr)
        xs = out["x0"] + np.linspace(-60, 60, 24001)
        with np.errstate(over="ignore"):
            Gx = g * (np.exp(xs) + 2 + np.exp(-xs)) - b * xs + b * dref + dr
        changes = int(np.sum(np.diff(np.sign(Gx)) != 0))
        count_ok = count_ok and (changes == len(out["roots"]) or abs(out["G_min"]) < 1e-6)
        if out["roots"]:
            n_two += 1
            for xr, kind in out["roots"]:
                p = float(S.sigmoid(xr))
                h_ = min(1e-5, p / 10, (1 - p) / 10)
                f = lambda pp: penalised_objective(np.array([pp, 1 - pp]), np.array([dr, 0.0]),  # noqa: E731
                                                   np.array([pw_ref, 1 - pw_ref]), b, g)
                f0, fl, fr = f(p), f(p - h_), f(p + h_)
                kind_ok = kind_ok and ((fl < f0 and fr < f0) if kind == "local max" else (fl > f0 and fr > f0))
        else:
            n_none += 1
    # pi_c with gamma = nu*: two responses, kind by F's values on the one-dimensional simplex vs the criterion
    k2_rows, k2_ok = [], True
    for _ in range(n_for(ctx, 40, 15)):
        b = float(10 ** rng.uniform(-1, 1))
        ref = rng.dirichlet(np.ones(2))
        rew = rng.normal(scale=3.0, size=2)
        m_k = float(rng.choice([0.0, 0.5, 2.0]))
        log_pc, mu_k = constrained_single_pair(np.log(ref), rew, b, m_k)
        if mu_k <= 0:
            continue
        nu = mu_k * math.exp(log_pc[0])
        p = math.exp(log_pc[0])
        h_ = min(1e-5, p / 10, (1 - p) / 10)
        f = lambda pp: penalised_objective(np.array([pp, 1 - pp]), rew, ref, b, nu)  # noqa: E731
        f0, fl, fr = f(p), f(p - h_), f(p + h_)
        kind = "local max" if (fl < f0 and fr < f0) else "local min" if (fl > f0 and fr > f0) else "neither"
        predicted = "local max" if mu_k * math.expm1(m_k) < b else "local min"
        k2_ok = k2_ok and kind == predicted
        if len(k2_rows) < 6 or kind != predicted:
            k2_rows.append({"beta": b, "m": m_k, "mu": mu_k, "kind_by_F_values": kind, "predicted": predicted})
    ex = {"beta": 1.0, "m": 2.0, "pi_ref": [0.5, 0.5], "r": [-10.0, 0.0]}
    log_pc, mu_ex = constrained_single_pair(np.log(ex["pi_ref"]), np.array(ex["r"]), ex["beta"], ex["m"])
    nu_ex = mu_ex * math.exp(log_pc[0])
    pts = eq10_two_response_stationary_points(ex["beta"], nu_ex, 0.0, ex["r"][0] - ex["r"][1])
    kind_at_pc = [k for xr, k in pts["roots"] if abs(xr - ex["m"]) < 1e-8]
    pc_example = {**ex, "mu": mu_ex, "nu_star": nu_ex, "kind_of_pi_c_for_eq10": kind_at_pc[0] if kind_at_pc else None,
                  "mu(e^m-1)-beta": mu_ex * math.expm1(ex["m"]) - ex["beta"],
                  "other_stationary_point": [{"delta": xr, "kind": k} for xr, k in pts["roots"]
                                             if abs(xr - ex["m"]) >= 1e-8]}
    literal = not unbounded
    amended = (unbounded and count_ok and kind_ok and n_two > 0 and n_none > 0 and k2_ok and len(k2_rows) > 0
               and kind_at_pc == ["local min"])
    evidence = {"F_is_unbounded_above": unbounded, "F_path": F_path, "J_path": J_path, "J_bounds_on_simplex": J_bounds,
                "two_response_instances": n_inst, "with_two_stationary_points": n_two, "with_none": n_none,
                "root_count_matches_sign_changes": count_ok, "kinds_confirmed_by_F_values": kind_ok,
                "pi_c_kind_two_responses": k2_rows, "pi_c_kind_matches_mu(e^m-1)_vs_beta": k2_ok,
                "local_minimum_example": pc_example}
    return MethodResult(
        literal=literal, amended=amended,
        summary=f"F = {F_path[-1]:.0f} at pi(y_l) = 1e-300 with J bounded: no maximiser; 2-response stationary points "
                f"0 or 2 (max + min) on {n_inst} instances; pi_c (gamma = nu*, K = 2) local max iff mu(e^m-1) < beta: "
                f"{k2_ok}",
        evidence=evidence, depends_on=(
            DEP_CLOSED_FORM, DEP_J_NP, "theory.sec9_cpo.eq10_two_response_stationary_points",
            "theory.sec9_cpo.penalised_objective", "theory.symbols.sigmoid",
        ),
        counterexample={"beta": b0, "gamma": g0, "pi_ref": ref0.tolist(), "r": rew0.tolist(),
                        "path": "pi = (1/2, eps, 1/2 - eps)", "eps": epss, "F": F_path} if not literal else None,
        amended_statement=get_claim("cpo-penalized-eq10").amendment if amended else None)


# =====================================================================================
# cpo-stationary-margin
# =====================================================================================
def cpo_stationary_margin_symbolic(ctx: CheckContext) -> MethodResult:
    """SymPy, general K: the difference of the y_w and y_l stationarity equations of Eq. 10's Lagrangian is
    dr + m* - beta (delta - delta_ref) (Eq. 13-16), whatever the other responses; m* >= 4 gamma (AM-HM); with
    gamma = nu* = mu pi_c(y_w) the KKT point pi_c of §9(a) is stationary at y_w, at y_l (active) and elsewhere."""
    pf, kf, gk = D.penalised_facts(), D.kkt_facts(), D.general_k_facts()
    keys = {"stationarity_difference_is_dr+m*-beta(delta-delta_ref)": pf, "m*_at_least_4gamma_(AM-HM)": pf,
            "pi_c_stationary_for_gamma=nu*": pf, "log_form_multiplier_nu=mu_pi_c(y_w)": kf,
            "K_eq13_16_stationarity_difference_is_dr+m*-beta(delta-delta_ref)": gk,
            "K_pi_c_stationary_for_gamma=nu*_(other_responses)": gk, "K_pi_c_stationary_for_gamma=nu*_(y_w)": gk,
            "K_pi_c_stationary_for_gamma=nu*_(y_l,_active)": gk}
    sym = {k: bool(src[k]) for k, src in keys.items()}
    return holds_only({"proofs": all(sym.values())}, f"Eq. 13-16 and gamma = nu* proved for general K "
                                                     f"({sum(sym.values())}/{len(sym)})", {"proofs": sym},
                      depends_on=(
                          DEP_SYMPY_J, "theory.derivations._J_K", "theory.derivations._branch",
                          "theory.derivations._kkt_objects", "theory.derivations.general_k_facts",
                          "theory.derivations._gibbs_delta_star",
                          "theory.derivations.kkt_facts", "theory.derivations.penalised_facts",
                          "theory.symbols.sp_sigma",
                      ))


def cpo_stationary_margin_numeric(ctx: CheckContext) -> MethodResult:
    """float64: every two-response stationary point found by root-finding satisfies Eq. 13-16 and delta >= delta* +
    4 gamma/beta; with gamma = nu* = mu pi_c(y_w) the closed-form pi_c (K = 2..6) is stationary for Eq. 10."""
    rng = rng_for(ctx, 901)
    eq_err, lower_ok, n_pts = 0.0, True, 0
    for _ in range(n_for(ctx, 60, 20)):
        b = float(10 ** rng.uniform(-2, 2))
        g = float(10 ** rng.uniform(-3, 1))
        pw_ref = float(rng.uniform(0.01, 0.99))
        dref = math.log(pw_ref / (1 - pw_ref))
        dr = float(rng.normal(scale=3.0))
        for xr, _kind in eq10_two_response_stationary_points(b, g, dref, dr)["roots"]:
            p_w, p_l = float(S.sigmoid(xr)), float(S.sigmoid(-xr))
            lhs, rhs = b * (xr - dref), dr + g * (1 / p_w + 1 / p_l)
            eq_err = wmax(eq_err, abs(lhs - rhs) / max(1.0, abs(lhs), abs(rhs)))
            lower_ok = lower_ok and xr >= dref + (dr + 4 * g) / b - 1e-9 * max(1.0, abs(xr))
            n_pts += 1
    kkt_res, n_act = 0.0, 0
    for i, b in enumerate(S.random_betas(rng, n_for(ctx, 23, 6))):
        K = int(rng.integers(2, 7))
        log_ref = np.log(rng.dirichlet(np.ones(K)))
        rew = rng.normal(scale=2.0, size=K)
        rew[1] += 3.0  # make the constraint active more often
        m = float([0.0, 0.5, 2.0][i % 3])
        log_pc, mu = constrained_single_pair(log_ref, rew, float(b), m)
        if mu <= 0:
            continue
        kkt_res = wmax(kkt_res, eq10_stationarity_residual(log_pc, rew, log_ref, float(b), math.log(mu) + log_pc[0]))
        n_act += 1
    conditions = {"eq13_16_at_stationary_points": eq_err < 1e-10 and n_pts > 0,
                  "delta_at_least_delta_star+4gamma/beta": lower_ok,
                  "pi_c_stationary_with_gamma=nu*": kkt_res < 1e-9 and n_act > 0}
    evidence = {"two_response_stationary_points": n_pts, "max_rel_err_eq13_16": eq_err, "active_instances": n_act,
                "max_eq10_stationarity_residual_at_pi_c_with_gamma=nu*": kkt_res,
                "caveat": "stationary is not maximal: Eq. 10 is unbounded above (see cpo-penalized-eq10)"}
    return holds_only(conditions, f"Eq. 13-16 at {n_pts} stationary points (rel err {eq_err:.1e}); pi_c stationary "
                                  f"with gamma = nu* (residual {kkt_res:.1e}, {n_act} cases)", evidence,
                      depends_on=(
                          DEP_CLOSED_FORM, "theory.sec9_cpo.eq10_stationarity_residual",
                          "theory.sec9_cpo.eq10_two_response_stationary_points", "theory.symbols.sigmoid",
                      ))
