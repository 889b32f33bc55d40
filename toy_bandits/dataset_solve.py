"""``solve`` for data-set instances: repeated and contradictory labels, rankings, lengths (docs/theory.md §13).

An instance file is a data-set instance when it has any of the keys ``labels``, ``ranking`` or ``lengths``:

    {"pi_ref": [...], "reward": [...], "beta": b, "margin": m,
     exactly one of
       "preferences": [[w, l], ...]              one label per listed pair (as for a plain instance)
       "labels": [[winner, loser, count], ...]   counts whole numbers >= 1; repeats add up; both orders allowed
       "ranking": [i, j, k, ...]                 one observed ranking, best first (Plackett-Luce)
     and optionally
       "lengths": [tokens per response, ...]}    whole numbers >= 1, one per response

The RLHF and constrained optima are those of the plain ``solve`` (same keys), with the constraint graph
``delta_pi >= m`` taken from: the preferences as listed; for labels, the majority direction of each labelled
pair (a tie adds no constraint); for a ranking, its adjacent pairs. Added keys:

    "dpo_empirical": [{"winner": i, "loser": j, "h": h or null}, ...]
        one object per distinct labelled ordered pair (first-seen order; for a ranking, per adjacent pair), with
        h = delta - delta_ref at the minimiser of the empirical ordered-pair DPO loss sum n_ij softplus(-beta h_ij)
        (for a ranking, of the Plackett-Luce DPO loss); null where the loss has no finite minimiser in that pair
        (h -> +inf along every minimising sequence). Where some pairs diverge and others do not, the finite h are
        the limits inside each strongly connected group of the win graph.
    "dpo_unbounded": a sentence naming the responses and pairs that make the minimiser infinite, or null.
    "length_normalised" (only with "lengths"): per constraint pair, the summed and per-token-mean reference
        log-odds and the two population conditions beta delta_ref + dr > 0 and beta delta_mean_ref + dr > 0, and
        whether a mean-delta certificate implies the summed ranking (|y_w| <= |y_l|).

Every bad field raises ``ValueError`` whose message starts with the field's name (``solve`` exits 2 with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from toy_bandits.constrained import find_cycle
from toy_bandits.dataset import empirical_minimiser, merge_labels, unbounded_sentence
from toy_bandits.instance import BanditInstance, check_json_object
from toy_bandits.length_norm import mean_implies_summed
from toy_bandits.solve_output import result_json as base_result_json  # the plain solve's output

NEW_KEYS = ("labels", "ranking", "lengths")
BASE_KEYS = ("pi_ref", "reward", "beta", "margin")
GRAPH_KEYS = ("preferences", "labels", "ranking")
JSON_KEYS = BASE_KEYS + GRAPH_KEYS + ("lengths",)


def is_dataset_instance(data: Any) -> bool:
    """True when ``data`` is a JSON object with any of the data-set keys (labels, ranking, lengths)."""
    return isinstance(data, Mapping) and any(k in data for k in NEW_KEYS)


def _whole_numbers(name: str, value: Any, k: int) -> np.ndarray:
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__len__"):
        raise ValueError(f"{name}: must be a list of {k} whole numbers >= 1, got {value!r}")
    if len(value) != k:
        raise ValueError(f"{name}: must have one entry per response ({k}), got {len(value)}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v) \
                or float(v) != int(v) or v < 1:
            raise ValueError(f"{name}[{i}]: must be a whole number >= 1, got {v!r}")
        out.append(int(v))
    return np.array(out, dtype=np.int64)


def _ranking(value: Any, k: int) -> tuple[int, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__len__"):
        raise ValueError(f"ranking: must be a list of response indices, best first, got {value!r}")
    if len(value) < 2:
        raise ValueError(f"ranking: must rank at least 2 responses, got {list(value)!r}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"ranking[{i}]: must be an integer index, got {v!r}")
        if not 0 <= v < k:
            raise ValueError(f"ranking[{i}]: index {v} is out of range [0, {k})")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise ValueError(f"ranking: indices must be distinct, got {out}")
    return tuple(out)


@dataclass(frozen=True)
class DatasetInstance:
    """A validated data-set instance. base: the plain instance whose preferences are the constraint graph.

    labels: {(winner, loser): count} (one per listed pair for "preferences"; adjacent pairs for "ranking").
    kind: "preferences", "labels" or "ranking". lengths: (K,) tokens per response, or None.
    """

    base: BanditInstance
    kind: str
    labels: dict[tuple[int, int], int]
    ranking: tuple[int, ...] | None
    lengths: np.ndarray | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "DatasetInstance":
        check_json_object(data, JSON_KEYS)
        missing = [k for k in BASE_KEYS if k not in data]
        if missing:
            raise ValueError(f"{missing[0]}: missing (required keys: {list(BASE_KEYS)} and one of {list(GRAPH_KEYS)})")
        given = [k for k in GRAPH_KEYS if k in data]
        if len(given) != 1:
            name = given[1] if len(given) > 1 else "preferences"
            raise ValueError(f"{name}: give exactly one of {list(GRAPH_KEYS)}, got {given or 'none'}")
        kind = given[0]
        # validates pi_ref, reward, beta, margin (and the preferences, if those are the graph)
        probe = BanditInstance(data["pi_ref"], data["reward"], data["beta"],
                               data["preferences"] if kind == "preferences" else [], data["margin"])
        k = probe.K
        ranking = None
        if kind == "preferences":
            labels = {p: 1 for p in probe.preferences}
            if not labels:
                raise ValueError("preferences: must hold at least one [winner, loser] pair")
            pairs = list(probe.preferences)
        elif kind == "labels":
            labels = merge_labels(data["labels"], k)
            pairs = []
            for (i, j), n in labels.items():
                back = labels.get((j, i), 0)
                if n > back and (i, j) not in pairs:
                    pairs.append((i, j))
        else:
            ranking = _ranking(data["ranking"], k)
            pairs = list(zip(ranking[:-1], ranking[1:]))
            labels = {p: 1 for p in pairs}
        if kind == "labels" and probe.margin > 0:
            cycle = find_cycle(pairs, k)
            if cycle is not None:
                raise ValueError(f"labels: the majority directions contain the cycle {' > '.join(map(str, cycle))}, "
                                 f"infeasible for the constraints delta_pi >= margin {probe.margin} > 0 (margin 0 "
                                 "forces ties instead)")
        lengths = _whole_numbers("lengths", data["lengths"], k) if "lengths" in data else None
        base = BanditInstance(probe.pi_ref, probe.reward, probe.beta, pairs, probe.margin)
        return cls(base=base, kind=kind, labels=labels, ranking=ranking, lengths=lengths)


def dpo_empirical_json(inst: DatasetInstance) -> tuple[list[dict[str, Any]], str | None]:
    """The ``dpo_empirical`` list and the ``dpo_unbounded`` sentence for ``inst``."""
    if inst.kind == "ranking":
        # One ranking: the Plackett-Luce loss has infimum 0, approached only as every adjacent gap s_t - s_{t+1} -> inf.
        pairs = ", ".join(f"({a}, {b})" for a, b in inst.labels)
        return ([{"winner": a, "loser": b, "h": None} for a, b in inst.labels],
                f"no finite minimiser: one observed ranking {list(inst.ranking)} drives the listwise (Plackett-Luce) "
                f"DPO loss to its infimum 0 only as every adjacent gap grows without bound: h = delta - delta_ref -> "
                f"+inf on the pair(s) {pairs}")
    opt = empirical_minimiser(inst.labels, inst.base.K, inst.base.beta)
    out = [{"winner": a, "loser": b, "h": (None if h is None else float(h))} for (a, b), h in opt.h.items()]
    return out, unbounded_sentence(opt, inst.labels)


def length_json(inst: DatasetInstance) -> list[dict[str, Any]]:
    """Per constraint pair: summed and per-token-mean reference log-odds and the two population conditions; whether a
    mean certificate implies the summed ranking is :func:`toy_bandits.length_norm.mean_implies_summed`."""
    b = inst.base
    log_ref = np.log(b.pi_ref)
    out = []
    for w, l in b.preferences:
        d_ref = float(log_ref[w] - log_ref[l])
        dm_ref = float(log_ref[w] / inst.lengths[w] - log_ref[l] / inst.lengths[l])
        dr = float(b.reward[w] - b.reward[l])
        out.append({"winner": w, "loser": l, "len_winner": int(inst.lengths[w]), "len_loser": int(inst.lengths[l]),
                    "delta_ref": d_ref, "delta_mean_ref": dm_ref,
                    "summed_condition": bool(b.beta * d_ref + dr > 0), "mean_condition": bool(b.beta * dm_ref + dr > 0),
                    "mean_certificate_implies_summed": bool(mean_implies_summed(inst.lengths[w], inst.lengths[l]))})
    return out


def result_json(inst: DatasetInstance, method: str = "auto", solver: str = "CLARABEL",
                progress: bool = False) -> tuple[dict[str, Any], int]:
    """The plain ``solve`` output for the constraint graph, plus dpo_empirical, dpo_unbounded (and length_normalised)."""
    out, code = base_result_json(inst.base, method=method, solver=solver, progress=progress)
    out["dpo_empirical"], out["dpo_unbounded"] = dpo_empirical_json(inst)
    if inst.lengths is not None:
        out["length_normalised"] = length_json(inst)
    return out, code


def format_dataset_sections(out: dict[str, Any]) -> str:
    """The readable data-set part of ``solve``'s output: the empirical ordered-pair DPO minimiser per labelled pair."""
    lines = ["Empirical ordered-pair DPO minimiser (h = delta - delta_ref per distinct labelled pair, docs/theory.md §13)"]
    for row in out["dpo_empirical"]:
        h = "none (no finite minimiser)" if row["h"] is None else f"{row['h']:.6g}"
        lines.append(f"  {row['winner']:>5} > {row['loser']:<5} h = {h}")
    lines.append(f"Unbounded: {out['dpo_unbounded'] or 'no: the loss has a finite minimiser'}")
    if "length_normalised" in out:
        lines += ["", "Length-normalised (per-token mean log-ratios, docs/theory.md §13)",
                  f"  {'w':>5} {'l':>5} {'|y_w|':>6} {'|y_l|':>6} {'delta_ref':>12} {'mean delta_ref':>15} "
                  f"{'summed cond.':>12} {'mean cond.':>10} {'mean cert. => summed':>20}"]
        for r in out["length_normalised"]:
            lines.append(f"  {r['winner']:>5} {r['loser']:>5} {r['len_winner']:>6} {r['len_loser']:>6} "
                         f"{r['delta_ref']:>12.6g} {r['delta_mean_ref']:>15.6g} "
                         f"{'holds' if r['summed_condition'] else 'fails':>12} "
                         f"{'holds' if r['mean_condition'] else 'fails':>10} "
                         f"{'yes' if r['mean_certificate_implies_summed'] else 'no':>20}")
    return "\n".join(lines)
