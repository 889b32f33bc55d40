"""Symbolic derivations, one cached function per docs/theory.md section.

Each function returns a dict of named booleans (each one a proof: ``simplify(lhs - rhs) == 0``,
a sign SymPy decides from the declared assumptions, or a limit) plus the expressions the
numeric checks evaluate. The checks in :mod:`theory.claims` combine them with numbers.
Everything is cached: the 14 checks share the work and a second call costs nothing.
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp

from theory.symbols import (
    Z, beta, beta_any, delta, delta_ref, dr, gamma, h, is_identity, is_identity_log, lam, loss_sym, m, mu, p,
    pref, q, r, s, sp_sigma, sp_softplus, t, u, x,
)

W, L, O = 0, 1, 2  # y_w, y_l, the other response


def _J(pi):
    """J(pi) = sum pi r - beta sum pi log(pi / pi_ref) (docs/theory.md §1), three responses."""
    return sum(pi[i] * r[i] for i in range(3)) - beta * sum(pi[i] * (sp.log(pi[i]) - sp.log(pref[i]))
                                                            for i in range(3))


# --- general K: a generic response j of K (IndexedBase), the sums as SymPy Sums -----------------------------------
K_ = sp.Symbol("K", integer=True, positive=True)
_i, _j, _k = sp.symbols("i j k", integer=True, positive=True)
_w, _l = sp.symbols("w l", integer=True, positive=True)  # the pair's indices (any two of 1..K)
_A = sp.IndexedBase("a", positive=True)  # pi_ref
_R = sp.IndexedBase("r", real=True)  # rewards
_P = sp.IndexedBase("p", positive=True)  # a policy
_C = sp.IndexedBase("c", real=True)  # constraint coefficients a(y) of §9(a): 1 at y_w, -e^m at y_l, 0 elsewhere
_Zk = sp.Symbol("Z_K", positive=True)


def _J_K():
    """J(pi) = sum_{i=1}^K pi_i r_i - beta pi_i (log pi_i - log pi_ref_i), K symbolic."""
    return sp.Sum(_P[_i] * _R[_i] - beta * _P[_i] * (sp.log(_P[_i]) - sp.log(_A[_i])), (_i, 1, K_))


def _branch(piecewise_expr):
    """The value of SymPy's ``Piecewise((value, j <= K), (0, True))`` for an index inside 1..K: the first branch, when
    its condition holds at both ends of the index range (j = k = 1 and j = k = K; the condition is an interval in
    each index). Otherwise the Piecewise itself, whose 0 branch then fails the identity it enters: a sum that left a
    response out (i = 2..K gives ``(K >= j) & (j >= 2)``) used to pass with its condition discarded."""
    expr = sp.piecewise_fold(piecewise_expr)
    if not isinstance(expr, sp.Piecewise):
        return expr
    value, cond = expr.args[0]
    indices = [s for s in (_i, _j, _k) if s in cond.free_symbols]
    if all(cond.subs({s: end for s in indices}) == sp.true for end in (1, K_)):
        return value
    return expr


def _gibbs_delta_star(log_weight=None):
    """(delta*, delta_ref) of the pair (w, l), general K: delta* = log pi*(w) - log pi*(l) for the Gibbs form pi* =
    pi_ref e^(log_weight(r)) / Z_K, Z_K the Sum over 1..K, log-expanded (log_weight(r) = r/beta when None; another is
    for planting an error)."""
    if log_weight is None:
        def log_weight(r):
            return r / beta
    z_sum = sp.Sum(_A[_i] * sp.exp(log_weight(_R[_i])), (_i, 1, K_))
    d_star = sp.expand_log(sp.log(_A[_w] * sp.exp(log_weight(_R[_w])) / z_sum)
                           - sp.log(_A[_l] * sp.exp(log_weight(_R[_l])) / z_sum), force=True)
    return d_star, sp.log(_A[_w]) - sp.log(_A[_l])


@lru_cache(maxsize=None)
def general_k_facts() -> dict:
    """docs/theory.md §1, §9(a), §9(b) for a general number K of responses (K a SymPy symbol).

    J, the constraint and the normalisation are sums over i = 1..K (SymPy ``Sum`` over ``IndexedBase``
    entries); derivatives are taken with respect to a generic entry p_j and evaluated by SymPy (it returns
    ``Piecewise((., j <= K), (0, True))``; the first branch is the value for a response of the instance).
    A per-coordinate identity proved for a generic index j (with generic coefficients c_j) holds for every
    response, so stationarity is proved for every K at once; the normalisation is proved on the Sum itself.
    """
    out = {}
    J = _J_K()
    grad_j = _branch(sp.diff(J, _P[_j]).doit())
    hess_jk = _branch(sp.diff(J, _P[_j], _P[_k]).doit())
    out["K_gradient_is_r_j-beta(log(p_j/a_j)+1)"] = is_identity_log(
        grad_j - (_R[_j] - beta * (sp.log(_P[_j]) - sp.log(_A[_j]) + 1)))
    out["K_hessian_is_-beta_KroneckerDelta(j,k)/p_j"] = is_identity(
        hess_jk + beta * sp.KroneckerDelta(_j, _k) / _P[_j])
    out["K_hessian_diagonal_negative_(beta>0,p>0)"] = bool((-beta / _P[_j]).is_negative)
    # Gibbs policy, normalised by the Sum
    z_sum = sp.Sum(_A[_i] * sp.exp(_R[_i] / beta), (_i, 1, K_))
    out["K_pi_star_sums_to_one"] = sp.simplify(sp.Sum(_A[_i] * sp.exp(_R[_i] / beta) / z_sum, (_i, 1, K_)) - 1) == 0
    pstar = lambda idx: _A[idx] * sp.exp(_R[idx] / beta) / _Zk  # noqa: E731  (Z_K: the Sum, a positive constant)
    out["K_gibbs_stationary_(one_multiplier_for_every_j)"] = is_identity_log(
        grad_j.subs(_P[_j], pstar(_j)) - (beta * sp.log(_Zk) - beta))
    summand = _P[_i] * _R[_i] - beta * _P[_i] * (sp.log(_P[_i]) - sp.log(_A[_i]))
    # J(pi*) = sum_i [summand(pi*_i)] = sum_i beta log Z pi*_i = beta log Z (the summand identity, then the Sum)
    out["K_J_at_pi_star_is_beta_log_Z"] = is_identity_log(summand.subs(_P[_i], pstar(_i))
                                                          - beta * sp.log(_Zk) * pstar(_i)) and out["K_pi_star_sums_to_one"]
    # variational identity summand-wise: summand(p_i) = beta log Z p_i - beta p_i (log p_i - log pi*_i); summed
    # with sum p = 1 it is J(pi) = beta log Z - beta KL(pi || pi*)
    out["K_J_is_beta_logZ_minus_beta_KL_to_pi_star"] = is_identity_log(
        summand - (beta * sp.log(_Zk) * _P[_i] - beta * _P[_i] * (sp.log(_P[_i]) - sp.log(pstar(_i)))))
    d_star, d_ref = _gibbs_delta_star()
    dr_ = _R[_w] - _R[_l]
    out["K_delta_star_from_gibbs_(Z_cancels)"] = is_identity(d_star - (d_ref + dr_ / beta))
    # §9(a) single pair, general K: the Lagrangian gradient at pi_c for a generic coefficient c_j
    zc = sp.Symbol("Z_c", positive=True)
    cj = sp.Symbol("c_j", real=True)
    pic = lambda idx, c: _A[idx] * sp.exp((_R[idx] + mu * c) / beta) / zc  # noqa: E731
    lam_c = beta * sp.log(zc) - beta
    out["K_kkt_stationary_at_pi_c_(any_c_j,any_mu)"] = is_identity_log(grad_j.subs(_P[_j], pic(_j, cj)) + mu * cj - lam_c)
    zc_sum = sp.Sum(_A[_i] * sp.exp((_R[_i] + mu * _C[_i]) / beta), (_i, 1, K_))
    out["K_pi_c_sums_to_one"] = sp.simplify(
        sp.Sum(_A[_i] * sp.exp((_R[_i] + mu * _C[_i]) / beta) / zc_sum, (_i, 1, K_)) - 1) == 0
    delta_c = sp.expand_log(sp.log(pic(_w, 1)) - sp.log(pic(_l, -sp.exp(m))), force=True)
    out["K_delta_c_is_delta_ref+(dr+mu(1+e^m))/beta"] = is_identity(delta_c - (d_ref + (dr_ + mu * (1 + sp.exp(m))) / beta))
    mu_act = (beta * m - beta * d_ref - dr_) / (1 + sp.exp(m))
    out["K_active_mu_gives_delta_c=m"] = is_identity(sp.expand(delta_c.subs(mu, mu_act)) - m)
    # §9(b) Eq. 10 general K: F = J + gamma (log p_w - log p_l); per-coordinate gradient with c'_j in {1, -1, 0}
    cp_j = sp.Symbol("cprime_j", real=True)
    gradF_j = grad_j + gamma * cp_j / _P[_j]
    gw = gradF_j.subs({_j: _w, cp_j: 1})
    gl = gradF_j.subs({_j: _l, cp_j: -1})
    m_star = gamma * (1 / _P[_w] + 1 / _P[_l])
    dpol = sp.log(_P[_w]) - sp.log(_P[_l])
    out["K_eq13_16_stationarity_difference_is_dr+m*-beta(delta-delta_ref)"] = is_identity_log(
        (gw - gl) - (dr_ + m_star - beta * (dpol - d_ref)))
    # pi_c is stationary for Eq. 10 with gamma = nu* = mu pi_c(y_w): the gradient is the same constant at y_w, at y_l
    # (when the constraint is active) and at every other response
    nu = mu * pic(_w, 1)
    at = lambda idx, c, cp: (grad_j.subs(_j, idx).subs(_P[idx], pic(idx, c))  # noqa: E731
                             + nu * cp / pic(idx, c))
    out["K_pi_c_stationary_for_gamma=nu*_(other_responses)"] = is_identity_log(at(_k, 0, 0) - lam_c)
    out["K_pi_c_stationary_for_gamma=nu*_(y_w)"] = is_identity_log(at(_w, 1, 1) - lam_c)
    # at y_l the gradient minus the constant is mu (e^m - e^{delta_c}): zero exactly when the constraint is active
    delta_c_cf = d_ref + (dr_ + mu * (1 + sp.exp(m))) / beta
    out["K_pi_c_stationary_for_gamma=nu*_(y_l,_active)"] = is_identity_log(
        at(_l, -sp.exp(m), -1) - lam_c - mu * (sp.exp(m) - sp.exp(delta_c_cf))) and out["K_active_mu_gives_delta_c=m"]
    out["_exprs"] = {"delta_star": d_star, "delta_ref": d_ref, "dr": dr_}
    return out


def dpo_loss_expr(d=delta, d_ref=delta_ref, b=beta):
    """The ordered-pair DPO loss softplus(-beta (delta - delta_ref)) (Paper Eq. 8)."""
    return sp_softplus(-b * (d - d_ref))


@lru_cache(maxsize=None)
def rlhf_facts() -> dict:
    """docs/theory.md §1: Hessian, Gibbs stationarity, the Gibbs variational identity, J(pi*) = beta log Z, delta*."""
    Zs = sum(pref[i] * sp.exp(r[i] / beta) for i in range(3))
    pstar = [pref[i] * sp.exp(r[i] / beta) / Zs for i in range(3)]
    log_pstar = [sp.expand_log(sp.log(ps)) for ps in pstar]
    out = {}
    out["log_pi_star_is_log_pi_ref_plus_r_over_beta_minus_log_Z"] = all(
        is_identity(log_pstar[i] - (sp.log(pref[i]) + r[i] / beta - sp.log(Zs))) for i in range(3))
    out["pi_star_sums_to_one"] = is_identity(sum(pstar) - 1)
    H = sp.hessian(_J(p), p)
    out["hessian_is_minus_beta_diag_inv_pi"] = all(
        is_identity(H[i, j] - (-beta / p[i] if i == j else 0)) for i in range(3) for j in range(3))
    out["hessian_negative_definite_(beta>0,pi>0)"] = all(bool(H[i, i].is_negative) for i in range(3))
    # without beta > 0 the sign is undecided; with beta < 0 J is convex and pi* a minimiser
    pa = sp.Symbol("p_any_pos", positive=True)
    out["hessian_sign_decided_without_beta_positive"] = (-beta_any / pa).is_negative is not None
    # stationarity of the Lagrangian J - lambda (sum pi - 1) at pi*, lambda = beta log Z - beta
    grad = [sp.diff(_J(p), p[i]) for i in range(3)]
    lam_star = beta * sp.log(Zs) - beta
    out["gibbs_stationary"] = all(is_identity_log(grad[i].subs({p[j]: pstar[j] for j in range(3)}) - lam_star)
                                  for i in range(3))
    # variational identity on the simplex: J(pi) = beta log Z - beta KL(pi || pi*), pi_o = 1 - pi_w - pi_l
    po = 1 - p[W] - p[L]
    P = [p[W], p[L], po]
    JP = sum(P[i] * r[i] for i in range(3)) - beta * sum(P[i] * (sp.log(P[i]) - sp.log(pref[i])) for i in range(3))
    KL = sum(P[i] * (sp.log(P[i]) - log_pstar[i]) for i in range(3))
    out["J_equals_beta_logZ_minus_beta_KL_to_pi_star"] = is_identity(sp.expand(JP - (beta * sp.log(Zs) - beta * KL)))
    Jstar = sum(pstar[i] * r[i] for i in range(3)) - beta * sum(pstar[i] * (log_pstar[i] - sp.log(pref[i]))
                                                                 for i in range(3))
    out["J_at_pi_star_is_beta_log_Z"] = is_identity(sp.expand(Jstar) - beta * sp.log(Zs))
    dstar = log_pstar[W] - log_pstar[L]
    out["delta_star_is_delta_ref_plus_dr_over_beta"] = is_identity(
        dstar - (sp.log(pref[W]) - sp.log(pref[L]) + (r[W] - r[L]) / beta))
    out["_exprs"] = {"J_star": Jstar, "beta_log_Z": beta * sp.log(Zs), "symbols": (beta, *pref, *r)}
    return out


@lru_cache(maxsize=None)
def dpo_facts() -> dict:
    """docs/theory.md §2: reparameterisation, Z cancels, -log sigma = softplus(-.), log 2 at the reference."""
    out = {}
    pstar_y = pref[W] * sp.exp(r[W] / beta) / Z
    out["reward_from_policy_ratio"] = is_identity(sp.expand_log(beta * sp.log(pstar_y / pref[W]) + beta * sp.log(Z))
                                                  - r[W])
    rw = beta * sp.log(p[W] / pref[W]) + beta * sp.log(Z)
    rl = beta * sp.log(p[L] / pref[L]) + beta * sp.log(Z)
    gap = sp.expand_log(rw - rl)
    d_pol = sp.log(p[W]) - sp.log(p[L])
    d_ref = sp.log(pref[W]) - sp.log(pref[L])
    out["reward_gap_is_beta_(delta-delta_ref)"] = is_identity(gap - beta * (d_pol - d_ref))
    out["Z_cancels_(d gap / dZ = 0)"] = is_identity(sp.diff(gap, Z))
    out["bt_probability_sigma(dr)=sigma(beta(delta*-delta_ref))"] = is_identity(
        sp_sigma(gap) - sp_sigma(beta * (d_pol - d_ref)))
    out["minus_log_sigma_is_softplus_minus"] = is_identity(-sp.log(sp_sigma(h)) - sp_softplus(-h))
    out["loss_at_reference_is_log2"] = is_identity(dpo_loss_expr(delta_ref, delta_ref) - sp.log(2))
    return out


@lru_cache(maxsize=None)
def assumption_facts() -> dict:
    """docs/theory.md §3, derived from the normalised Gibbs policy itself (general K, see :func:`general_k_facts`):
    log pi*(y_w) - log pi*(y_l) = delta_ref + dr/beta (Z cancels), so pi*(y_w) > pi*(y_l) <=> beta delta_ref + dr > 0
    (needs beta > 0), and beta log(pi_ref(y_l)/pi_ref(y_w)) = -beta delta_ref."""
    gk = general_k_facts()
    s_pos = sp.Symbol("s_pos", positive=True)
    s_neg = sp.Symbol("s_neg", negative=True)
    d_ref = sp.log(pref[W]) - sp.log(pref[L])
    out = {
        # from the Gibbs form: pi*(y_w)/pi*(y_l) = exp(delta_ref + dr/beta), so the ratio exceeds 1 iff the exponent
        # is positive, and beta * exponent = beta delta_ref + dr
        "K_gibbs_log_odds_is_delta_ref+dr/beta": gk["K_delta_star_from_gibbs_(Z_cancels)"],
        "beta_times_gibbs_log_odds_is_beta_delta_ref+dr": is_identity(
            sp.expand(beta * gk["_exprs"]["delta_star"]) - sp.expand(beta * gk["_exprs"]["delta_ref"]
                                                                     + gk["_exprs"]["dr"])),
        "beta_log_ratio_is_minus_beta_delta_ref": is_identity_log(beta * sp.log(pref[L] / pref[W]) + beta * d_ref),
        # delta* = (beta delta_ref + dr) / beta has the sign of beta delta_ref + dr: SymPy decides it only for beta > 0
        "sign_of_delta_star_is_sign_of_beta_delta_ref+dr_(beta>0)": bool((s_pos / beta).is_positive)
        and bool((s_neg / beta).is_negative),
        "sign_preserved_without_beta_positive": (s_pos / beta_any).is_positive is not None,
    }
    return out


@lru_cache(maxsize=None)
def population_facts() -> dict:
    """docs/theory.md §2/§4(a): l_q(h) = q softplus(-h) + (1-q) softplus(h) is strictly convex, minimised at h = logit q."""
    lq = q * sp_softplus(-h) + (1 - q) * sp_softplus(h)
    g = sp.diff(lq, h)
    g2 = sp.diff(lq, h, 2)
    out = {
        "dlq_dh_is_sigma(h)-q": is_identity(g - (sp_sigma(h) - q)),
        "d2lq_dh2_is_sigma(h)sigma(-h)": is_identity(g2 - sp_sigma(h) * sp_sigma(-h)),
        "d2lq_dh2_positive": bool((sp_sigma(h) * sp_sigma(-h)).is_positive),
        "stationary_at_h=dr_when_q=sigma(dr)": is_identity(g.subs(h, dr).subs(q, sp_sigma(dr))),
    }
    # the minimiser h = dr in policy terms: beta (delta - delta_ref) = dr has the one solution delta_ref + dr/beta,
    # which is the Gibbs log-odds (general_k_facts), whatever the sign of beta delta_ref + dr
    sol = sp.solve(sp.Eq(beta * (delta - delta_ref), dr), delta)
    out["h=dr_solves_to_delta=delta_ref+dr/beta"] = len(sol) == 1 and is_identity(sol[0] - (delta_ref + dr / beta))
    out["minimiser_is_gibbs_log_odds"] = out["h=dr_solves_to_delta=delta_ref+dr/beta"] and general_k_facts()[
        "K_delta_star_from_gibbs_(Z_cancels)"]
    return out


@lru_cache(maxsize=None)
def ordered_pair_facts() -> dict:
    """docs/theory.md §4(b)/§5: l(delta) strictly decreasing, no stationary point, infimum 0 only as delta -> inf."""
    l = dpo_loss_expr()
    dl = sp.diff(l, delta)
    grad_ref = -beta * sp_sigma(-beta * (delta - delta_ref))
    out = {
        "dl_ddelta_is_-beta_sigma(-beta(delta-delta_ref))": is_identity(dl - grad_ref),
        "dl_ddelta_negative": bool(grad_ref.is_negative),
        "no_real_stationary_point": sp.solveset(grad_ref, delta, sp.S.Reals) == sp.S.EmptySet,
        "loss_positive": bool(l.is_positive),
        "limit_delta_to_+inf_is_0": sp.limit(l, delta, sp.oo) == 0,
        "limit_delta_to_-inf_is_+inf": sp.limit(l, delta, -sp.oo) == sp.oo,
        "grad_at_delta_star_is_-beta_sigma(-dr)": is_identity(grad_ref.subs(delta, delta_ref + dr / beta)
                                                              + beta * sp_sigma(-dr)),
        "grad_at_delta_star_nonzero": bool((beta * sp_sigma(-dr)).is_positive),
    }
    # the same without beta > 0: the sign is not decided (beta < 0 makes l increasing)
    out["dl_ddelta_sign_decided_without_beta_positive"] = (-beta_any * sp_sigma(-beta_any * u)).is_negative is not None
    # gradient flow in delta: d delta/dt = -dl/d delta; with U = beta (delta - delta_ref), U(0) = 0 the solution
    # is the implicit curve U + e^U - 1 = beta^2 t, so dU/dt = beta^2 / (1 + e^U) = beta^2 sigma(-U)
    tt = sp.Symbol("t_flow", nonnegative=True)
    Ufun = sp.Function("U")(tt)
    implicit = Ufun + sp.exp(Ufun) - 1 - beta ** 2 * tt
    dU = sp.solve(sp.diff(implicit, tt), sp.diff(Ufun, tt))[0]
    out["flow_in_delta_solution_U+e^U-1=beta^2_t"] = is_identity(dU - beta ** 2 * sp_sigma(-Ufun)) and is_identity(
        implicit.subs(Ufun, 0).subs(tt, 0))
    # gradient flow on tabular softmax logits theta (one pair): delta = theta_w - theta_l and dl/d theta_w =
    # -dl/d theta_l = dl/d delta, so d delta/dt = -2 dl/d delta: the same curve with time scaled by 2
    implicit2 = Ufun + sp.exp(Ufun) - 1 - 2 * beta ** 2 * tt
    dU2 = sp.solve(sp.diff(implicit2, tt), sp.diff(Ufun, tt))[0]
    out["flow_in_logits_solution_U+e^U-1=2beta^2_t"] = is_identity(dU2 - 2 * beta ** 2 * sp_sigma(-Ufun))
    return out


@lru_cache(maxsize=None)
def relative_facts() -> dict:
    """docs/theory.md §5: l depends on pi only through delta_pi - delta_ref (shift invariance, one-variable form)."""
    c = sp.Symbol("c", real=True)
    l = dpo_loss_expr()
    lw = sp_softplus(-beta * ((sp.log(p[W]) - sp.log(p[L])) - (sp.log(pref[W]) - sp.log(pref[L]))))
    return {
        "shift_invariant_l(delta+c,delta_ref+c)=l": is_identity(dpo_loss_expr(delta + c, delta_ref + c) - l),
        "l_is_function_of_u=delta-delta_ref": is_identity(l - sp_softplus(-beta * u).subs(u, delta - delta_ref)),
        # scaling pi(y_w) and pi_ref(y_w) by the same factor leaves l unchanged: only ratios to the reference enter
        "common_scaling_of_pi_w_and_pi_ref_w_invariant": is_identity(sp.simplify(
            sp.expand_log(lw.subs({p[W]: sp.exp(c) * p[W], pref[W]: sp.exp(c) * pref[W]})) - sp.expand_log(lw))),
    }


@lru_cache(maxsize=None)
def undesirable_facts() -> dict:
    """docs/theory.md §6: the loss on U, the realisability of every delta, and pi* in U."""
    l_u = sp_softplus(-beta * u)  # u = delta - delta_ref > 0 on U
    out = {
        "loss_at_u=0_is_log2": is_identity(l_u.subs(u, 0) - sp.log(2)),
        "loss_strictly_decreasing_in_u": bool(sp.diff(l_u, u).is_negative),
    }
    # every delta is realised by the two-response policy (e^delta, 1) / (1 + e^delta)
    pw = sp.exp(delta) / (1 + sp.exp(delta))
    pl = 1 / (1 + sp.exp(delta))
    out["every_delta_realised"] = (is_identity(sp.expand_log(sp.log(pw) - sp.log(pl)) - delta)
                                   and is_identity(pw + pl - 1))
    # pi* in U when beta delta_ref + dr < 0 < dr (see pi_star_in_u_signs)
    gk = general_k_facts()
    out["K_delta_star_from_gibbs"] = gk["K_delta_star_from_gibbs_(Z_cancels)"]
    out["delta_star_above_delta_ref_when_dr>0"], out["delta_star_negative_when_beta_delta_ref+dr<0"] = (
        pi_star_in_u_signs())
    return out


def pi_star_in_u_signs(log_weight=None) -> tuple[bool, bool]:
    """docs/theory.md §6, pi* in U: with delta* from the Gibbs form (:func:`_gibbs_delta_star`, the derivation
    general_k_facts checks), (delta* - delta_ref > 0 when r_w = r_l + dr with dr > 0, delta* < 0 when beta delta_ref
    + dr < 0), each True only when SymPy decides the sign from the symbols' assumptions. Before, the two facts read
    the signs of dr/beta and key/beta as written down, not derived, so no error in delta* could fail them."""
    dr_pos = sp.Symbol("dr_pos", positive=True)
    key_neg = sp.Symbol("key_neg", negative=True)
    d_star, d_ref = _gibbs_delta_star(log_weight)
    above = sp.simplify((d_star - d_ref).subs(_R[_w], _R[_l] + dr_pos))
    star = sp.simplify(d_star.subs(_R[_w], _R[_l] + key_neg - beta * d_ref))
    return bool(above.is_positive), bool(star.is_negative)


@lru_cache(maxsize=None)
def gradient_factor_facts() -> dict:
    """docs/theory.md §6: the factor sigma(-beta (delta - delta_ref)) decreases in delta; value 1/2 at delta_ref,
    sigma(beta delta_ref) at delta -> 0."""
    f = sp_sigma(-beta * (delta - delta_ref))
    out = {
        "factor_derivative_negative": bool(sp.simplify(sp.diff(f, delta)).is_negative),
        "factor_at_delta_ref_is_half": is_identity(f.subs(delta, delta_ref) - sp.Rational(1, 2)),
        "factor_limit_at_0_is_sigma(beta delta_ref)": is_identity(sp.limit(f, delta, 0) - sp_sigma(beta * delta_ref)),
        "factor_at_0_positive": bool(sp_sigma(beta * delta_ref).is_positive),
        "ratio_boundary_over_start_is_2sigma(beta delta_ref)": is_identity(
            f.subs(delta, 0) / f.subs(delta, delta_ref) - 2 * sp_sigma(beta * delta_ref)),
    }
    # the DPO gradient is -beta times this factor
    out["dl_ddelta_is_-beta_factor"] = is_identity(sp.diff(dpo_loss_expr(), delta) + beta * f)
    return out


@lru_cache(maxsize=None)
def bridge_facts() -> dict:
    """docs/theory.md §7: invert l, l_crit = softplus(beta delta_ref) = log(1 + (pi_ref(y_w)/pi_ref(y_l))^beta)."""
    l = dpo_loss_expr()
    inv = delta_ref - sp.log(sp.exp(l) - 1) / beta
    out = {
        "inverse_recovers_delta": is_identity(inv - delta),
        "forward_of_inverse_recovers_l": is_identity(
            dpo_loss_expr(delta_ref - sp.log(sp.exp(loss_sym) - 1) / beta) - loss_sym),
        "l_at_delta=0_is_softplus(beta delta_ref)": is_identity(l.subs(delta, 0) - sp_softplus(beta * delta_ref)),
        "l_crit_is_log(1+(a_w/a_l)^beta)": is_identity(sp.expand_log(
            sp_softplus(beta * (sp.log(pref[W]) - sp.log(pref[L])))) - sp.log(1 + (pref[W] / pref[L]) ** beta)),
        "l_strictly_decreasing": bool(sp.simplify(sp.diff(l, delta)).is_negative),
    }
    # the inverse needs e^l > 1, i.e. l > 0: at l = 0 the formula gives log(0)
    out["inverse_undefined_at_l=0"] = sp.log(sp.exp(sp.Integer(0)) - 1) == sp.zoo
    return out


@lru_cache(maxsize=None)
def soft_margin_facts() -> dict:
    """docs/theory.md §8: l = softplus(t - s); softplus(beta a)/beta - max(0, a) in [0, log 2 / beta]."""
    l = dpo_loss_expr()
    ap = sp.Symbol("a_pos", positive=True)
    an = sp.Symbol("a_neg", negative=True)
    gap_pos = sp_softplus(beta * ap) / beta - ap  # a > 0
    gap_neg = sp_softplus(beta * an) / beta  # a < 0
    out = {
        "loss_is_softplus(t-s)": is_identity(l - sp_softplus(t - s).subs({t: beta * delta_ref, s: beta * delta})),
        "softplus(z)-z_is_softplus(-z)": is_identity(sp.expand_log(sp_softplus(x) - x - sp_softplus(-x), force=True)
                                                     .rewrite(sp.exp)) or is_identity(
            sp.simplify(sp.exp(sp_softplus(x) - x) - sp.exp(sp_softplus(-x)))),
        "gap_for_a>0_is_softplus(-beta a)/beta": is_identity(sp.simplify(sp.exp(beta * gap_pos))
                                                               - sp.exp(sp_softplus(-beta * ap))),
        "gap_positive_a>0": bool(sp_softplus(-beta * ap).is_positive),
        "gap_positive_a<0": bool(gap_neg.is_positive),
        "gap_at_a=0_is_log2/beta": is_identity(sp_softplus(0 * beta) / beta - sp.log(2) / beta),
        "gap_decreasing_in_a_for_a>0": bool(sp.simplify(sp.diff(sp_softplus(-beta * ap) / beta, ap)).is_negative),
        "gap_increasing_in_a_for_a<0": bool(sp.simplify(sp.diff(gap_neg, an)).is_positive),
        "limit_beta_inf_a>0_is_a": sp.limit(sp_softplus(beta * ap) / beta, beta, sp.oo) == ap,
        "limit_beta_inf_a<0_is_0": sp.limit(sp_softplus(beta * an) / beta, beta, sp.oo) == 0,
        "target_negative_iff_delta_ref_negative": bool((beta * sp.Symbol("dn", negative=True)).is_negative)
        and bool((beta * sp.Symbol("dp", positive=True)).is_positive),
    }
    return out


def _kkt_objects():
    """The single-pair constrained problem with three responses (docs/theory.md §9a)."""
    aw = [sp.Integer(1), -sp.exp(m), sp.Integer(0)]
    Zc = sum(pref[i] * sp.exp((r[i] + mu * aw[i]) / beta) for i in range(3))
    pic = [pref[i] * sp.exp((r[i] + mu * aw[i]) / beta) / Zc for i in range(3)]
    return aw, Zc, pic


@lru_cache(maxsize=None)
def kkt_facts() -> dict:
    """docs/theory.md §9a: KKT of max J s.t. pi(y_w) - e^m pi(y_l) >= 0, sum pi = 1, closed-form pi_c and mu."""
    aw, Zc, pic = _kkt_objects()
    subs_c = {p[i]: pic[i] for i in range(3)}
    constraint = p[W] - sp.exp(m) * p[L]  # >= 0; the one expression the Lagrangian and the facts below use
    lagr = _J(p) + mu * constraint - lam * (sum(p) - 1)
    grad = [sp.diff(lagr, p[i]) for i in range(3)]
    lam_c = beta * sp.log(Zc) - beta
    out = {}
    out["stationarity_at_pi_c_(any_mu>=0)"] = all(
        is_identity_log(grad[i].subs(subs_c).subs(lam, lam_c)) for i in range(3))
    out["pi_c_sums_to_one"] = is_identity(sum(pic) - 1)
    d_ref = sp.log(pref[W]) - sp.log(pref[L])
    dr_ = r[W] - r[L]
    delta_c = sp.expand_log(sp.log(pic[W]) - sp.log(pic[L]))
    out["delta_c_is_delta_ref+(dr+mu(1+e^m))/beta"] = is_identity(
        delta_c - (d_ref + (dr_ + mu * (1 + sp.exp(m))) / beta))
    mu_active = (beta * m - beta * d_ref - dr_) / (1 + sp.exp(m))
    out["active_mu_makes_delta_c=m"] = is_identity(delta_c.subs(mu, mu_active) - m)
    # complementary slackness: pi_w - e^m pi_l = pi_l (e^{delta_c} - e^m), zero when delta_c = m
    slack = pic[W] - sp.exp(m) * pic[L]
    out["slack_is_pi_l(e^delta_c - e^m)"] = is_identity(sp.simplify(slack - pic[L] * (sp.exp(delta_c) - sp.exp(m))))
    ratio = sp.simplify(pic[W] / pic[L])
    log_ratio_active = sp.expand(sp.expand_log(sp.log(ratio.subs(mu, mu_active))))
    out["slack_zero_at_active_mu_(pi_w/pi_l=e^m)"] = is_identity(log_ratio_active - m)
    # inactive case mu = 0: pi_c = pi*, feasible iff beta m - beta delta_ref - dr <= 0
    pstar = [pref[i] * sp.exp(r[i] / beta) for i in range(3)]
    Zs = sum(pstar)
    out["mu=0_gives_pi_star"] = all(is_identity(pic[i].subs(mu, 0) - pstar[i] / Zs) for i in range(3))
    # linear in pi (every second derivative, mixed ones included, is 0) with gradient aw, the tilt of the closed form
    out["constraint_linear_in_pi"] = (all(sp.diff(constraint, p[i], p[j]) == 0 for i in range(3) for j in range(3))
                                     and all(is_identity(sp.diff(constraint, p[i]) - aw[i]) for i in range(3)))
    out["objective_strictly_concave"] = rlhf_facts()["hessian_negative_definite_(beta>0,pi>0)"]
    # log-form constraint log pi_w - log pi_l >= m: its multiplier nu with nu/pi_w = mu, nu/pi_l = mu e^m at pi_c
    # log-form constraint log pi_w - log pi_l >= m, multiplier nu: stationarity needs nu/pi_w = mu at y_w and
    # nu/pi_l = mu e^m at y_l; nu = mu pi_c(y_w) gives nu/pi_l = mu pi_w/pi_l = mu e^m when the constraint is active
    # nu = mu pi_c(y_w): nu/pi_c(y_w) = mu holds by construction; the content is nu/pi_c(y_l) = mu e^m, which needs
    # the active multiplier (it is false for a generic mu)
    nu = mu * pic[W]
    # nu/pi_c(y_l) = mu e^{delta_c} (delta_c the derived closed form), = mu e^m exactly when delta_c = m (active)
    out["log_form_multiplier_nu=mu_pi_c(y_w)"] = is_identity(
        nu / pic[L] - mu * sp.exp(d_ref + (dr_ + mu * (1 + sp.exp(m))) / beta)) and out["active_mu_makes_delta_c=m"]
    # ... and the content holds at the active multiplier but not for a generic mu: nu/pi_c(y_l) = mu pi_c(y_w)/pi_c(y_l)
    # identically, = mu e^m at the active mu (the ratio proved above), and false at one exact point (mu = 1, beta = 1,
    # m = 1, pi_ref uniform, r = 0: e^(1 + e) - e = 38.5); not "simplify does not reach 0", which proves nothing (and
    # held for pi_c(y_l)/nu too, a survivor of mutation)
    point = {mu: 1, beta: 1, m: 1, **{pref[i]: sp.Rational(1, 3) for i in range(3)}, **{r[i]: 0 for i in range(3)}}
    out["log_form_needs_active_mu"] = bool(is_identity(nu / pic[L] - mu * ratio)
                                           and out["slack_zero_at_active_mu_(pi_w/pi_l=e^m)"]
                                           and abs(sp.N((nu / pic[L] - mu * sp.exp(m)).subs(point), 30)) > 1)
    return out


@lru_cache(maxsize=None)
def penalised_facts() -> dict:
    """docs/theory.md §9b: Eq. 10's objective F = J + gamma (log pi_w - log pi_l): unboundedness, stationarity,
    the two-response classification of its stationary points, and gamma versus the KKT multiplier."""
    out = {}
    F = _J(p) + gamma * (sp.log(p[W]) - sp.log(p[L]))
    # unbounded along pi = (1/2, eps, 1/2 - eps)
    eps = sp.Symbol("eps", positive=True)
    path = {p[W]: sp.Rational(1, 2), p[L]: eps, p[O]: sp.Rational(1, 2) - eps}
    # the limit is J at the boundary point (1/2, 0, 1/2) (0 log 0 = 0): finite, and this value (is_finite alone
    # held for a wrong limit too: sp.limit(eps, J, 0) returns the finite symbol eps)
    j_lim = sp.limit(_J(p).subs(path), eps, 0, "+")
    j_edge = (r[W] + r[O]) / 2 - beta * (sp.log(sp.Rational(1, 2)) - (sp.log(pref[W]) + sp.log(pref[O])) / 2)
    out["J_limit_finite_as_pi_l_to_0"] = bool(j_lim.is_finite) and is_identity_log(j_lim - j_edge)
    out["F_limit_is_+inf_as_pi_l_to_0"] = sp.limit(F.subs(path), eps, 0, "+") == sp.oo
    # interior stationarity with multiplier lambda for sum pi = 1; subtracting the y_w and y_l equations
    lagr = F - lam * (sum(p) - 1)
    gw, gl = sp.diff(lagr, p[W]), sp.diff(lagr, p[L])
    d_pol = sp.log(p[W]) - sp.log(p[L])
    d_ref = sp.log(pref[W]) - sp.log(pref[L])
    m_star = gamma * (1 / p[W] + 1 / p[L])
    out["stationarity_difference_is_dr+m*-beta(delta-delta_ref)"] = is_identity_log(
        (gw - gl) - ((r[W] - r[L]) + m_star - beta * (d_pol - d_ref)))
    # 1/pi_w + 1/pi_l - 4/(pi_w + pi_l) = (pi_w - pi_l)^2 / (pi_w pi_l (pi_w + pi_l)) >= 0, and pi_w + pi_l <= 1
    out["m*_at_least_4gamma_(AM-HM)"] = is_identity(
        1 / p[W] + 1 / p[L] - 4 / (p[W] + p[L]) - (p[W] - p[L]) ** 2 / (p[W] * p[L] * (p[W] + p[L])))
    # two responses: p = sigma(x), delta = x; dF/dp = G(x)
    pw2, pl2 = sp_sigma(x), sp_sigma(-x)
    G = gamma * (sp.exp(x) + 2 + sp.exp(-x)) - beta * x + beta * delta_ref + dr
    F2 = pw2 * r[W] + pl2 * r[L] - beta * (pw2 * (sp.log(pw2) - sp.log(pref[W]))
                                           + pl2 * (sp.log(pl2) - sp.log(pref[L])))
    F2 = F2 + gamma * (sp.log(pw2) - sp.log(pl2))
    dFdx = sp.diff(F2, x)
    dpdx = sp.diff(pw2, x)
    G_sub = G.subs({delta_ref: sp.log(pref[W]) - sp.log(pref[L]), dr: r[W] - r[L]})
    out["two_responses_dF/dp_is_G(x)"] = is_identity(sp.simplify(sp.expand_log(dFdx / dpdx, force=True) - G_sub))
    out["G_strictly_convex"] = bool(sp.diff(G, x, 2).is_positive)
    out["G_to_+inf_both_ends"] = sp.limit(G, x, sp.oo) == sp.oo and sp.limit(G, x, -sp.oo) == sp.oo
    zz = beta / (2 * gamma)
    x0 = sp.log(zz + sp.sqrt(zz ** 2 + 1))  # = asinh(beta / (2 gamma))
    out["x0_is_asinh(beta/(2gamma))"] = is_identity(sp.asinh(zz).rewrite(sp.log) - x0)
    out["G'(x0)=0"] = is_identity(sp.diff(G, x).subs(x, x0))
    G_min = sp.sqrt(4 * gamma ** 2 + beta ** 2) + 2 * gamma - beta * x0 + beta * delta_ref + dr
    out["G_min_closed_form"] = is_identity(G.subs(x, x0) - G_min)
    # pi_c of §9a is stationary for F with gamma = nu* = mu pi_c(y_w) (two responses, active constraint):
    # then G(m) = 0 with pi_w = sigma(m)
    mu_active = (beta * m - beta * delta_ref - dr) / (1 + sp.exp(m))
    nu_star = mu_active * sp_sigma(m)
    out["pi_c_stationary_for_gamma=nu*"] = is_identity(G.subs(x, m).subs(gamma, nu_star))
    # kind at pi_c: G'(m) with gamma = nu* equals mu (e^m - 1) - beta
    out["G'(m)_at_gamma=nu*_is_mu(e^m-1)-beta"] = is_identity(
        sp.diff(G, x).subs(x, m).subs(gamma, nu_star) - (mu_active * (sp.exp(m) - 1) - beta))
    out["_exprs"] = {"G": G, "G_min": G_min, "x0": x0}
    return out
