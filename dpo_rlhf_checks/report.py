"""Run claims method by method, merge them with the one rule, and write ``report.json`` / ``report.md``.

``report.json`` schema 2 (stable; later tooling reads it; documented in the README)::

    {"schema": 2, "toolkit_version", "created", "environment": {python, platform, packages}, "settings",
     "claims": [{"id", "title", "paper_ref", "statement", "verdict", "summary", "literal", "amended",
                 "methods": [{"name", "function", "literal", "amended", "seconds", "depends_on", "evidence",
                              "summary", "counterexample", "amended_statement", "figures", "inconclusive",
                              "error"}],
                 "independent_methods", "independent_set", "counterexample", "amended_statement",
                 "not_checked_reason", "inconclusive", "figures", "seconds"}]}

The runner (:func:`run_claim`) resolves each method's ``"module:function"`` when it runs, times it, and
catches its exception: a crashing method (or one that cannot be imported, or that returns something other
than a MethodResult) makes the claim's verdict ``error`` with the traceback under that method, and the
command exits 1. Every method of a claim runs (a crash in one does not skip the others) and the verdict is
never computed from a smaller list. The verdict of the rest comes from
:func:`dpo_rlhf_checks.result.merge_methods`, the one merge rule.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterable

from dpo_rlhf_checks import __version__
from dpo_rlhf_checks.registry import Claim, resolve_method
from dpo_rlhf_checks.result import (ERROR_VERDICT, VERDICT_MEANINGS, VERDICTS, CheckContext, MethodResult,
                                    independent_methods, merge_methods, to_jsonable)
from dpo_rlhf_checks.tracing import measure_calls

SCHEMA_VERSION = 2
_PACKAGES = ("sympy", "numpy", "scipy", "matplotlib", "cvxpy", "torch", "hypothesis")


def numerics() -> dict[str, Any]:
    """What decides the last bits of a float computation here: the CPU's SIMD level as torch dispatches it
    (``torch.backends.cpu.get_cpu_capability()``), the BLAS of numpy and torch, and the thread counts.

    Two machines of one kind can differ in these (AVX2 against AVX512 kernels sum in another order), and an LM
    run is bitwise deterministic only on one of them. torch is read only when a method loaded it (imports stay
    lazy): otherwise its fields say so.
    """
    out: dict[str, Any] = {"cpu_count": os.cpu_count(),
                           "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                                          "OPENBLAS_NUM_THREADS", "TOY_LM_THREADS")}}
    try:
        import numpy

        blas = numpy.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        out["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}".strip()
    except Exception as err:  # an old numpy without mode="dicts": say so, never fail the report
        out["numpy_blas"] = f"unknown ({type(err).__name__})"
    torch = sys.modules.get("torch")
    if torch is None:
        out.update({"torch_cpu_capability": "torch not loaded in this run", "torch_blas": None, "torch_threads": None})
    else:
        config = torch.__config__.show()
        blas = re.findall(r"BLAS_INFO=([^,\s]+)", config)
        out.update({"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "torch_blas": blas[0] if blas else None, "torch_threads": torch.get_num_threads(),
                    "torch_interop_threads": torch.get_num_interop_threads()})
    return out


def environment() -> dict[str, Any]:
    """Python, platform, the versions of the packages the checks use, and the numerics (:func:`numerics`)."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions,
            "numerics": numerics()}


def run_method(name: str, target: str, ctx: CheckContext) -> tuple[MethodResult | None, dict[str, Any]]:
    """Resolve and run one method; (its result or None when it crashed, its report entry)."""
    start = time.perf_counter()
    try:
        func = resolve_method(target)
        result, measured = measure_calls(func, ctx)
        if not isinstance(result, MethodResult):
            raise TypeError(f"method {name} ({target}) returned {type(result).__name__}, not MethodResult")
        entry = {"name": name, "function": target, "literal": result.literal, "amended": result.amended,
                 "depends_on": list(result.depends_on), "measured": sorted(measured),
                 "summary": result.summary, "evidence": result.evidence,
                 "counterexample": result.counterexample, "amended_statement": result.amended_statement,
                 "figures": [str(f) for f in result.figures], "inconclusive": result.inconclusive, "error": None}
    except Exception as err:  # a crashing method is reported under its name, and the run exits 1
        result = None
        entry = {"name": name, "function": target, "literal": None, "amended": None, "depends_on": [], "measured": [],
                 "summary": f"crashed: {type(err).__name__}: {err}", "evidence": {}, "counterexample": None,
                 "amended_statement": None, "figures": [], "inconclusive": None, "error": traceback.format_exc()}
    entry["seconds"] = round(time.perf_counter() - start, 3)
    return result, entry


