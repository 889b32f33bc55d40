"""Helpers shared by the section modules of :mod:`theory` (tolerances, seeded instances, the DPO loss
through the toolkit, and the MethodResult of a claim with no amendment).

Every ``delta`` here is the log-odds of two responses of a bandit (a single "token"): summed and
per-token-mean log-probabilities coincide, so the distinction does not arise in :mod:`theory`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dpo_rlhf_checks import losses as L
from dpo_rlhf_checks.result import CheckContext, MethodResult
from theory import symbols as S

# Tolerances, stated once. Errors are in the units named.
TOL_IDENTITY = 1e-40  # mpmath (50 digits) relative error of a proven identity
TOL_FLOAT = 1e-12  # float64 implementation vs exact value, relative
TOL_H = 1e-6  # minimiser location in h = beta (delta - delta_ref) units (q near 0/1 costs digits)
TOL_KKT = 1e-9  # KKT residuals, relative to the scale of the rewards
ULPS = 16  # float64 results within 16 ulps of the conditioning bound (see cond_tol)

# depends_on names (the toolkit formulas a method takes as given), stated once.
DEP_SYMPY_LOSS = "theory.derivations.dpo_loss_expr"  # the symbolic methods' own loss expression
DEP_SYMPY_J = "theory.derivations._J"  # the symbolic methods' own objective J
DEP_DPO_LOSS = "dpo_rlhf_checks.losses.dpo_loss"
DEP_DPO_BT_LOSS = "dpo_rlhf_checks.losses.dpo_bt_loss"
DEP_GIBBS_NP = "theory.symbols.gibbs_log_policy"
DEP_J_NP = "theory.symbols.objective_J"


def cond_tol(beta: float, *deltas: float) -> float:
    """Relative tolerance for a float64 function of h = beta (delta - delta_ref):
    ULPS eps (1 + beta sum (|delta| + 2 log 2)).

    log sigma, softplus and their ratios have relative sensitivity at most 1 to an absolute error in h; forming
    h from the four log-probabilities (each delta is carried as log sigma(delta) - log sigma(-delta), total
    magnitude <= |delta| + 2 log 2) costs an absolute error of about eps beta sum (|delta| + 2 log 2).
    """
    return ULPS * float(np.finfo(np.float64).eps) * (1.0 + beta * sum(abs(float(d)) + 2 * math.log(2)
                                                                      for d in deltas))


def wmax(current: float, new: float) -> float:
    """max that propagates NaN (the builtin max silently drops a NaN in first place), so a NaN fails its check."""
    current, new = float(current), float(new)
    return math.nan if (math.isnan(current) or math.isnan(new)) else max(current, new)


def holds_only(conditions: dict[str, bool], summary: str, evidence: dict, depends_on: tuple[str, ...],
               figures: list[str] | None = None) -> MethodResult:
    """A method of a claim with no amendment: literal = every named condition holds (each computed from numbers
    that could have come out either way); a failure lists the failed conditions as the counterexample (the
    numbers behind each condition are in the evidence)."""
    conditions = {k: bool(v) for k, v in conditions.items()}
    literal = all(conditions.values())
    failed = [k for k, v in conditions.items() if not v]
    evidence = {**evidence, "conditions": conditions}
    return MethodResult(literal=literal, amended=None,
                        summary=summary if literal else f"conditions failed: {', '.join(failed)}; {summary}",
                        evidence=evidence, depends_on=depends_on,
                        counterexample=None if literal else {"failed_conditions": failed,
                                                             "see_evidence": sorted(evidence)},
                        figures=list(figures or []))


def proofs(facts: dict, skip: tuple[str, ...] = ()) -> dict[str, bool]:
    """The named proofs of a derivation (keys without a leading underscore), minus ``skip``."""
    return {k: bool(v) for k, v in facts.items() if not k.startswith("_") and k not in skip}


def rng_for(ctx: CheckContext, salt: int) -> np.random.Generator:
    """One generator per method: the run's seed and a fixed per-method salt."""
    return np.random.default_rng([int(ctx.seed), salt])


