"""The audit's result object (:func:`audit`, :func:`audit_arrays`), its figures and its printed summary
(:func:`format_summary`). Fourth step of read -> columns -> statistics -> report -> cli."""

from __future__ import annotations

import math
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dpo_rlhf_checks.audit.columns import AUTHORS_EXPORT_FIELDS, AuditInputError, PairData
from dpo_rlhf_checks.audit.read import JSON_PARSER
from dpo_rlhf_checks.audit.statistics import (AuditConfig, _count, beta_key, pair_chunk, pair_chunks,
                                              pair_statistics, violation_counts)
from dpo_rlhf_checks.result import to_jsonable
from dpo_rlhf_checks.stream_stats import ExactQuantiles


def _largest_value(data: PairData) -> float:
    """The largest |value| in the data's columns (one pass)."""
    return max((float(np.max(np.abs(v), initial=0.0)) for c in data.chunks() for v in c.values()), default=0.0)


def _require_finite(obj: Any, data: PairData, path: str = "") -> None:
    """Raise AuditInputError naming the first statistic that is not finite (never an inf or nan printed silently).

    Rows are range-checked on reading (MIN_LOGP), so this fires only where beta times a log-probability
    difference overflows float64 (a huge beta with huge log-probabilities).
    """
    if isinstance(obj, dict):
        for k, v in obj.items():
            _require_finite(v, data, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _require_finite(v, data, f"{path}[{i}]")
    elif isinstance(obj, float) and not math.isfinite(obj):
        raise AuditInputError(f"{data.path}: the statistic {path} is {obj} in float64 (the largest |value| in the "
                              f"file is {_largest_value(data):.3g}; beta times a log-probability difference "
                              "overflows): use smaller betas or check the log-probabilities")


def _figures(data: PairData, config: AuditConfig, rates_at_betas: dict, fig_dir: Path) -> list[str]:
    """The audit's figures, from passes over the data (nothing per row is kept)."""
    from figures.audit import RANGE_QUANTILES, delta_ref_histogram, histogram_bins, violation_rate_figure

    b0 = config.betas[0]
    has_reward, has_len = "chosen_reward" in data.columns, "chosen_length" in data.columns
    views = {"summed log-probabilities": pair_chunks(data)}
    if has_len:
        views["per-token means"] = pair_chunks(data, per_token=True)
    # The histogram's range: the central quantiles of delta_ref and the boundary -dr/beta (finite values), exact.
    span = ExactQuantiles(dict(zip(("lo", "hi"), RANGE_QUANTILES)))
    while span.pending:
        for ch in views["summed log-probabilities"]():
            span.update(ch.rc - ch.rr)  # finite: the rows were checked
            if has_reward:
                boundary = -ch.dr / b0
                span.update(boundary[np.isfinite(boundary)])
        span.end_pass()
    span_values = span.result()
    bins = histogram_bins(span_values["lo"], span_values["hi"])
    counts = {"all": np.zeros(len(bins) - 1, np.int64)} if not has_reward else {
        name: np.zeros(len(bins) - 1, np.int64) for name in ("holds", "violated", "boundary")}
    violated = 0
    for ch in views["summed log-probabilities"]():
        delta_ref = ch.rc - ch.rr
        if not has_reward:
            counts["all"] += np.histogram(delta_ref, bins)[0]
            continue
        boundary = -ch.dr / b0
        bad = delta_ref <= boundary
        violated += _count(bad)
        counts["holds"] += np.histogram(delta_ref[~bad], bins)[0]
        counts["violated"] += np.histogram(delta_ref[bad], bins)[0]
        counts["boundary"] += np.histogram(boundary[np.isfinite(boundary)], bins)[0]
    files = delta_ref_histogram(bins, counts, violated / data.n_pairs if has_reward else None, b0, fig_dir)
    if not has_reward:
        return files
    curves = {}
    for label, chunks in views.items():
        total = np.zeros(len(config.beta_grid), np.int64)
        for ch in chunks():
            total += violation_counts(ch.rc - ch.rr, ch.dr, config.beta_grid)
        curves[label] = total / data.n_pairs
    return files + violation_rate_figure(np.array(config.beta_grid), curves, config.betas, rates_at_betas, fig_dir)


def audit(data: PairData, config: AuditConfig, fig_dir: Path | None = None) -> dict[str, Any]:
    """The audit's result object (the ``--json`` output); figures to ``fig_dir`` when given.

    Streams over ``data.chunks()``: with spooled data (``read_pairs(spool=True)``) memory does not grow with
    the number of pairs.
    """
    c = data.columns  # the names; the numbers are read a chunk at a time
    n = data.n_pairs
    has_policy, has_reward, has_len = "chosen_logps" in c, "chosen_reward" in c, "chosen_length" in c
    variants = config.variants()
    result: dict[str, Any] = {
        "file": str(data.path),
        "format": data.fmt,
        "columns": list(c),
        "rows_read": data.rows_read,
        "n_pairs": n,
        "skipped_rows": {"count": sum(data.skipped.values()), "by_reason": dict(data.skipped),
                         "examples": list(data.skipped_examples)},
        "blank_lines": data.blank_lines,
        "settings": {
            "betas": list(config.betas),
            "margin": config.margin,
            "logps": "as given, treated as summed sequence log-probabilities; per_token_mean divides by the lengths",
            "cpo_variants": {name: {**params, "delta": "per-token mean" if name == "cpo_easy" else "as given"}
                             for name, params in variants.items()},
            "ranking": "a pair is ranked right when delta >= 0; the assumption holds when beta delta_ref + dr > 0",
            "json_parser": JSON_PARSER if data.fmt == "jsonl" else None,
        },
    }
    if data.logps_kind == "mean":
        result["settings"]["logps"] = ("per-token MEAN log-probabilities (the paper authors' per-sample export, "
                                       "fields " + ", ".join(AUTHORS_EXPORT_FIELDS) + ")")
        result["settings"]["cpo_variants"]["cpo_easy"]["delta"] = "as given (per-token means)"
    if data.aliases_used:
        result["settings"]["column_aliases"] = dict(data.aliases_used)
    kinds = {"has_policy": has_policy, "has_reward": has_reward}
    stats, why = pair_statistics(pair_chunks(data), n, config=config, per_token=data.logps_kind == "mean", **kinds)
    result.update(stats)
    if not has_policy:
        why["diagnostics"] = "needs chosen_logps and rejected_logps (a trained policy)"
    result["certified_fraction_note"] = ("the certificate loss < critical_loss(T, m) is equivalent to delta > m for "
                                         "every target-form loss, so certified fractions agree across variants up "
                                         "to floating point (certificate_mismatch_fraction); log2_certifies_fraction "
                                         "is where the variants differ: the pairs whose loss below log 2 proves "
                                         "delta > m")
    if has_len:
        per_token, why_mean = pair_statistics(pair_chunks(data, per_token=True), n, config=config, per_token=True,
                                              **kinds)
        result["per_token_mean"] = per_token
        flips = Counter()
        for c in data.chunks():  # one read gives both views
            s, m = pair_chunk(c), pair_chunk(c, per_token=True)
            flips["reference"] += _count(((s.rc - s.rr) >= 0) != ((m.rc - m.rr) >= 0))
            if has_policy:
                flips["policy"] += _count(((s.pc - s.pr) >= 0) != ((m.pc - m.pr) >= 0))
        result["sum_vs_mean_ranking_disagreement"] = {k: flips[k] / n for k in
                                                      (("reference", "policy") if has_policy else ("reference",))}
        why.update({f"per_token_mean.{k}": v for k, v in why_mean.items()})
    else:
        result["per_token_mean"] = result["sum_vs_mean_ranking_disagreement"] = None
        why["per_token_mean"] = "needs chosen_length and rejected_length"
        if data.logps_kind != "mean":
            why["certified_fraction.cpo_easy"] = "cpo_easy is defined on per-token means: needs the lengths"
    result["unavailable"] = why
    _require_finite(result, data)
    result["figures"] = []
    if fig_dir is not None:
        result["figures"] += _figures(data, config, result["assumption_violation_rate"], fig_dir)
        if not has_reward:
            why["figure audit_violation_rate"] = "needs chosen_reward and rejected_reward"
    return to_jsonable(result)


def audit_arrays(columns: Mapping[str, Any], config: AuditConfig | None = None, *, skip_invalid: bool = False,
                 fig_dir: Path | None = None) -> dict[str, Any]:
    """The audit of pairs held as arrays: ``audit(PairData.from_arrays(columns), config)`` (see both); the default
    :class:`AuditConfig` when ``config`` is None. The same result object as for a file with those columns."""
    return audit(PairData.from_arrays(columns, skip_invalid=skip_invalid), config or AuditConfig(), fig_dir=fig_dir)


NOTE = object()  # a summary line that is text, not a labelled number


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"


def format_summary(result: dict[str, Any]) -> str:
    """The printed summary of an audit result."""
    s = result["settings"]
    keys = [beta_key(b) for b in s["betas"]]
    skipped = result["skipped_rows"]
    lines = [
        f"audit of {result['file']} ({result['format']}): {result['n_pairs']} pairs from {result['rows_read']} data "
        f"rows; {skipped['count']} skipped" + (f" {skipped['by_reason']}" if skipped["count"] else "")
        + (f"; {result['blank_lines']} blank lines" if result["blank_lines"] else ""),
        f"columns: {', '.join(result['columns'])}",
        f"settings: beta = {', '.join(keys)}; certificate margin m = {s['margin']:g}; log-probabilities {s['logps']}",
        "CPO variants: " + "; ".join(f"{n}(" + ", ".join(f"{k}={v}" for k, v in p.items()) + ")"
                                     for n, p in s["cpo_variants"].items()),
        "",
    ]
    blocks = [("summed log-probabilities (as given)", result)]
    if result.get("per_token_mean"):
        blocks.append(("per-token means (logps / length)", result["per_token_mean"]))
    for title, r in blocks:
        rows: list[tuple[str, Any]] = []  # (label, a number, None or beta key -> number) or (text, NOTE)

        def row(label, value):
            rows.append((label, value))

        def note(text):
            rows.append((text, NOTE))

        row("reference ranks the chosen response first", r["reference_ranking_accuracy"])
        row("reward model agrees with the label (dr > 0)", r["reward_agreement_rate"])
        row("assumption violated (beta delta_ref + dr <= 0)", r["assumption_violation_rate"])
        row("RLHF optimum ranks the chosen response first", r["idealized_ranking_accuracy"])
        row("critical loss: median", {k: v["p50"] for k, v in r["critical_loss"].items()})
        row("critical loss: 5th percentile", {k: v["p05"] for k, v in r["critical_loss"].items()})
        note("  (a pair whose loss is below its critical loss is proven ranked right)")
        row("policy ranks the chosen response first", r["policy_ranking_accuracy"])
        row("in U: the policy moved toward the chosen", r["frac_in_undesirable"])
        note("  response, yet still ranks it second")
        if r["dpo_loss"] is not None:
            row("DPO loss: mean", {k: v["mean"] for k, v in r["dpo_loss"].items()})
            row("DPO loss: median", {k: v["p50"] for k, v in r["dpo_loss"].items()})
            row("pairs not proven right: at most the mean", r["uncertified_bound_from_mean_dpo_loss"])
            note("  DPO loss over the smallest critical loss")
            row("policy ranks chosen first by more than m", r.get("fraction_delta_above_margin"))
            note("pairs whose own loss proves the policy ranks them right (by more than m), per loss:")
            floated = []
            for name, by_beta in r["certified_fraction"].items():
                off = any(v for v in r["certificate_mismatch_fraction"][name].values())
                # A variant whose float64 loss cannot resolve delta (cpo_eq17 on summed log-probs: its margin
                # gamma (1/pi_ref(y_w) + 1/pi_ref(y_l)) is ~e^200) certifies a different fraction than delta > m.
                row(f"  {name}" + (" (rounding decides, see *)" if off else ""), by_beta)
                if off:
                    floated.append(name)
            for name in floated:
                row(f"  * {name}: pairs rounding gets wrong", r["certificate_mismatch_fraction"][name])
            if floated:
                note(f"  * {', '.join(floated)}: the loss is computed in float64, where its own target (cpo_eq17's "
                     "margin is about e^200 on summed log-probabilities) swamps the policy's margin; the share "
                     "above is what float64 gives, not the share of pairs ranked right")
        note("pairs that a loss below log 2 would prove ranked right (by more than m), per loss:")
        for name, by_beta in r["log2_certifies_fraction"].items():
            row(f"  {name}", by_beta)
        width = 2 + max(len(label) for label, value in rows if value is not NOTE)
        lines.append(f"{title}:")
        lines.append("".ljust(width) + "  ".join(f"beta={k}".rjust(12) for k in keys))
        for label, value in rows:
            if value is NOTE:
                indent = " " * (len(label) - len(label.lstrip(" *")) if label.lstrip().startswith("*") else
                                len(label) - len(label.lstrip()))
                lines += textwrap.wrap(label, 100, subsequent_indent=indent)
            elif isinstance(value, dict):
                lines.append(label.ljust(width) + "  ".join(_fmt(value.get(k)).rjust(12) for k in keys))
            else:
                lines.append(label.ljust(width) + _fmt(value).rjust(12))
        lines.append("")
    from dpo_rlhf_checks.audit_diagnostics import format_lines

    for title, r in blocks:
        if r.get("diagnostics"):
            lines += format_lines(r["diagnostics"], f"chosen log-prob and accuracy split, {title}") + [""]
    if result.get("sum_vs_mean_ranking_disagreement"):
        lines.append("sum vs per-token mean, pairs ranked differently: " + ", ".join(
            f"{k} {_fmt(v)}" for k, v in result["sum_vs_mean_ranking_disagreement"].items()))
    for k, v in result["unavailable"].items():
        lines.append(f"n/a {k}: {v}")
    if result["figures"]:
        lines.append("figures: " + ", ".join(result["figures"]))
    return "\n".join(lines)