def run_claim(claim: Claim, ctx: CheckContext, log=None) -> dict[str, Any]:
    """Run every method of one claim and merge them (never raises for a crashing method)."""
    start = time.perf_counter()
    head = {"id": claim.id, "title": claim.title, "paper_ref": claim.paper_ref, "statement": claim.statement}
    if claim.not_checked:
        entry = {"verdict": VERDICTS[3], "summary": f"not checked: {claim.not_checked}", "literal": None,
                 "amended": None, "methods": [], "independent_methods": 0, "independent_set": [],
                 "counterexample": None, "amended_statement": None, "not_checked_reason": claim.not_checked,
                 "inconclusive": None, "figures": []}
        return to_jsonable({**head, **entry, "seconds": 0.0})
    results: dict[str, MethodResult] = {}
    entries = []
    for name, target in claim.methods.items():
        result, m_entry = run_method(name, target, ctx)
        if log is not None:
            state = "crashed" if result is None else f"literal {result.literal}, amended {result.amended}" + (
                "" if result.inconclusive is None else ", inconclusive")
            print(f"    {name}: {state} ({m_entry['seconds']:.1f} s)", file=log, flush=True)
        entries.append(m_entry)
        if result is not None:
            results[name] = result
    crashed = [e["name"] for e in entries if e["error"] is not None]
    figures = [f for e in entries for f in e["figures"]]
    summary = "; ".join(f"{e['name']}: {e['summary']}" for e in entries)
    if crashed:
        entry = {"verdict": ERROR_VERDICT, "summary": f"method(s) crashed: {', '.join(crashed)}; {summary}",
                 "literal": None, "amended": None, "counterexample": None, "amended_statement": None,
                 "inconclusive": None}
    else:
        merged = merge_methods(results)
        entry = {"verdict": merged["verdict"], "summary": summary, "literal": merged["literal"],
                 "amended": merged["amended"], "counterexample": merged["counterexample"],
                 "amended_statement": merged["amended_statement"], "inconclusive": merged["inconclusive"]}
        if merged["verdict"] == VERDICTS[1] and claim.amendment:
            entry["amended_statement"] = claim.amendment  # registry text fixed before the run
    indep = independent_methods({e["name"]: tuple(e["depends_on"]) for e in entries if e["error"] is None})
    entry.update({"methods": entries, "independent_methods": len(indep), "independent_set": indep,
                  "not_checked_reason": None, "figures": list(dict.fromkeys(figures))})
    return to_jsonable({**head, **entry, "seconds": round(time.perf_counter() - start, 3)})


def run_claims(claims: Iterable[Claim], ctx: CheckContext, log=sys.stderr) -> dict[str, Any]:
    """Run the claims in order, printing one progress line per claim to ``log``."""
    claims = list(claims)
    entries = []
    for i, claim in enumerate(claims, 1):
        print(f"[{i}/{len(claims)}] {claim.id} ...", file=log, flush=True)
        entry = run_claim(claim, ctx, log=log)
        print(f"[{i}/{len(claims)}] {claim.id}: {entry['verdict']} ({entry['seconds']:.1f} s)", file=log, flush=True)
        entries.append(entry)
    return {
        "schema": SCHEMA_VERSION,
        "toolkit_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "settings": {"seed": ctx.seed, "quick": ctx.quick, "lm_config": ctx.lm_config, "device": ctx.device},
        "claims": entries,
    }


_NEG_ZERO = re.compile(r"(?<![\w.])-(0(?:\.0*)?(?:e[+-]?\d+)?)(?![\w.])")


def no_negative_zero(text: str) -> str:
    """``text`` with every printed negative zero (``-0``, ``-0.0``, ``-0.0e+00``) written without its sign."""
    return _NEG_ZERO.sub(r"\1", str(text))