def n_for(ctx: CheckContext, full: int, quick: int) -> int:
    return quick if ctx.quick else full


def pair_instances(ctx: CheckContext, salt: int, n: int, dr_scale: float = 20.0) -> dict:
    """Pair instances: beta (extreme decades + log-uniform), (pi_ref(y_w), pi_ref(y_l)) incl. near 0 and 1, dr."""
    rng = rng_for(ctx, salt)
    betas = S.random_betas(rng, n)
    refs = S.random_reference_pairs(rng, n)
    k = max(len(betas), len(refs))
    betas = np.resize(betas, k)
    refs = np.resize(refs, (k, 2))
    rng.shuffle(refs)
    drs = rng.uniform(-dr_scale, dr_scale, size=k)
    log_ref_w, log_ref_l = np.log(refs[:, 0]), np.log(refs[:, 1])
    return {"beta": betas, "log_ref_w": log_ref_w, "log_ref_l": log_ref_l, "delta_ref": log_ref_w - log_ref_l,
            "dr": drs}


def sample_points(inst: dict, k: int = 6) -> list[dict]:
    """The first k instances (the extreme decades of beta come first), for the evidence."""
    return [{"beta": float(inst["beta"][i]), "pi_ref_w": float(np.exp(inst["log_ref_w"][i])),
             "pi_ref_l": float(np.exp(inst["log_ref_l"][i])), "dr": float(inst["dr"][i])}
            for i in range(min(k, len(inst["beta"])))]


def random_policy_instances(rng: np.random.Generator, n: int) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """(beta, log pi_ref, r) with K in 2..8; every fifth reference has entries near 0 and 1."""
    out = []
    for i, b in enumerate(S.random_betas(rng, n)):
        K = int(rng.integers(2, 9))
        if i % 5 == 0:
            ref = np.r_[1 - 1e-9 * (K - 1), np.full(K - 1, 1e-9)]
        else:
            ref = rng.dirichlet(np.full(K, 0.5)) + 1e-300
            ref = ref / ref.sum()
        out.append((float(b), np.log(ref), rng.normal(scale=3.0, size=K)))
    return out


def _two_response_logps(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(y_w), log pi(y_l) of the two-response policy with log-odds delta (log-sigmoid: no overflow)."""
    return torch.nn.functional.logsigmoid(delta), torch.nn.functional.logsigmoid(-delta)


def dpo_value_and_grad(delta, delta_ref, beta: float, q=None) -> tuple[np.ndarray, np.ndarray]:
    """The DPO loss (ordered, or BT-labelled with probability q) and dl/d delta from ``dpo_rlhf_checks.losses``.

    delta, delta_ref: arrays (B,). The policy is the two-response policy with log-odds delta; the
    reference log-probabilities are ``log_sigmoid(+-delta_ref)`` (only delta_ref enters the loss).
    """
    # The tensors are tiny: intra-op threads only add synchronisation (measured 8-10x slower with 2 threads on a
    # loaded 2-core machine), so the evaluation runs single-threaded and restores the caller's setting.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _dpo_value_and_grad(delta, delta_ref, beta, q)
    finally:
        torch.set_num_threads(threads)


def _dpo_value_and_grad(delta, delta_ref, beta: float, q=None) -> tuple[np.ndarray, np.ndarray]:
    d = torch.tensor(np.atleast_1d(np.asarray(delta, dtype=np.float64)), requires_grad=True)
    d_ref = torch.tensor(np.atleast_1d(np.asarray(delta_ref, dtype=np.float64)))
    pc, pr = _two_response_logps(d)
    rc, rr = _two_response_logps(d_ref)
    if q is None:
        out = L.dpo_loss(pc, pr, rc, rr, beta=float(beta))
    else:
        out = L.dpo_bt_loss(pc, pr, rc, rr, beta=float(beta), q=torch.as_tensor(np.atleast_1d(q), dtype=torch.float64))
    out.losses.sum().backward()
    return out.losses.detach().numpy(), d.grad.numpy()
