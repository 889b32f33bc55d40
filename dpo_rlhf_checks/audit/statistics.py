"""The audit's numbers, streamed over chunks of the columns: the settings (:class:`AuditConfig`) and
:func:`pair_statistics` (counts, exact quantiles, certificates). Third step of read -> columns -> statistics ->
report -> cli."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple

import numpy as np
import torch

from dpo_rlhf_checks import losses as L
from dpo_rlhf_checks.audit.columns import PairData
from dpo_rlhf_checks.stream_stats import ExactQuantiles


@dataclass(frozen=True)
class AuditConfig:
    """The scientific settings of one audit; every one is printed with the result.

    betas: the KL weights to evaluate, each finite and > 0, no duplicates (default 0.1, the
        authors' code default).
    margin: the certificate margin m >= 0: a pair is certified when its loss proves delta > m;
        also the cpo_clip margin, ``T = max(delta_ref, m)`` (default 0, the code's clip).
    cpo_gamma: gamma of cpo_eq17, cpo_smooth and cpo_easy (default 0.5, the code's).
    cpo_tau: tau > 0 of cpo_smooth (default 2, the code's).
    cpo_alpha: alpha > 0 of cpo_smooth (default 1, the code's).
    beta_grid: the betas of the violation-rate figure, each > 0.
    """

    betas: tuple[float, ...] = (0.1,)
    margin: float = 0.0
    cpo_gamma: float = 0.5
    cpo_tau: float = 2.0
    cpo_alpha: float = 1.0
    beta_grid: tuple[float, ...] = tuple(float(b) for b in np.logspace(-3, 3, 61))

    def __post_init__(self) -> None:
        if not self.betas:
            raise ValueError("need at least one beta")
        for b in self.betas + self.beta_grid:
            if not (math.isfinite(b) and b > 0):
                raise ValueError(f"every beta must be a finite number > 0, got {b!r}")
        if len(set(self.betas)) != len(self.betas):
            raise ValueError(f"duplicate beta in {self.betas}")
        keys: dict[str, float] = {}
        for b in self.betas:  # results are keyed by beta_key (6 significant digits): two betas must not share one
            if beta_key(b) in keys:
                raise ValueError(f"betas {keys[beta_key(b)]!r} and {b!r} both print as {beta_key(b)!r}: give betas "
                                 "that differ within 6 significant digits")
            keys[beta_key(b)] = b
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0, got {self.margin!r}")
        if not (math.isfinite(self.cpo_gamma) and self.cpo_gamma >= 0):
            # gamma weighs a margin (Eq. 17's m_ref = gamma (1/pi_ref(y_w) + 1/pi_ref(y_l)) >= 0); a negative
            # gamma would turn the constraint into a licence to misrank, which no CPO variant means.
            raise ValueError(f"cpo_gamma must be a finite number >= 0, got {self.cpo_gamma!r}")
        for name in ("cpo_tau", "cpo_alpha"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

    def variants(self) -> dict[str, dict[str, float]]:
        """The target-form losses audited and their parameters (besides beta)."""
        return {
            "dpo": {},
            "cpo_eq17": {"gamma": self.cpo_gamma},
            "cpo_clip": {"margin": self.margin},
            "cpo_smooth": {"gamma": self.cpo_gamma, "tau": self.cpo_tau, "alpha": self.cpo_alpha},
            "cpo_easy": {"gamma": self.cpo_gamma},
        }


def beta_key(beta: float) -> str:
    """The JSON key of a beta (``0.1`` -> ``"0.1"``)."""
    return f"{beta:g}"


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x)  # shares memory; float64


def _count(mask) -> int:
    return int(np.count_nonzero(mask)) if isinstance(mask, np.ndarray) else int(torch.count_nonzero(mask))


class PairChunk(NamedTuple):
    """One chunk of pairs, (m,) float64 each: the reference's log-probabilities of chosen / rejected (rc, rr),
    the policy's (pc, pr; None without them) and the reward gap ``dr = chosen_reward - rejected_reward`` (or None)."""

    rc: np.ndarray
    rr: np.ndarray
    pc: np.ndarray | None
    pr: np.ndarray | None
    dr: np.ndarray | None


def pair_chunk(c: Mapping[str, np.ndarray], *, per_token: bool = False) -> PairChunk:
    """The :class:`PairChunk` of one chunk of columns (:meth:`PairData.chunks`).

    per_token: the log-probabilities divided by the lengths (per-token means); the columns must have them.
    """
    rc, rr = c["ref_chosen_logps"], c["ref_rejected_logps"]
    pc, pr = c.get("chosen_logps"), c.get("rejected_logps")
    if per_token:
        lc, lr = c["chosen_length"], c["rejected_length"]
        rc, rr = rc / lc, rr / lr
        pc, pr = (None, None) if pc is None else (pc / lc, pr / lr)
    dr = c["chosen_reward"] - c["rejected_reward"] if "chosen_reward" in c else None
    return PairChunk(rc, rr, pc, pr, dr)


def pair_chunks(data: PairData, *, per_token: bool = False, rows: int | None = None
                ) -> Callable[[], Iterator[PairChunk]]:
    """A callable that gives the data's :class:`PairChunk` s (:func:`pair_chunk`), the same ones at every call
    (one call, one pass)."""
    def chunks() -> Iterator[PairChunk]:
        for c in data.chunks(rows):
            yield pair_chunk(c, per_token=per_token)

    return chunks


def pair_statistics(chunks: Callable[[], Iterable[PairChunk]], n: int, *, config: AuditConfig,
                    has_policy: bool, has_reward: bool, per_token: bool = False
                    ) -> tuple[dict[str, Any], dict[str, str]]:
    """The audit's numbers for one choice of log-probabilities (sums, or per-token means), streamed.

    chunks: a callable giving the same :class:`PairChunk` s at every call (:func:`pair_chunks`); n: their total
    length. Pass 1 counts everything; the quantiles take a few more passes, which recompute only the losses they
    need, so memory does not grow with n. Fractions are exact counts over n; quantiles equal ``np.quantile``.
    has_policy / has_reward: the chunks carry pc, pr / dr. per_token: the numbers are per-token means (then
    cpo_easy, defined on means, is audited too). Returns (statistics, reasons for the ones that could not be
    computed). Definitions (docs/theory.md): delta_ref = rc - rr; ranking accuracy 1[delta >= 0] (Chen et al.
    2024); the assumption (§3) holds for a pair when beta delta_ref + dr > 0, the RLHF optimum's
    delta* = delta_ref + dr/beta; U = {delta_ref < delta < 0} (§6); l_crit = softplus(beta delta_ref) (§7).
    """
    from dpo_rlhf_checks import audit_diagnostics as D

    betas = config.betas
    keys = [beta_key(b) for b in betas]
    variants = {name: params for name, params in config.variants().items() if per_token or name != "cpo_easy"}
    why: dict[str, str] = {}
    count: Counter = Counter()
    diag: Counter = Counter()
    crit = {k: ExactQuantiles(n=n) for k in keys}  # l_crit per pair, at each beta
    dpo = {k: ExactQuantiles(n=n) for k in keys} if has_policy else {}  # the DPO loss per pair, at each beta
    target_ok = {name: {k: True for k in keys} for name in variants}

    def quantile_pass(ch: PairChunk, pending: set[tuple[str, str]]) -> None:
        """Feed one chunk's losses to the quantile accumulators in ``pending`` ((kind, beta key) pairs)."""
        rc_t, rr_t = _t(ch.rc), _t(ch.rr)
        if any(kind == "crit" for kind, _ in pending):
            target_dpo = L.implicit_target("dpo", rc_t, rr_t, beta=betas[0])  # delta_ref: the same at every beta
            for k, b in zip(keys, betas):
                if ("crit", k) in pending:
                    crit[k].update(L.critical_loss(target_dpo, beta=b).numpy())
        for k, b in zip(keys, betas):
            if ("dpo", k) in pending:
                dpo[k].update(L.dpo_loss(_t(ch.pc), _t(ch.pr), rc_t, rr_t, beta=b).losses.numpy())

    everything = {("crit", k) for k in crit} | {("dpo", k) for k in dpo}
    for ch in chunks():  # pass 1: every count, and the first pass of every quantile
        delta_ref = ch.rc - ch.rr
        count["reference_right"] += _count(delta_ref >= 0)
        if has_reward:
            count["reward_agrees"] += _count(ch.dr > 0)
            for k, b in zip(keys, betas):
                scaled = b * delta_ref + ch.dr  # beta delta*: no division by beta
                count["violated", k] += _count(scaled <= 0)
                count["idealized_right", k] += _count(scaled >= 0)
        quantile_pass(ch, everything)
        rc_t, rr_t = _t(ch.rc), _t(ch.rr)
        if has_policy:
            delta = ch.pc - ch.pr
            count["policy_right"] += _count(delta >= 0)
            count["in_U"] += _count((delta_ref < delta) & (delta < 0))
            above = delta > config.margin
            count["above_margin"] += _count(above)
            pc_t, pr_t, above_t = _t(ch.pc), _t(ch.pr), torch.from_numpy(above)
            diag.update(D.diagnostic_counts(ch.rc, ch.rr, ch.pc, ch.pr))
        for name, params in variants.items():
            for k, b in zip(keys, betas):
                if not target_ok[name][k]:
                    continue
                try:
                    target = L.implicit_target(name, rc_t, rr_t, beta=b, **params)
                except ValueError as err:
                    target_ok[name][k] = False
                    why[f"{name} target"] = str(err)
                    continue
                # loss < log 2 certifies delta > m  <=>  critical_loss >= log 2  <=>  T >= m.
                count["log2_certifies", name, k] += _count(target >= config.margin)
                if not has_policy:
                    continue
                loss = L.get_loss(name)(pc_t, pr_t, rc_t, rr_t, beta=b, **params).losses
                cert = L.alignment_certificate(loss, target, beta=b, margin=config.margin)
                count["certified", name, k] += _count(cert)
                # Exactly 0 in real arithmetic (the certificate is an equivalence); floating point breaks it
                # where beta |T| dwarfs beta |delta - m|.
                count["mismatch", name, k] += _count(cert != above_t)
    for acc in (*crit.values(), *dpo.values()):
        acc.end_pass()
    while True:  # the quantiles' further passes, each over the ones still pending
        pending = {key for key in everything if (crit if key[0] == "crit" else dpo)[key[1]].pending}
        if not pending:
            break
        for ch in chunks():
            quantile_pass(ch, pending)
        for kind, k in pending:
            (crit if kind == "crit" else dpo)[k].end_pass()

    out: dict[str, Any] = {"reference_ranking_accuracy": count["reference_right"] / n}
    if has_reward:
        out["reward_agreement_rate"] = count["reward_agrees"] / n
        out["assumption_violation_rate"] = {k: count["violated", k] / n for k in keys}
        out["idealized_ranking_accuracy"] = {k: count["idealized_right", k] / n for k in keys}
    else:
        for name in ("reward_agreement_rate", "assumption_violation_rate", "idealized_ranking_accuracy"):
            out[name] = None
            why[name] = "needs chosen_reward and rejected_reward"
    out["critical_loss"] = {k: crit[k].result() for k in keys}
    out["log2_certifies_fraction"] = {name: {k: count["log2_certifies", name, k] / n if target_ok[name][k] else None
                                             for k in keys} for name in variants}
    policy_keys = ("policy_ranking_accuracy", "frac_in_undesirable", "dpo_loss", "certified_fraction",
                   "certificate_mismatch_fraction", "uncertified_bound_from_mean_dpo_loss", "fraction_delta_above_margin")
    if not has_policy:
        for name in policy_keys:
            out[name] = None
            why[name] = "needs chosen_logps and rejected_logps (a trained policy)"
        out["diagnostics"] = None
        return out, why
    out["policy_ranking_accuracy"] = count["policy_right"] / n
    out["frac_in_undesirable"] = count["in_U"] / n
    out["dpo_loss"] = {k: dpo[k].result() for k in keys}
    # Markov: the uncertified pairs each have loss >= l_crit >= min l_crit, so their fraction is at most
    # mean(loss) / min(l_crit). What a mean loss bounds; it certifies no single pair.
    out["uncertified_bound_from_mean_dpo_loss"] = {
        k: min(1.0, out["dpo_loss"][k]["mean"] / out["critical_loss"][k]["min"]) if out["critical_loss"][k]["min"] > 0
        else 1.0 for k in keys}
    out["certified_fraction"] = {name: {k: count["certified", name, k] / n if target_ok[name][k] else None
                                        for k in keys} for name in variants}
    out["certificate_mismatch_fraction"] = {name: {k: count["mismatch", name, k] / n if target_ok[name][k] else None
                                                   for k in keys} for name in variants}
    # What an exact certificate gives for every target-form variant (the certificate is equivalent to delta > m).
    out["fraction_delta_above_margin"] = count["above_margin"] / n
    out["diagnostics"] = D.diagnostics_from_counts({"n_pairs": n, **diag})
    return out, why


def violation_counts(delta_ref: np.ndarray, dr: np.ndarray, betas: Iterable[float]) -> np.ndarray:
    """The pairs that violate the assumption, ``beta delta_ref + dr <= 0``, at each beta (int64, one per beta)."""
    return np.array([_count(b * delta_ref + dr <= 0) for b in betas], dtype=np.int64)
