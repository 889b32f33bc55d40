"""Run claims and write ``report.json`` / ``report.md``.

``report.json`` schema 1 (stable; later tooling reads it):
``{"schema": 1, "toolkit_version", "created", "environment": {python, platform, packages},
"claims": [{"id", "title", "paper_ref", "statement", "verdict", "methods", "evidence",
"counterexample", "amended_statement", "figures", "seconds"}]}``.
A check that crashed is recorded with verdict "error" and its traceback in evidence;
the command then exits non-zero.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterable

from dpo_rlhf_checks import __version__
from dpo_rlhf_checks.registry import Claim
from dpo_rlhf_checks.result import CheckContext, CheckResult, not_checked, to_jsonable

SCHEMA_VERSION = 1
ERROR_VERDICT = "error"
_PACKAGES = ("sympy", "numpy", "scipy", "matplotlib", "cvxpy", "torch", "hypothesis")


def environment() -> dict[str, Any]:
    """Python, platform and the versions of the packages the checks use."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions}


def run_claim(claim: Claim, ctx: CheckContext) -> dict[str, Any]:
    """Run one claim's check and return its report entry (never raises for a crashing check)."""
    start = time.perf_counter()
    try:
        func = claim.resolve()
        result: CheckResult = func(ctx) if func is not None else not_checked("not implemented yet")
        if not isinstance(result, CheckResult):
            raise TypeError(f"check of {claim.id} returned {type(result).__name__}, not CheckResult")
        entry = {
            "verdict": result.verdict,
            "methods": list(result.methods),
            "summary": result.summary,
            "evidence": result.evidence,
            "counterexample": result.counterexample,
            "amended_statement": result.amended_statement,
            "figures": [str(f) for f in result.figures],
        }
    except Exception as err:  # a crashing check is reported, and the run exits non-zero
        entry = {
            "verdict": ERROR_VERDICT,
            "methods": [],
            "summary": f"check crashed: {type(err).__name__}: {err}",
            "evidence": {"traceback": traceback.format_exc()},
            "counterexample": None,
            "amended_statement": None,
            "figures": [],
        }
    head = {"id": claim.id, "title": claim.title, "paper_ref": claim.paper_ref, "statement": claim.statement}
    return to_jsonable({**head, **entry, "seconds": round(time.perf_counter() - start, 3)})


def run_claims(claims: Iterable[Claim], ctx: CheckContext, log=sys.stderr) -> dict[str, Any]:
    """Run the claims in order, printing one progress line per claim to ``log``."""
    claims = list(claims)
    entries = []
    for i, claim in enumerate(claims, 1):
        print(f"[{i}/{len(claims)}] {claim.id} ...", file=log, flush=True)
        entry = run_claim(claim, ctx)
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


def _short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(report: dict[str, Any], width: int = 70) -> str:
    """The printed table: id, paper reference, verdict, methods, one-line evidence."""
    rows = [("id", "paper ref", "verdict", "methods", "evidence")]
    for c in report["claims"]:
        ref = c["paper_ref"].split(";")[0]
        rows.append((c["id"], _short(ref, 22), c["verdict"], ",".join(c["methods"]) or "-", _short(c["summary"], width)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4])
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 8)
    counts: dict[str, int] = {}
    for c in report["claims"]:
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    lines.append("")
    lines.append("verdicts: " + ", ".join(f"{v} {n}" for v, n in counts.items()))
    return "\n".join(lines)


def format_markdown(report: dict[str, Any], out_dir: Path = Path(".")) -> str:
    """``report.md``: the table, then each claim's statement, evidence and counterexample.

    Figure links are relative to ``out_dir``, where report.md is written.
    """
    out = [
        "# dpo-rlhf-checks report",
        "",
        f"toolkit {report['toolkit_version']}, created {report['created']}, settings {report['settings']}",
        "",
        "| id | paper ref | verdict | methods | evidence |",
        "|---|---|---|---|---|",
    ]
    for c in report["claims"]:
        summary = c["summary"].replace("|", "\\|")
        out.append(f"| `{c['id']}` | {c['paper_ref']} | **{c['verdict']}** | {', '.join(c['methods'])} | {summary} |")
    for c in report["claims"]:
        out += ["", f"## `{c['id']}`: {c['title']}", "", f"*{c['paper_ref']}*", "", f"Statement: {c['statement']}", ""]
        out.append(f"Verdict: **{c['verdict']}** ({', '.join(c['methods']) or 'no method'}; {c['seconds']} s)")
        if c["amended_statement"]:
            out += ["", f"Amended statement: {c['amended_statement']}"]
        if c["counterexample"] is not None:
            out += ["", "Counterexample:", "", "```json", json.dumps(c["counterexample"], indent=2), "```"]
        out += ["", "Evidence:", "", "```json", json.dumps(c["evidence"], indent=2), "```"]
        for fig in c["figures"]:
            if fig.endswith(".png"):
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
