"""docs/theory.md §3: the implicit assumption. Methods of ``assumption-iff``."""

from __future__ import annotations

from dpo_rlhf_checks.result import CheckContext, MethodResult
from theory import derivations as D
from theory.common import DEP_GIBBS_NP, DEP_SYMPY_J, holds_only, n_for, proofs, random_policy_instances, rng_for


def assumption_iff_symbolic(ctx: CheckContext) -> MethodResult:
    """SymPy, derived from the normalised Gibbs policy for general K: log pi*(y_w) - log pi*(y_l) = delta_ref +
    dr/beta (Z cancels), so pi*(y_w) > pi*(y_l) <=> delta* > 0 <=> beta delta_ref + dr > 0 (the sign needs beta > 0:
    SymPy cannot decide it for a beta without that assumption) <=> dr > beta log(pi_ref(y_l)/pi_ref(y_w))."""
    facts = D.assumption_facts()
    sym = proofs(facts, skip=("sign_preserved_without_beta_positive",))
    conditions = {"proofs": all(sym.values()),
                  "needs_beta_positive": not facts["sign_preserved_without_beta_positive"]}
    return holds_only(conditions, "from the Gibbs form (general K): pi*(y_w)/pi*(y_l) = exp(delta_ref + dr/beta); "
                                  "the sign step needs beta > 0", {"proofs": sym}, depends_on=(
                                      DEP_SYMPY_J, "theory.derivations._J_K", "theory.derivations._branch",
                                      "theory.derivations.assumption_facts", "theory.derivations.general_k_facts",
                                      "theory.derivations._gibbs_delta_star",
                                  ))


def assumption_iff_numeric(ctx: CheckContext) -> MethodResult:
    """float64: the four forms evaluated on random instances (K = 2..8, beta 1e-3..1e3), pi* from the normalised
    Gibbs policy in log space; near-ties (|beta delta_ref + dr| < 1e-9 scale) are skipped and counted."""
    rng = rng_for(ctx, 301)
    from theory import symbols as S

    disagreements, n, n_fail, near_ties = 0, 0, 0, 0
    for b, log_ref, rew in random_policy_instances(rng, n_for(ctx, 200, 40)):
        log_star = S.gibbs_log_policy(log_ref, rew, b)
        dref = log_ref[0] - log_ref[1]
        dr = rew[0] - rew[1]
        key = b * dref + dr
        if abs(key) < 1e-9 * max(1.0, abs(b * dref), abs(dr)):
            near_ties += 1
            continue
        c1 = bool(log_star[0] > log_star[1])  # pi*(y_w) > pi*(y_l), from the normalised Gibbs policy
        c3 = bool(key > 0)
        c4 = bool(dr > b * (log_ref[1] - log_ref[0]))
        disagreements += len({c1, c3, c4}) != 1
        n += 1
        n_fail += not c3
    conditions = {"forms_agree": disagreements == 0 and n > 0, "failing_cases_seen": n_fail > 0,
                  "holding_cases_seen": n_fail < n}
    evidence = {"instances": n, "assumption_fails_in": n_fail, "near_ties_skipped": near_ties,
                "forms_disagree_count": disagreements}
    return holds_only(conditions, f"pi*(y_w) > pi*(y_l), beta delta_ref + dr > 0 and dr > beta log(a_l/a_w) agree at "
                                  f"{n} instances (assumption fails in {n_fail})", evidence, depends_on=(DEP_GIBBS_NP,))