def _short(text: str, width: int) -> str:
    text = no_negative_zero(" ".join(str(text).split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def _method_names(c: dict[str, Any]) -> str:
    return ",".join(m["name"] for m in c["methods"]) or "-"


def format_table(report: dict[str, Any], width: int = 60) -> str:
    """The printed table: id, paper reference, verdict, methods, independent methods, one-line evidence."""
    rows = [("id", "paper ref", "verdict", "methods", "indep", "evidence")]
    for c in report["claims"]:
        ref = c["paper_ref"].split(";")[0]
        rows.append((c["id"], _short(ref, 22), c["verdict"], _method_names(c), str(c["independent_methods"]),
                     _short(c["summary"], width)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + "  " + row[5])
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 8)
    counts: dict[str, int] = {}
    for c in report["claims"]:
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    lines.append("")
    lines.append("verdicts: " + ", ".join(f"{v} {n}" for v, n in counts.items()))
    lines.append("key: " + "; ".join(f"{v}: {VERDICT_MEANINGS[v]}" for v in counts if v in VERDICT_MEANINGS))
    return "\n".join(lines)


def _md(text: Any) -> str:
    """Text for a markdown table cell or paragraph: one line, '|' escaped, no negative zero."""
    return no_negative_zero(" ".join(str(text).split())).replace("|", "\\|")


def _compact(value: Any, depth: int = 0) -> str:
    """A short, readable rendering of a counterexample (numbers rounded, nesting flattened to 'a.b: v')."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_compact(v, depth + 1)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_compact(v, depth + 1) for v in value[:8])
        return f"[{inner}{', …' if len(value) > 8 else ''}]"
    return str(value)


def format_markdown(report: dict[str, Any], out_dir: Path = Path(".")) -> str:
    """``report.md``, a document to read: the verdict table, then per claim its statement, verdict, each method's
    deciding numbers, the counterexample and the amended statement, and its figures. The full evidence is only in
    ``report.json``. Figure links are relative to ``out_dir``, where report.md is written.
    """
    settings = ", ".join(f"{k} {v}" for k, v in report["settings"].items())
    out = [
        "# dpo-rlhf-checks report",
        "",
        f"toolkit {report['toolkit_version']}, created {report['created']}; settings: {settings}. "
        "The full evidence of every method is in `report.json` (schema 2).",
        "",
        "| claim | paper ref | verdict | methods | independent |",
        "|---|---|---|---|---|",
    ]
    for c in report["claims"]:
        out.append(f"| [`{c['id']}`](#{c['id']}) | {_md(c['paper_ref'])} | **{c['verdict']}** | "
                   f"{', '.join(m['name'] for m in c['methods']) or '-'} | {c['independent_methods']} |")
    out += ["", "Key: " + "; ".join(f"**{v}**: {_md(VERDICT_MEANINGS[v])}" for v in VERDICT_MEANINGS) + "."]
    for c in report["claims"]:
        out += ["", f"<a id=\"{c['id']}\"></a>", f"## `{c['id']}`: {_md(c['title'])}", "",
                f"*{_md(c['paper_ref'])}*", "", f"**Statement.** {_md(c['statement'])}", "",
                f"**Verdict: {c['verdict']}**"
                + (f" ({c['independent_methods']} independent of {len(c['methods'])} methods: "
                   f"{', '.join(c['independent_set'])}; {c['seconds']} s)" if c["methods"] else "")]
        if c.get("not_checked_reason"):
            out += ["", f"Not checked: {_md(c['not_checked_reason'])}"]
        if c["methods"]:
            out += ["", "| method | literal | amended | seconds | deciding numbers |", "|---|---|---|---|---|"]
            for m in c["methods"]:
                undecided = "undecided" if m.get("inconclusive") else "-"
                lit = "crashed" if m["error"] else (undecided if m["literal"] is None else
                                                    ("holds" if m["literal"] else "fails"))
                amd = "-" if m["error"] else (undecided if m["amended"] is None else
                                              ("holds" if m["amended"] else "fails"))
                out.append(f"| {m['name']} (`{m['function']}`) | {lit} | {amd} | {m['seconds']} | {_md(m['summary'])} |")
        if c.get("inconclusive"):
            out += ["", "**Inconclusive.** The data could not decide:", ""]
            for name, why in c["inconclusive"].items():
                out.append(f"- {name}: {_md(why)}")
        if c["counterexample"]:
            out += ["", "**Counterexample to the literal statement.**", ""]
            for name, cx in c["counterexample"].items():
                out.append(f"- {name}: {_md(_compact(cx))}")
        if c["amended_statement"]:
            out += ["", f"**Amended statement (holds).** {_md(c['amended_statement'])}"]
        crashed = [m for m in c["methods"] if m["error"]]
        for m in crashed:
            out += ["", f"Method `{m['name']}` crashed; traceback (also in report.json):", "", "```",
                    m["error"].rstrip(), "```"]
        for fig in c["figures"]:
            if str(fig).endswith(".png"):
                out += ["", f"![{c['id']}]({os.path.relpath(fig, out_dir)})"]
    return "\n".join(out) + "\n"


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "report.json"
    md_path = out_dir / "report.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(format_markdown(report, out_dir))
    return json_path, md_path
