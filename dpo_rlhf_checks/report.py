"""Run claims method by method, merge them with the one rule, and write ``report.json`` / ``report.md``.

``report.json`` schema 3 (stable; later tooling reads it; documented in the README)::

    {"schema": 3, "toolkit_version", "created", "environment": {python, platform, packages}, "settings",
     "claims": [{"id", "title", "paper_ref", "statement", "verdict", "summary", "literal", "amended",
                 "methods": [{"name", "function", "literal", "amended", "seconds", "depends_on",
                              "declared_depends_on", "undeclared", "measured", "evidence",
                              "summary", "counterexample", "amended_statement", "figures", "inconclusive", "error"}],
                 "independent_methods", "independent_set", "counterexample", "amended_statement",
                 "not_checked_reason", "inconclusive", "figures", "seconds"}]}

The runner (:func:`run_claim`) resolves each method's ``"module:function"`` when it runs, times it, and
catches its exception: a crashing method (or one that cannot be imported, or that returns something other
than a MethodResult) makes the claim's verdict ``error`` with the traceback under that method, and the
command exits 1. Every method of a claim runs (a crash in one does not skip the others) and the verdict is
never computed from a smaller list. The verdict of the rest comes from
:func:`dpo_rlhf_checks.result.merge_methods`, the one merge rule.

Each method runs under the call profiler (:func:`dpo_rlhf_checks.tracing.measure_calls`): ``measured`` is every
toolkit function it entered, ``depends_on`` the formulas among them (:func:`dpo_rlhf_checks.tracing.formulas`:
the method's own function and the shared primitives dropped), ``declared_depends_on`` what the method's
MethodResult declares, and ``undeclared`` the measured formulas the declaration does not cover (a test keeps it
empty). ``independent_methods`` / ``independent_set`` are computed from the measured ``depends_on``.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import re
import sys
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any, Iterable

from dpo_rlhf_checks import __version__, deferred
from dpo_rlhf_checks.registry import Claim, resolve_method
from dpo_rlhf_checks.result import (ERROR_VERDICT, VERDICT_MEANINGS, VERDICTS, CheckContext, MethodResult,
                                    independent_methods, merge_methods, to_jsonable)
from dpo_rlhf_checks.tracing import covers, formulas, measure_calls, module_of

SCHEMA_VERSION = 3
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


def _relative_figure(path, out_dir) -> str:
    """A figure's path relative to ``out_dir``, the folder of report.json (POSIX form): the report stays valid when
    the folder is moved, and names no absolute path of the machine it ran on."""
    return Path(os.path.relpath(Path(path).resolve(), Path(out_dir).resolve())).as_posix()


def _figure_link(fig: str, out_dir: Path) -> str:
    """A link to a figure from report.md in ``out_dir``: a stored relative path already is one (report.json
    stores them relative to itself); an absolute one (a report of an older toolkit) is made relative."""
    return os.path.relpath(fig, out_dir) if os.path.isabs(fig) else fig


def run_method(name: str, target: str, ctx: CheckContext) -> tuple[MethodResult | None, dict[str, Any]]:
    """Resolve and run one method; (its result or None when it crashed, its report entry)."""
    start = time.perf_counter()
    try:
        func = resolve_method(target)
        result, measured = measure_calls(func, ctx)
        if not isinstance(result, MethodResult):
            raise TypeError(f"method {name} ({target}) returned {type(result).__name__}, not MethodResult")
        measured_formulas = sorted(formulas(measured, target))
        declared = list(result.depends_on)
        entry = {"name": name, "function": target, "literal": result.literal, "amended": result.amended,
                 "depends_on": measured_formulas, "declared_depends_on": declared,
                 "undeclared": [f for f in measured_formulas if not covers(declared, f)],
                 "measured": sorted(measured),
                 "summary": result.summary, "evidence": result.evidence,
                 "counterexample": result.counterexample, "amended_statement": result.amended_statement,
                 "figures": [_relative_figure(f, ctx.out_dir) for f in result.figures],
                 "inconclusive": result.inconclusive, "error": None}
    except Exception as err:  # a crashing method is reported under its name, and the run exits 1
        result = None
        entry = {"name": name, "function": target, "literal": None, "amended": None, "depends_on": [],
                 "declared_depends_on": [], "undeclared": [], "measured": [],
                 "summary": f"crashed: {type(err).__name__}: {err}", "evidence": {}, "counterexample": None,
                 "amended_statement": None, "figures": [], "inconclusive": None, "error": traceback.format_exc()}
    entry["seconds"] = round(time.perf_counter() - start, 3)
    return result, entry


def _shared_output_error(entry: dict, error: str) -> dict:
    return {**entry, "verdict": ERROR_VERDICT, "literal": None, "amended": None,
            "summary": f"writing the methods' shared outputs crashed: {error}; {entry['summary']}"}


def _not_checked_entry(claim: Claim, reason: str) -> dict[str, Any]:
    head = {"id": claim.id, "title": claim.title, "paper_ref": claim.paper_ref, "statement": claim.statement}
    entry = {"verdict": VERDICTS[3], "summary": f"not checked: {reason}", "literal": None,
             "amended": None, "methods": [], "independent_methods": 0, "independent_set": [],
             "counterexample": None, "amended_statement": None, "not_checked_reason": reason,
             "inconclusive": None, "figures": []}
    return to_jsonable({**head, **entry, "seconds": 0.0})


def run_claim(claim: Claim, ctx: CheckContext, log=None, flush: bool = True, skip_slow: bool = False) -> dict[str, Any]:
    """Run every method of one claim and merge them (never raises for a crashing method).

    flush: write the outputs its methods share (dpo_rlhf_checks.deferred) before returning; run_claims writes them
    once after every claim instead (the LM claims share one stage's figures).
    skip_slow: a claim with a ``slow`` field runs nothing and is not-checked, with the reason
    :func:`dpo_rlhf_checks.registry.slow_reason` builds from that field (``--all`` at the default LM config)."""
    from dpo_rlhf_checks.registry import slow_reason

    start = time.perf_counter()
    head = {"id": claim.id, "title": claim.title, "paper_ref": claim.paper_ref, "statement": claim.statement}
    if claim.not_checked:
        return _not_checked_entry(claim, claim.not_checked)
    if skip_slow and claim.slow:
        return _not_checked_entry(claim, slow_reason(claim))
    results: dict[str, MethodResult] = {}
    entries = []
    since = deferred.mark()
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
    deferred.own(claim.id, since)  # outputs the methods share (the LM figures and records), written from the last state
    if flush:
        error = deferred.flush().get(claim.id)
        if error is not None:
            entry = _shared_output_error(entry, error)
    indep = independent_methods({e["name"]: tuple(e["depends_on"]) for e in entries if e["error"] is None})
    entry.update({"methods": entries, "independent_methods": len(indep), "independent_set": indep,
                  "not_checked_reason": None, "figures": list(dict.fromkeys(figures))})
    return to_jsonable({**head, **entry, "seconds": round(time.perf_counter() - start, 3)})


def run_claims(claims: Iterable[Claim], ctx: CheckContext, log=sys.stderr, skip_slow: bool = False) -> dict[str, Any]:
    """Run the claims in order, printing one progress line per claim to ``log``. skip_slow: as in :func:`run_claim`
    (the slow claims are listed as not-checked, with the reason and the commands that run them)."""
    claims = list(claims)
    entries = []
    for i, claim in enumerate(claims, 1):
        print(f"[{i}/{len(claims)}] {claim.id} ...", file=log, flush=True)
        entry = run_claim(claim, ctx, log=log, flush=False, skip_slow=skip_slow)
        print(f"[{i}/{len(claims)}] {claim.id}: {entry['verdict']} ({entry['seconds']:.1f} s)", file=log, flush=True)
        entries.append(entry)
    if deferred.pending():
        start = time.perf_counter()
        errors = deferred.flush()
        print(f"shared outputs written ({time.perf_counter() - start:.1f} s)", file=log, flush=True)
        entries = [to_jsonable(_shared_output_error(e, errors[e["id"]])) if e["id"] in errors else e for e in entries]
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


def below_two(c: dict[str, Any]) -> bool:
    """Whether a checked claim has fewer than 2 measured-independent methods (said in every table)."""
    return bool(c["methods"]) and c["independent_methods"] < 2


def _indep_cell(c: dict[str, Any]) -> str:
    n = c["independent_methods"]
    return f"{n} (<2)" if below_two(c) else str(n)


def grouped_names(names: Iterable[str]) -> str:
    """Formula names grouped by module for a report line: ``"`m.a`: f, g; `m.b`: h"`` (every name, compactly)."""
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        module, _, rest = _split_module(name)
        groups.setdefault(module, []).append(rest)
    return "; ".join(f"`{module}`: {', '.join(rest)}" for module, rest in groups.items())


def _split_module(name: str) -> tuple[str, str, str]:
    """``"pkg.mod.Class.meth"`` -> ("pkg.mod", ".", "Class.meth"): the module is the longest prefix that is a
    toolkit source file."""
    module = module_of(name)
    return module, ".", name[len(module) + 1:]


def shared_formulas(c: dict[str, Any]) -> dict[str, list[str]]:
    """For each pair of a claim's methods that share measured formulas: ``"a & b"`` -> the shared formulas."""
    ms = [m for m in c["methods"] if m["error"] is None]
    out = {}
    for i, a in enumerate(ms):
        for b in ms[i + 1:]:
            common = sorted(set(a["depends_on"]) & set(b["depends_on"]))
            if common:
                out[f"{a['name']} & {b['name']}"] = common
    return out


def format_table(report: dict[str, Any], width: int = 60) -> str:
    """The printed table: id, paper reference, verdict, methods, measured-independent methods (``"1 (<2)"`` when a
    checked claim has fewer than 2), one-line evidence."""
    rows = [("id", "paper ref", "verdict", "methods", "indep", "evidence")]
    for c in report["claims"]:
        ref = c["paper_ref"].split(";")[0]
        rows.append((c["id"], _short(ref, 22), c["verdict"], _method_names(c), _indep_cell(c),
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
    low = [c["id"] for c in report["claims"] if below_two(c)]
    if low:
        lines.append(f"below 2 measured-independent methods (indep counts methods with disjoint measured formula "
                     f"sets; see report.md): {', '.join(low)}")
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


# report.md's table cells are capped (a cell of thousands of characters makes a table unreadable); the whole text
# goes into a details block under the table, and everything is in report.json.
CELL_CHARS = 200
CX_ROWS, CX_COLUMNS, CX_CELL = 8, 14, 60  # a counterexample table: rows, columns, characters per cell

# The key to the verdicts, printed at the top of report.md.
VERDICT_KEY = (
    ("holds", "every method confirmed the statement as the paper writes it"),
    ("holds-amended", "the statement as written fails (a counterexample is shown), and an amended statement, "
                      "written in the registry before the run, holds in every method"),
    ("fails", "the statement as written fails, and no amendment tried held (the report says which was tried and "
              "why it failed)"),
    ("not-checked", "the toolkit does not check this claim (the reason is given)"),
    ("inconclusive", "some method could not decide: an interval across seeds still straddled its margin, fixed in "
                     "the registry before the run, when the seed budget was spent (the run still exits 0)"),
    ("error", "a method crashed: the claim has no verdict, and the run exits 1"),
)


def _cell(text: Any, limit: int = CELL_CHARS) -> str:
    """:func:`_md` cut to ``limit`` characters (ending in '…')."""
    text = _md(text)
    return text if len(text) <= limit else text[: limit - 1].rstrip("\\") + "…"


_BLOCK_START = re.compile(r"^([-+*#>|=`~]|\d+[.)])")  # what would start a list, heading, quote or table


def _para(text: Any, first: str = "", indent: str = "") -> list[str]:
    """A paragraph (or a list item: ``first`` = "- ", ``indent`` = "  ") of :func:`_md` text, wrapped at 110
    characters, so no line of report.md runs to thousands of characters; a continuation line that would start a
    markdown block (a list, a heading, a table) has its first character escaped, so it stays in the paragraph."""
    lines = textwrap.wrap(_md(text), 110, initial_indent=first, subsequent_indent=indent, break_long_words=False,
                          break_on_hyphens=False) or [first.rstrip()]
    return lines[:1] + [indent + ("\\" + line[len(indent):] if _BLOCK_START.match(line[len(indent):]) else
                                  line[len(indent):]) for line in lines[1:]]


def _flat(value: Any, key: str = "") -> list[tuple[str, Any]]:
    """(dotted key, leaf) pairs of nested dicts; lists and scalars are leaves."""
    if isinstance(value, dict) and value:
        return [kv for k, v in value.items() for kv in _flat(v, f"{key}.{k}" if key else str(k))]
    return [(key or "value", value)]


def _counterexample_tables(name: str, cx: Any) -> list[str]:
    """One method's counterexample as small markdown tables: its scalar quantities as (quantity, value) rows, and
    each list of records (e.g. one record per loss variant) as a table of its own, one record per row."""
    scalars: list[tuple[str, Any]] = []
    records: list[tuple[str, list]] = []
    for key, leaf in _flat(cx):
        if isinstance(leaf, (list, tuple)) and leaf and all(isinstance(x, dict) for x in leaf):
            records.append((key, list(leaf)))
        else:
            scalars.append((key, leaf))
    out = [f"*{_md(name)}*", ""]
    if scalars:
        out += ["| quantity | value |", "|---|---|"]
        out += [f"| {_cell(k, CX_CELL)} | {_cell(_compact(v), 2 * CX_CELL)} |" for k, v in scalars[:2 * CX_ROWS]]
        if len(scalars) > 2 * CX_ROWS:
            out.append(f"| … | {len(scalars) - 2 * CX_ROWS} more in report.json |")
        out.append("")
    for key, items in records:
        rows = [dict(_flat(item)) for item in items]
        columns = list(dict.fromkeys(k for row in rows for k in row))
        shown = columns[:CX_COLUMNS]
        out += [f"{_md(key)} ({len(items)} record{'s' if len(items) != 1 else ''}"
                + (f"; {len(columns) - len(shown)} more columns in report.json" if len(columns) > len(shown) else "")
                + "):", "",
                "| " + " | ".join(_cell(c, CX_CELL) for c in shown) + " |", "|" + "---|" * len(shown)]
        for row in rows[:CX_ROWS]:
            out.append("| " + " | ".join(_cell(_compact(row.get(c, "")), CX_CELL) for c in shown) + " |")
        if len(rows) > CX_ROWS:
            out.append("| " + " | ".join([f"… {len(rows) - CX_ROWS} more rows in report.json"]
                                         + [""] * (len(shown) - 1)) + " |")
        out.append("")
    return out


def _fails_explanation(c: dict[str, Any]) -> list[str]:
    """For a ``fails`` verdict: which amendment was tried (the registry's, or the methods' own) and why it failed
    (the methods whose amended test failed, with their deciding numbers), or that none was tried."""
    tried = c.get("amendment") or next((m["amended_statement"] for m in c["methods"] if m.get("amended_statement")),
                                       None)
    refuted = [m for m in c["methods"] if not m["error"] and m["amended"] is False]
    unsupported = [m for m in c["methods"] if not m["error"] and m["amended"] is None and not m["literal"]]
    if tried is None and not refuted:
        return [""] + _para("**Why it fails.** The statement as written fails in "
                            + ", ".join(f"`{m['name']}`" for m in unsupported or c["methods"])
                            + "; no amended statement was tried (no method and no registry entry states one).")
    out = [""] + _para("**Why it fails.** Amendment tried: " + (tried if tried else "(the methods' amended tests; "
                                                                "no text was stated)"))
    out.append("")
    for m in refuted:
        out += _para(f"`{m['name']}` refutes it: {m['summary']}", "- ", "  ")
    for m in unsupported:
        out += _para(f"`{m['name']}` tests no amendment, and the statement as written fails there: {m['summary']}",
                     "- ", "  ")
    return out


def format_markdown(report: dict[str, Any], out_dir: Path = Path(".")) -> str:
    """``report.md``, a document to read: a key to the verdicts, the verdict table, then per claim its statement,
    verdict, each method's deciding numbers (table cells capped at :data:`CELL_CHARS` characters; the whole text in
    a details block), the counterexample as small tables, the amended statement (or, for ``fails``, which amendment
    was tried and why it failed), and its figures. The full evidence is only in ``report.json``. Figure paths in
    ``report`` are relative to ``out_dir``, where report.md is written.
    """
    settings = ", ".join(f"{k} {v}" for k, v in report["settings"].items())
    counts: dict[str, int] = {}
    for c in report["claims"]:
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    out = [
        "# dpo-rlhf-checks report",
        "",
        f"toolkit {report['toolkit_version']}, created {report['created']}; settings: {settings}. "
        f"The full evidence of every method is in `report.json` (schema {SCHEMA_VERSION}). *Independent* counts "
        "the largest set of a claim's methods whose measured formula sets are pairwise disjoint (the toolkit "
        "functions each method was measured to execute, less the shared primitives; README).",
        "",
        "**Key to the verdicts.** Each verdict is computed from the methods' results by one rule, never typed in.",
        "",
    ]
    out += [f"- **{v}**: {text}" for v, text in VERDICT_KEY if v in counts or v != "error"]
    out += ["", "This run: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".", "",
            "| claim | paper ref | verdict | methods | independent (measured) |",
            "|---|---|---|---|---|"]
    for c in report["claims"]:
        indep = f"**{c['independent_methods']}: below 2**" if below_two(c) else str(c["independent_methods"])
        out.append(f"| [`{c['id']}`](#{c['id']}) | {_cell(c['paper_ref'], 80)} | **{c['verdict']}** | "
                   f"{', '.join(m['name'] for m in c['methods']) or '-'} | {indep} |")
    for c in report["claims"]:
        out += ["", f"<a id=\"{c['id']}\"></a>", f"## `{c['id']}`: {_md(c['title'])}", "",
                f"*{_md(c['paper_ref'])}*", "", *_para(f"**Statement.** {c['statement']}"), "",
                f"**Verdict: {c['verdict']}**"
                + (f" ({c['independent_methods']} measured-independent of {len(c['methods'])} methods: "
                   f"{', '.join(c['independent_set'])}; {c['seconds']} s)" if c["methods"] else "")]
        if below_two(c):
            shared = shared_formulas(c)
            why = " / ".join(f"{pair} share {grouped_names(fs)}" for pair, fs in shared.items())
            out += ["", f"**Below 2 measured-independent methods.** " + (why if why else "one method") + "."]
        if c.get("not_checked_reason"):
            out += ["", *_para(f"Not checked: {c['not_checked_reason']}")]
        if c["methods"]:
            out += ["", "| method | literal | amended | seconds | deciding numbers |", "|---|---|---|---|---|"]
            for m in c["methods"]:
                undecided = "undecided" if m.get("inconclusive") else "-"
                lit = "crashed" if m["error"] else (undecided if m["literal"] is None else
                                                    ("holds" if m["literal"] else "fails"))
                amd = "-" if m["error"] else (undecided if m["amended"] is None else
                                              ("holds" if m["amended"] else "fails"))
                cut = len(_md(m["summary"])) > CELL_CHARS
                out.append(f"| {m['name']} (`{m['function']}`) | {lit} | {amd} | {m['seconds']} | "
                           f"{_cell(m['summary'])}{' (whole text below)' if cut else ''} |")
            long = [m for m in c["methods"] if len(_md(m["summary"])) > CELL_CHARS]
            if long:
                out += ["", "<details><summary>Deciding numbers, whole text</summary>", ""]
                out += [line for m in long for line in _para(f"`{m['name']}`: {m['summary']}", "- ", "  ")]
                out += ["", "</details>"]
            out += ["", "Measured formulas (`depends_on`):", ""]
            for m in c["methods"]:
                forms = grouped_names(m["depends_on"]) or "none from the toolkit"
                miss = m.get("undeclared") or []
                text = f"{m['name']} ({len(m['depends_on'])}): {forms}"
                if miss:
                    text += f". **Not declared** ({len(miss)}): {grouped_names(miss)}"
                out += _para(text, "- ", "  ")
        if c.get("inconclusive"):
            out += ["", "**Inconclusive.** The data could not decide:", ""]
            for name, why in c["inconclusive"].items():
                out += _para(f"{name}: {why}", "- ", "  ")
        if c["counterexample"]:
            out += ["", "**Counterexample to the literal statement.**", ""]
            for name, cx in c["counterexample"].items():
                out += _counterexample_tables(name, cx)
            while out[-1] == "":
                out.pop()
        if c["verdict"] == "fails":
            out += _fails_explanation(c)
        if c["amended_statement"]:
            out += ["", *_para(f"**Amended statement (holds).** {c['amended_statement']}")]
        crashed = [m for m in c["methods"] if m["error"]]
        for m in crashed:
            out += ["", f"Method `{m['name']}` crashed; traceback (also in report.json):", "", "```",
                    m["error"].rstrip(), "```"]
        for fig in c["figures"]:
            if str(fig).endswith(".png"):
                out += ["", f"![{c['id']}]({_figure_link(fig, out_dir)})"]
    return "\n".join(out) + "\n"


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``; return their paths.

    The command line writes into a staging folder and renames the files into place when the run has finished
    (:mod:`dpo_rlhf_checks.outdir`); figure paths in ``report`` are relative to ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "report.json"
    md_path = out_dir / "report.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(format_markdown(report, out_dir))
    return json_path, md_path
