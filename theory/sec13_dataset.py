"""Symbolic methods for the data-set-level claims (docs/theory.md §13): comparison multigraphs, lists, lengths.

Each public ``*_symbolic(ctx)`` is one method of one claim and returns a
:class:`~dpo_rlhf_checks.result.MethodResult`. Identities are proved with ``simplify(lhs - rhs) == 0``
under declared assumptions and backed by a numeric evaluation at random points (mpmath, 50 digits).
These methods build their own SymPy expressions of every loss; they take no toolkit formula as given.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import sympy as sp

from dpo_rlhf_checks.registry import get_claim
from dpo_rlhf_checks.result import CheckContext, MethodResult

beta = sp.Symbol("beta", positive=True)


def _sigma(z):
    return 1 / (1 + sp.exp(-z))


def _softplus(z):
    return sp.log(1 + sp.exp(z))


def _zero(expr) -> bool:
    return sp.simplify(expr) == 0


def _num_zero(expr, syms, rng, n=5, tol=1e-30) -> float:
    """max |expr| at n random points (mpmath, 50 digits); syms positive ones drawn in (0.2, 3)."""
    worst = 0.0
    for _ in range(n):
        vals = {s: sp.Float(float(rng.uniform(0.2, 3.0)), 50) for s in syms}
        worst = max(worst, abs(float(sp.N(expr.subs(vals), 50))))
    return worst


# ---------------------------------------------------------------------------------------------------------------
# dataset-ordered-minimiser
# ---------------------------------------------------------------------------------------------------------------


#: The 3-cycle of (4): 0 > 1 twice, 1 > 2 once, 2 > 0 once, no label in the reverse order on any edge.
CYCLE_LABELS = {(0, 1): 2, (1, 2): 1, (2, 0): 1}
#: The pooled graph of (5): 0 v 1 split 1:1, 0 > 2 3:1, 2 > 1 3:1.
POOLED_LABELS = {(0, 1): 1, (1, 0): 1, (0, 2): 3, (2, 0): 1, (2, 1): 3, (1, 2): 1}


def _pair_logodds(labels: dict) -> dict:
    """The literal's prediction log(n_ij / n_ji) per labelled pair (i, j), exact: a SymPy log of a rational, or the
    limit +oo of log(n_ij / x) as x -> 0+ when the pair has no label in the reverse order."""
    x = sp.Symbol("x", positive=True)
    out = {}
    for (i, j), n in labels.items():
        back = labels.get((j, i), 0)
        out[(i, j)] = sp.log(sp.Rational(n, back)) if back else sp.limit(sp.log(sp.Integer(n) / x), x, 0, "+")
    return out


def _literal_mismatch(beta_h: dict, logodds: dict, tol: float = 1e-30) -> dict:
    """The labelled pairs where the minimiser's beta h_ij differs from log(n_ij / n_ji) (an infinite log-odds never
    equals a finite h), as {"(i,j)": [beta h, log-odds]}; empty when the literal prediction holds on every pair."""
    bad = {}
    for pair, lo in logodds.items():
        h = beta_h.get(pair)
        if h is None:
            continue
        if not lo.is_finite or abs(float(sp.N(h - lo, 50))) > tol:
            bad[f"({pair[0]},{pair[1]})"] = [float(sp.N(h, 20)), str(lo)]
    return bad


def dataset_minimiser_symbolic(ctx: CheckContext) -> MethodResult:
    """The empirical ordered-pair DPO loss on four hand-derived graphs, by SymPy.

    (1) Identity: sum n_ij softplus(-beta h_ij) = -sum n_ij log(e^theta_i/(e^theta_i + e^theta_j)), theta = beta u
        (the DPO loss is the BT negative log-likelihood). (2) Contradictory repeats a:b: the stationary point
        h = log(a/b)/beta, second derivative > 0: a finite minimiser, equal to the pair's label log-odds.
    (3) Single pair and chain 0>1>2: along d = (1, 0) resp. (2, 1, 0) the directional derivative
        -beta sum n_e (d_w - d_l) sigma(-beta h_e) is < 0 at every point: no stationary point, no finite minimiser.
    (4) 3-cycle 0>1 (2 labels), 1>2, 2>0 (1 each): stationarity is flow conservation n_e sigma(-beta h_e) = k with
        h summing to 0 around the cycle, i.e. (2-k)(1-k)^2 = k^3; its root gives a finite minimiser although every
        pair's own label log-odds is infinite (no label in the other order).
    (5) Pooled: 0v1 1:1, 0>2 3:1, 2>1 3:1: by the swap symmetry theta = (t, -t, 0); stationarity at 0 reads
        2 sigma(2t) + 4 sigma(t) = 4, a cubic in z = e^t with one positive root: t > 0, so beta h_01 = 2t != log(1/1) = 0.
    Literal (finite minimiser with beta h_ij = log(n_ij/n_ji) for every data set) fails on (3), (4), (5); amended
    (finite iff each weak component of the win graph is strongly connected, then the BT MLE) holds on all five,
    whose strong connectivity is read off by construction (2, 4, 5 strongly connected; 3 not).
    """
    rng = np.random.default_rng(ctx.seed + 1301)
    t0, t1, t2 = sp.symbols("theta0 theta1 theta2", real=True)
    n01, n12 = sp.symbols("n01 n12", positive=True)
    h01, h12 = sp.symbols("h01 h12", real=True)

    # (1) the loss is the BT negative log-likelihood with theta = beta u
    u0, u1 = sp.symbols("u0 u1", real=True)
    dpo = n01 * _softplus(-beta * (u0 - u1))
    bt = -n01 * sp.log(sp.exp(beta * u0) / (sp.exp(beta * u0) + sp.exp(beta * u1)))
    # proved by simplify AND evaluated at 50 digits (random n01, beta and utilities, |u0 - u1| up to 60): the numbers
    # can fail an identity that a wrong simplification "proved", and neither alone passes it
    identity_proved = _zero(sp.expand_log(sp.simplify(dpo - bt), force=True))
    u_pts = [{u0: sp.Float(float(x), 50), u1: sp.Float(float(y), 50)} for x, y in rng.uniform(-30, 30, size=(3, 2))]
    identity_num = max(_num_zero((dpo - bt).subs(pt), [n01, beta], rng, n=2) for pt in u_pts)
    identity = identity_proved and identity_num < 1e-40

    # (2) contradictory repeats a:b on one pair
    a, b = sp.symbols("a b", positive=True)
    h = sp.Symbol("h", real=True)
    loss2 = a * _softplus(-beta * h) + b * _softplus(beta * h)
    crit = sp.solve(sp.Eq(sp.diff(loss2, h), 0), h)
    h_star = sp.log(a / b) / beta
    crit_ok = len(crit) == 1 and _zero(sp.expand_log(crit[0] - h_star, force=True))
    curv = sp.simplify(sp.diff(loss2, h, 2).subs(h, h_star))
    curv_pos_proved = bool(curv.is_positive)
    curv_min_num = _num_zero(sp.Min(curv, 0), [a, b, beta], rng)  # 0 exactly where the curvature is positive
    curv_pos = curv_pos_proved and curv_min_num == 0.0

    # (3) single pair and chain: a strictly negative directional derivative everywhere
    single = sp.diff(n01 * _softplus(-beta * h01), h01)  # along d = (1, 0): dh01/dt = 1
    tt = sp.Symbol("t", real=True)
    chain_loss = n01 * _softplus(-beta * (h01 + tt)) + n12 * _softplus(-beta * (h12 + tt))  # d = (2, 1, 0)
    chain = sp.diff(chain_loss, tt).subs(tt, 0)
    single_neg = bool(sp.simplify(single).is_negative)
    chain_neg = bool(sp.simplify(chain).is_negative)
    # numeric back-up at random points including large |h|
    pts = [(float(x), float(y)) for x, y in rng.uniform(-30, 30, size=(6, 2))]
    chain_vals = [float(sp.N(chain.subs({h01: x, h12: y, n01: 1, n12: 2, beta: 0.5}), 50)) for x, y in pts]
    chain_neg_num = all(v < 0 for v in chain_vals)

    # (4) 3-cycle 0>1>2>0 with the counts of CYCLE_LABELS and no reverse label: flow conservation
    edges = list(CYCLE_LABELS)
    counts = [sp.Integer(CYCLE_LABELS[e]) for e in edges]
    k = sp.Symbol("k", positive=True)
    flow_eq = sp.Mul(*[(n_e - k) for n_e in counts]) - k ** len(counts)  # sum_e log((n_e - k)/k) = 0
    roots = [rt for rt in sp.solve(sp.Eq(flow_eq, 0), k) if rt.is_real and 0 < rt < min(counts)]
    cycle_finite = len(roots) == 1
    cycle_h = {}
    cycle_grad = math.inf
    if cycle_finite:
        kk = roots[0]
        # beta h_e = log((n_e - k)/k): n_e sigma(-beta h_e) = k
        cycle_h = {e: sp.log((n_e - kk) / kk) for e, n_e in zip(edges, counts)}
        # gradient of the loss at theta with theta_i - theta_j = beta h_ij around the cycle (theta_0 = 0)
        tv = (t0, t1, t2)
        th = {t0: 0}
        for (i, j) in edges[:-1]:
            th[tv[j]] = th[tv[i]] - cycle_h[(i, j)]
        cyc = sum(n_e * _softplus(-(tv[i] - tv[j])) for (i, j), n_e in zip(edges, counts))
        cycle_grad = max(abs(float(sp.N(sp.diff(cyc, v).subs(th), 50))) for v in tv)
        cycle_sum = float(sp.N(sum(cycle_h.values()), 50))
        cycle_finite = cycle_grad < 1e-40 and abs(cycle_sum) < 1e-40
    # the literal's prediction for every labelled pair, from the labels themselves: beta h_ij = log(n_ij / n_ji)
    cycle_logodds = _pair_logodds(CYCLE_LABELS)
    cycle_mismatch = _literal_mismatch(cycle_h, cycle_logodds)
    cycle_literal_holds = cycle_finite and not cycle_mismatch

    # (5) pooled: theta = (t, -t, 0)
    z = sp.Symbol("z", positive=True)
    zs = [s for s in sp.solve(sp.Eq(2 * z ** 2 / (1 + z ** 2) + 4 * z / (1 + z), 4), z) if s.is_positive]
    pooled_t = sp.log(zs[0]) if len(zs) == 1 else None
    pooled_ok = False
    pooled_h01 = None
    pooled_mismatch = {"no stationary point found": True}
    if pooled_t is not None:
        th = {t0: pooled_t, t1: -pooled_t, t2: 0}
        tv = (t0, t1, t2)
        pl = sum(n * _softplus(-(tv[i] - tv[j])) for (i, j), n in POOLED_LABELS.items())
        pooled_grad = max(abs(float(sp.N(sp.diff(pl, v).subs(th), 50))) for v in tv)
        pooled_h01 = float(sp.N(2 * pooled_t, 30))
        pooled_ok = pooled_grad < 1e-40
        pooled_h = {(i, j): th[tv[i]] - th[tv[j]] for (i, j) in POOLED_LABELS}  # beta h_ij = theta_i - theta_j
        pooled_mismatch = _literal_mismatch(pooled_h, _pair_logodds(POOLED_LABELS))
    pooled_literal_holds = pooled_ok and not pooled_mismatch

    literal = bool(crit_ok and not (single_neg and chain_neg) and cycle_literal_holds and pooled_literal_holds)
    amended = bool(identity and crit_ok and curv_pos and single_neg and chain_neg and chain_neg_num and cycle_finite
                   and pooled_ok)
    evidence = {
        "bt_identity_proved": identity_proved, "bt_identity_numeric_max_err": identity_num,
        "contradictory_h_star": str(h_star), "contradictory_stationary_point_proved": crit_ok,
        "contradictory_curvature_positive_proved": curv_pos_proved,
        "contradictory_curvature_min_numeric": curv_min_num, "contradictory_curvature_positive": curv_pos,
        "single_pair_directional_derivative": str(sp.simplify(single)), "single_pair_always_negative": single_neg,
        "chain_directional_derivative_negative": chain_neg, "chain_negative_at_random_points": chain_neg_num,
        "cycle_k": str(roots[0]) if roots else None, "cycle_k_float": float(sp.N(roots[0])) if roots else None,
        "cycle_beta_h": {f"({i},{j})": float(sp.N(v, 20)) for (i, j), v in cycle_h.items()},
        "cycle_gradient_max": cycle_grad, "cycle_finite_minimiser": cycle_finite,
        "cycle_pair_logodds": {f"({i},{j})": str(v) for (i, j), v in cycle_logodds.items()},
        "cycle_literal_holds": cycle_literal_holds,
        "pooled_t": str(pooled_t), "pooled_beta_h01": pooled_h01,
        "pooled_pair_logodds": {f"({i},{j})": str(v) for (i, j), v in _pair_logodds(POOLED_LABELS).items()},
        "pooled_mismatch": pooled_mismatch, "pooled_literal_holds": pooled_literal_holds,
        "pooled_stationary_proved": pooled_ok,
    }
    cex = None if literal else {
        "single_pair": "labels [[0, 1, 1]]: dL/dt along (1, 0) = -beta n sigma(-beta h) < 0 everywhere: no minimiser",
        "3-cycle (2,1,1)": {"beta_h": evidence["cycle_beta_h"], "pair_logodds": evidence["cycle_pair_logodds"],
                            "mismatch": cycle_mismatch},
        "pooled": {"beta_h01": pooled_h01, "pair_logodds": evidence["pooled_pair_logodds"],
                   "mismatch": pooled_mismatch},
    }
    summary = (f"a:b pair h*=log(a/b)/beta proved={crit_ok}; single/chain no stationary point={single_neg and chain_neg}; "
               f"3-cycle(2,1,1) finite beta h01={evidence['cycle_beta_h'].get('(0,1)', float('nan')):.6f} "
               f"(pair log-odds {evidence['cycle_pair_logodds'].get('(0,1)')}); pooled beta h01=2t={pooled_h01:.6f} "
               f"vs log-odds {evidence['pooled_pair_logodds'].get('(0,1)')}")
    return MethodResult(literal=literal, amended=amended, summary=summary, evidence=evidence, depends_on=(
        "theory.sec13_dataset._num_zero", "theory.sec13_dataset._softplus", "theory.sec13_dataset._zero",
        "theory.sec13_dataset._literal_mismatch", "theory.sec13_dataset._pair_logodds",),
                        counterexample=cex,
                        amended_statement=(get_claim("dataset-ordered-minimiser").amendment
                                           if amended else None))


# ---------------------------------------------------------------------------------------------------------------
# listwise-equivalence
# ---------------------------------------------------------------------------------------------------------------


def _pl_expr(s_list):
    """-sum_t log(exp(s_t) / sum_{t' >= t} exp(s_t')) as a SymPy expression."""
    return sum(-sp.log(sp.exp(s_list[t]) / sum(sp.exp(v) for v in s_list[t:])) for t in range(len(s_list) - 1))


def listwise_symbolic(ctx: CheckContext) -> MethodResult:
    """k = 3 by SymPy. (1) The expected PL loss under PL(r) (6 rankings) has zero gradient at s = r (simplify), and its
    Hessian there is positive semidefinite with the constants as its only null direction: the population minimiser is
    s = r + c, i.e. pi*. (2) pi*'s order: v_t - v_{t+1} = delta_ref + dr/beta per adjacent pair and v_1 - v_3 is their
    sum (adjacent suffices). (3) One ranking: dL/dT < 0 along s = T (2, 1, 0) for all T: no finite minimiser.
    (4) The misordered infimum: at s = (T, 0, c) the loss tends to softplus(c) as T -> inf (sympy limit), and the
    term at position 2 is >= softplus(s_3 - s_2). (5) A correctly ordered reference (beta delta_ref(y_2, y_3) = 1 <
    log 5) with a misordered policy of loss < log 6, evaluated exactly.
    Literal (pairwise condition on adjacent pairs decides the population optimum's agreement, AND the listwise U is
    non-empty only when the reference misorders a pair) fails on (5); amended holds if (1)-(5) hold.
    """
    r1, r2, r3 = sp.symbols("r1 r2 r3", real=True)
    s1, s2, s3 = sp.symbols("s1 s2 s3", real=True)
    rv, sv = (r1, r2, r3), (s1, s2, s3)
    perms = list(itertools.permutations(range(3)))
    logp = {p: -_pl_expr([rv[i] for i in p]) for p in perms}
    pop = sum(sp.exp(logp[p]) * _pl_expr([sv[i] for i in p]) for p in perms)
    at_r = {s1: r1, s2: r2, s3: r3}
    grads = [sp.diff(pop, v).subs(at_r) for v in sv]
    # component 0 by simplify; components 1 and 2 are component 0 with the responses relabelled (E_PL(r)[L(s)] is
    # symmetric under permuting (r, s) together), and all three are checked numerically at 50 digits below
    rng = np.random.default_rng(ctx.seed + 1350)  # before its first use (the 50-digit check of the symmetry)
    grad_zero = _zero(grads[0])
    relabel = {r1: r2, r2: r1, s1: s2, s2: s1}
    relabelled_minus_pop = pop.subs(relabel, simultaneous=True) - pop  # one substitution for both checks
    symmetric_proved = _zero(sp.expand(relabelled_minus_pop))
    symmetric_num = _num_zero(relabelled_minus_pop, [r1, r2, r3, s1, s2, s3], rng)
    symmetric = symmetric_proved and symmetric_num < 1e-40  # proved AND at 50 digits: either can fail it
    pts = [{r1: sp.Float(repr(float(a)), 40), r2: sp.Float(repr(float(b)), 40), r3: sp.Float(repr(float(c)), 40)}
           for a, b, c in rng.normal(0, 1.5, size=(4, 3))]
    grad_num = max(abs(float(sp.N(g.subs(pt), 40))) for g in grads for pt in pts)
    hess = sp.Matrix(3, 3, lambda i, j: sp.diff(pop, sv[i], sv[j])).subs(at_r)
    hess_eigs = []
    for pt in pts[:2]:
        ev = np.linalg.eigvalsh(np.array(hess.subs(pt).evalf(30), dtype=float))
        hess_eigs.append(ev.tolist())
    psd_one_null = all(abs(e[0]) < 1e-10 and e[1] > 1e-6 for e in hess_eigs)

    # (2) order of pi*: v = log pi_ref + r/beta
    lr = sp.symbols("l1 l2 l3", real=True)
    v = [lr[i] + rv[i] / beta for i in range(3)]
    adj = [(lr[i] - lr[i + 1]) + (rv[i] - rv[i + 1]) / beta for i in range(2)]
    adjacent_ok = all(_zero(v[i] - v[i + 1] - adj[i]) for i in range(2)) and _zero((v[0] - v[2]) - adj[0] - adj[1])

    # (3) one ranking: no finite minimiser
    T = sp.Symbol("T", real=True)
    one = _pl_expr([2 * T, T, 0 * T])
    d_one = sp.simplify(sp.diff(one, T))
    one_neg = bool(d_one.is_negative)  # the sign for every real T, proved by SymPy (None: not proved, the claim fails)

    # (4) infimum over misordered policies
    c = sp.Symbol("c", real=True)
    lim = sp.limit(_pl_expr([T, sp.Integer(0), c]), T, sp.oo)
    lim_ok = _zero(lim - _softplus(c))
    term2 = -sp.log(sp.exp(s2) / (sp.exp(s2) + sp.exp(s3)))
    # equal logs <=> equal arguments: compare exp of both sides (simplify does not merge the logs itself)
    term2_bound = _zero(sp.exp(term2) - sp.exp(_softplus(s3 - s2)))

    # (5) a correctly ordered reference, a misordered policy below log 6
    bval = sp.Integer(1)
    # an ordered reference, normalised: pi_ref proportional to (1, e^-1, e^-2)
    zsum = sp.log(1 + sp.exp(-1) + sp.exp(-2))
    log_ref = [sp.Integer(0) - zsum, -1 - zsum, -2 - zsum]
    u = [sp.Integer(10), sp.Integer(0), sp.Rational(11, 10)]  # s = beta u, beta = 1
    log_pi_un = [log_ref[i] + u[i] for i in range(3)]
    misordered = bool(sp.N(log_pi_un[2] - log_pi_un[1], 30) > 0)
    loss5 = _pl_expr([bval * x for x in u])
    below = bool(sp.N(loss5 - sp.log(6), 30) < 0)
    ref_ordered = all(bool(sp.N(log_ref[i] - log_ref[i + 1]) > 0) for i in range(2))
    # beta and u as used above (not retyped), so the example reproduces from its own numbers
    example = {"pi_ref_proportional_to": "(1, e^-1, e^-2)", "beta": int(bval),
               "u = log pi - log pi_ref": [float(x) for x in u],
               "loss": float(sp.N(loss5, 20)), "log 6": float(sp.N(sp.log(6), 20)),
               "log pi(y_3) - log pi(y_2)": float(sp.N(log_pi_un[2] - log_pi_un[1], 20))}
    literal = bool(grad_zero and adjacent_ok and not (ref_ordered and misordered and below))
    amended = bool(grad_zero and symmetric and grad_num < 1e-30 and psd_one_null and adjacent_ok and one_neg and lim_ok
                   and term2_bound and ref_ordered and misordered and below)
    evidence = {"population_gradient_zero_at_r": grad_zero, "relabelling_symmetry": symmetric,
                "relabelling_symmetry_proved": symmetric_proved, "relabelling_symmetry_numeric_max": symmetric_num,
                "gradient_numeric_max": grad_num,
                "hessian_eigenvalues": hess_eigs, "hessian_psd_one_null_direction": psd_one_null,
                "adjacent_pairs_decide_pi_star_order": adjacent_ok, "one_ranking_derivative": str(d_one),
                "one_ranking_no_minimiser": one_neg, "misordered_limit": str(lim), "limit_is_softplus_c": lim_ok,
                "term_bound_identity": term2_bound, "example": example}
    cex = None if literal else {"listwise_U_with_ordered_reference": example}
    summary = (f"k=3: grad of E_PL(r)[L] at s=r is 0 ({grad_zero}, num {grad_num:.0e}), Hessian PSD w/ 1 null dir "
               f"({psd_one_null}); adjacent decides pi* order ({adjacent_ok}); inf over misordered = softplus(c) "
               f"({lim_ok}); ordered ref yet L={example['loss']:.4f} < log 6={example['log 6']:.4f} misordered")
    return MethodResult(literal=literal, amended=amended, summary=summary, evidence=evidence, depends_on=(
        "theory.sec13_dataset._pl_expr", "theory.sec13_dataset._softplus", "theory.sec13_dataset._zero",
        "theory.sec13_dataset._num_zero",
    ),
                        counterexample=cex,
                        amended_statement=(get_claim("listwise-equivalence").amendment
                                           if amended else None))


# ---------------------------------------------------------------------------------------------------------------
# length-normalised
# ---------------------------------------------------------------------------------------------------------------


def _length_instances() -> tuple[dict, dict]:
    """Two policies from the derivation of :func:`length_symbolic`: ex1 on the minimiser set of (3), delta_mean = c =
    2/5 with |y_w| = 100 > |y_l| = 20, b = -20, so a = L_w (c + b/L_l); ex2 with |y_w| = 5 < |y_l| = 40, b = -20 and a
    summed delta d = 10, so a = b + d. Exact rationals."""
    c1, lw1, ll1, b1 = sp.Rational(2, 5), sp.Integer(100), sp.Integer(20), sp.Integer(-20)
    d2, lw2, ll2, b2 = sp.Integer(10), sp.Integer(5), sp.Integer(40), sp.Integer(-20)
    return ({"a": lw1 * (c1 + b1 / ll1), "L_w": lw1, "b": b1, "L_l": ll1, "c": c1},
            {"a": b2 + d2, "L_w": lw2, "b": b2, "L_l": ll2})


def _exp_sum_at_most_one(a: sp.Rational, b: sp.Rational) -> bool:
    """Whether e^a + e^b <= 1, decided exactly for rational a, b (log-probabilities of two responses).

    a >= 0 or b >= 0: never (one term is >= 1, the other > 0). Otherwise e^a + e^b <= 1 iff b <= log(1 - e^a), and
    b = log(1 - e^a) cannot hold for rational a, b < 0 (Lindemann-Weierstrass: 1, e^a, e^b are linearly independent
    over the rationals when 0, a, b are distinct, and 2 e^a = 1 needs a = -log 2), so the sign of b - log(1 - e^a)
    is decided by interval arithmetic (mpmath.iv, outward rounding) at doubling precision until the interval
    excludes 0. A fixed-digit evaluation of e^a + e^b would round e^0 + e^-80 to 1 and call it feasible.
    """
    from mpmath.ctx_iv import MPIntervalContext

    if a >= 0 or b >= 0:
        return False
    iv = MPIntervalContext()  # a private context: its precision is not mpmath.iv's global one
    iv.prec = 64
    while iv.prec <= 1 << 16:
        a_iv = iv.mpf(int(a.p)) / iv.mpf(int(a.q))
        b_iv = iv.mpf(int(b.p)) / iv.mpf(int(b.q))
        gap = b_iv - iv.log(-iv.expm1(a_iv))  # b - log(1 - e^a); expm1: no cancellation in 1 - e^a
        if gap.b < 0:
            return True
        if gap.a > 0:
            return False
        iv.prec *= 2
    raise ValueError(f"cannot decide e^a + e^b <= 1 for a = {a}, b = {b} within {1 << 16} bits")


def _length_row(ex: dict) -> dict:
    """delta = a - b and delta_mean = a/L_w - b/L_l evaluated exactly from the instance alone (as strings of exact
    rationals); feasible when a, b <= 0 and e^a + e^b <= 1 (a policy; decided exactly, :func:`_exp_sum_at_most_one`);
    the signs disagree when one is > 0 and the other is not."""
    a, b, lw_, ll_ = (sp.Rational(ex[k]) for k in ("a", "b", "L_w", "L_l"))
    d, dm = a - b, a / lw_ - b / ll_
    feasible = bool(a <= 0 and b <= 0 and _exp_sum_at_most_one(a, b))
    return {"a": str(a), "L_w": str(lw_), "b": str(b), "L_l": str(ll_), "delta": str(d), "delta_mean": str(dm),
            "feasible": feasible, "signs_disagree": bool((d > 0) != (dm > 0))}


def length_symbolic(ctx: CheckContext) -> MethodResult:
    """SymPy. (1) The BT population mean-delta loss q softplus(-beta x) + (1-q) softplus(beta x), x = delta_mean -
    delta_mean_ref, q = sigma(dr), has its unique stationary point at beta x = dr. (2) With a, b <= 0 and L_l = L_w + e
    (e >= 0): a - b = L_w (a/L_w - b/L_l) + (-b) e / L_l... i.e. delta = L_w delta_mean + b (L_w/L_l - 1), the second
    term >= 0: delta_mean > 0 => delta > 0; symmetrically delta > 0 => delta_mean > 0 when L_w >= L_l; with equal
    lengths delta_mean = delta / L (so the mean condition is the summed one at beta / L). (3) On the
    minimiser set delta_mean = c: delta(b) = L_w c + b (L_w/L_l - 1) -> -inf as b -> -inf for every L_w > L_l (+inf
    for every L_w < L_l). (4) Exact
    counterexamples: (a, L_w, b, L_l) = (-60, 100, -20, 20): delta_mean = 2/5 > 0, delta = -40; and (-10, 5, -20, 40):
    delta = 10 > 0, delta_mean = -3/2.
    Literal (the mean condition and certificate say the same as the summed ones) fails on (4); amended holds if (1)-(3) hold.
    """
    x = sp.Symbol("x", real=True)
    drs = sp.Symbol("dr", real=True)
    q = _sigma(drs)
    pop = q * _softplus(-beta * x) + (1 - q) * _softplus(beta * x)
    sols = sp.solve(sp.Eq(sp.diff(pop, x), 0), x)
    stat_ok = len(sols) == 1 and _zero(sp.simplify(beta * sols[0] - drs))
    curv = sp.diff(pop, x, 2)
    curv_pos_proved = bool(sp.simplify(curv).is_positive)
    curv_vals = [float(sp.N(curv.subs({x: xv, drs: dv, beta: 1.3}), 30))
                 for xv in (-20, -1, 0, 2, 20) for dv in (-3, 0, 4)]
    curv_pos = curv_pos_proved and min(curv_vals) > 0  # proved AND positive at the points: either can fail it

    a, b = sp.symbols("a b", nonpositive=True)
    lw, ll, e = sp.Symbol("L_w", positive=True), sp.Symbol("L_l", positive=True), sp.Symbol("e", nonnegative=True)
    dmean = a / lw - b / ll
    decomposition = _zero((a - b) - (lw * dmean + b * (lw / ll - 1)))
    extra_short_w = (b * (lw / (lw + e) - 1))  # L_l = L_w + e >= L_w
    short_w_nonneg = bool(sp.simplify(extra_short_w).is_nonnegative)
    # delta > 0 => delta_mean > 0 when L_w >= L_l: delta_mean = delta/L_w + b (1/L_w - 1/L_l), second term >= 0
    decomposition2 = _zero(dmean - ((a - b) / lw + b * (1 / lw - 1 / ll)))
    equal_lengths_scale = _zero(dmean.subs(ll, lw) - (a - b) / lw)  # |y_w| = |y_l| = L: delta_mean = delta / L
    extra_long_w = b * (1 / (ll + e) - 1 / ll)  # L_w = L_l + e >= L_l
    long_w_nonneg = bool(sp.simplify(extra_long_w).is_nonnegative)

    c, bb = sp.Symbol("c", real=True), sp.Symbol("bb", real=True)
    delta_on_set = lw * c + bb * (lw / ll - 1)
    # for every pair of lengths, not one: L_w = L_l + g and L_l = L_w + g with g > 0 (the sign of L_w/L_l - 1 decides)
    g = sp.Symbol("g", positive=True)
    lim_long = sp.limit(delta_on_set.subs(lw, ll + g), bb, -sp.oo)
    lim_short = sp.limit(delta_on_set.subs(ll, lw + g), bb, -sp.oo)
    set_ok = lim_long == -sp.oo and lim_short == sp.oo

    # (4) the literal's test on concrete policies built from the derivation: ex1 a point of the mean loss's minimiser
    # set (3) (delta_mean = c fixed, a = L_w (c + b/L_l)), ex2 a point with a chosen summed delta (a = b + d); then
    # delta and delta_mean are evaluated exactly from (a, L_w, b, L_l) alone, and the literal holds iff they agree
    ex1, ex2 = _length_instances()
    rows = [_length_row(ex) for ex in (ex1, ex2)]
    dm1, d1, dm2, d2 = rows[0]["delta_mean"], rows[0]["delta"], rows[1]["delta_mean"], rows[1]["delta"]
    # ex1 lies on the minimiser set's formula at c = its own delta_mean
    on_set = _zero(delta_on_set.subs({lw: ex1["L_w"], ll: ex1["L_l"], c: sp.Rational(dm1), bb: ex1["b"]})
                   - sp.Rational(d1))
    cex_found = [r for r in rows if r["feasible"] and r["signs_disagree"]]
    literal = not cex_found
    amended = bool(stat_ok and curv_pos and decomposition and short_w_nonneg and decomposition2 and long_w_nonneg
                   and set_ok and equal_lengths_scale and on_set)
    evidence = {"stationary_point": str(sols), "beta_x_equals_dr": stat_ok, "strictly_convex": curv_pos,
                "strictly_convex_proved": curv_pos_proved, "curvature_min_at_points": min(curv_vals),
                "delta = L_w delta_mean + b (L_w/L_l - 1)": decomposition, "extra_term_nonneg_if_Lw<=Ll": short_w_nonneg,
                "delta_mean = delta/L_w + b (1/L_w - 1/L_l)": decomposition2, "extra_term_nonneg_if_Lw>=Ll": long_w_nonneg,
                "equal_lengths_delta_mean_is_delta_over_L": equal_lengths_scale,
                "minimiser_set_delta_limit_Lw>Ll": str(lim_long), "minimiser_set_delta_limit_Lw<Ll": str(lim_short),
                "example_on_minimiser_set_formula": on_set,
                "example_mean_yes_sum_no": rows[0], "example_sum_yes_mean_no": rows[1]}
    cex = None if literal else {"mean_certifies_sum_does_not": evidence["example_mean_yes_sum_no"],
                                "sum_certifies_mean_does_not": evidence["example_sum_yes_mean_no"]}
    summary = (f"population beta(dm - dm_ref) = dr proved {stat_ok}; dm>0 => delta>0 iff |y_w|<=|y_l| proved "
               f"{decomposition and short_w_nonneg}; converse for |y_w|>=|y_l| {decomposition2 and long_w_nonneg}; "
               f"minimiser set unbounded in delta {set_ok}; exact instances dm={dm1},delta={d1} and "
               f"delta={d2},dm={dm2}: "
               f"{len(cex_found)} with signs that disagree")
    return MethodResult(literal=literal, amended=amended, summary=summary, evidence=evidence, depends_on=(
        "theory.sec13_dataset._sigma", "theory.sec13_dataset._softplus", "theory.sec13_dataset._zero",
        "theory.sec13_dataset._length_instances", "theory.sec13_dataset._length_row",
        "theory.sec13_dataset._exp_sum_at_most_one",),
                        counterexample=cex,
                        amended_statement=(get_claim("length-normalised").amendment
                                           if amended else None))
