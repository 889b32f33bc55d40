"""``report.md`` rendering (issue 17 item 14): a key to the verdicts, capped table cells with the whole text in a
details block, counterexamples as small tables, and a ``fails`` verdict that says which amendment was tried and why
it failed. On a synthetic report shaped like report.json, so every case is present."""

from __future__ import annotations

import re
from pathlib import Path

from dpo_rlhf_checks.report import CELL_CHARS, VERDICT_KEY, format_markdown

LONG = "loss < log 2 with delta < 0 found in 14/23 regimes; " * 90  # ~4,700 characters, as issue 17 measured


def method(name, literal, amended, summary="ok", statement=None, error=None):
    return {"name": name, "function": f"toy.mod:{name.replace('-', '_')}", "literal": literal, "amended": amended,
            "seconds": 0.5, "depends_on": [], "measured": [], "evidence": {}, "summary": summary,
            "counterexample": None, "amended_statement": statement, "figures": [], "error": error}


def claim(cid, verdict, methods, counterexample=None, amended_statement=None, **extra):
    return {"id": cid, "title": cid.title(), "paper_ref": "Sec. 3", "statement": "the statement", "verdict": verdict,
            "summary": "; ".join(m["summary"] for m in methods), "literal": verdict == "holds",
            "amended": verdict in ("holds", "holds-amended"), "methods": methods,
            "independent_methods": len(methods), "independent_set": [m["name"] for m in methods],
            "counterexample": counterexample, "amended_statement": amended_statement, "not_checked_reason": None,
            "figures": [], "seconds": 1.0, **extra}


PER_VARIANT = {"per_variant": {"dpo": [{"regime": "T = delta_ref", "beta": 1.0, "delta_ref": -5.0, "delta": -1.0,
                                        "loss": 0.0181499, "params": {}}],
                               "cpo_eq17": [{"regime": f"gamma/beta = {g}", "beta": 1.0, "params": {"gamma": g},
                                             "delta": -0.5, "loss": 0.3} for g in (0.0, 0.1, 0.2)]},
               "sum_vs_mean": {"variant": "cpo_clip", "tokens_w": 10, "loss": 0.403186, "loss_below_log2": True}}


def report():
    return {"toolkit_version": "0.1.0", "created": "2026-12-02T00:00:00+00:00",
            "settings": {"seed": 0, "quick": True},
            "claims": [
                claim("certificates", "holds-amended",
                      [method("numeric-search", False, True, LONG, "Loss < log 2 certifies iff inf T >= 0."),
                       method("simulation", True, None, "short")],
                      counterexample={"numeric-search": PER_VARIANT},
                      amended_statement="Loss < log 2 certifies iff inf T >= 0."),
                claim("broken", "fails",
                      [method("symbolic", False, False, "the amended bound is off by 2x at beta = 3",
                              "delta > 0 when beta > 1"),
                       method("numeric", False, None, "max error 0.5 at pi = (0.2, 0.8)")],
                      counterexample={"symbolic": {"beta": 3.0, "bound": [1.0, 2.0], "observed": 4.0}}),
                claim("untried", "fails", [method("numeric", False, None, "delta = -0.3 at beta = 2")],
                      counterexample={"numeric": {"beta": 2.0, "delta": -0.3}}),
            ]}


def flat(text: str) -> str:
    """Markdown text with its line breaks inside paragraphs and list items undone (report.md wraps at 110)."""
    return " ".join(text.split())


def cells(md: str) -> list[str]:
    return [cell for line in md.splitlines() if line.startswith("|")
            for cell in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_a_key_to_the_verdicts_comes_first():
    md = format_markdown(report(), Path("."))
    key = md.index("**Key to the verdicts.**")
    assert key < md.index("| claim |")  # before the table
    for verdict, meaning in VERDICT_KEY[:4]:
        assert f"- **{verdict}**: {meaning}" in md[key:md.index("| claim |")]
    assert "- **error**" not in md  # shown only when a run has one
    assert "This run: 1 holds-amended, 2 fails." in md


def test_table_cells_are_capped_and_the_whole_text_is_in_details():
    md = format_markdown(report(), Path("."))
    assert max(len(c) for c in cells(md)) <= CELL_CHARS + len(" (whole text below)") + 2
    assert max(len(line) for line in md.splitlines()) < 1000  # issue 17: lines up to 4,655 characters
    details = md[md.index("<details><summary>Deciding numbers, whole text</summary>"):md.index("</details>")]
    assert flat(LONG) in flat(details)  # nothing lost: the whole text, once, outside the table
    assert flat(md).count(flat(LONG)) == 1


def test_counterexamples_are_small_tables():
    md = format_markdown(report(), Path("."))
    section = md[md.index("**Counterexample to the literal statement.**"):md.index('<a id="broken">')]
    assert "per_variant.cpo_eq17 (3 records):" in section
    assert re.search(r"\| regime \| beta \| params\.gamma \| delta \| loss \|\n\|---\|---\|---\|---\|---\|\n"
                     r"\| gamma/beta = 0\.0 \| 1 \| 0 \| -0\.5 \| 0\.3 \|", section), section
    assert "| sum_vs_mean.loss_below_log2 | True |" in section
    assert "per_variant: dpo: [regime" not in md  # the old key: value dump


def test_many_records_and_columns_are_cut_with_a_pointer_to_report_json():
    r = report()
    r["claims"][0]["counterexample"]["numeric-search"]["per_variant"]["dpo"] = [
        {f"c{j}": i * j for j in range(20)} for i in range(12)]
    md = format_markdown(r, Path("."))
    assert "per_variant.dpo (12 records; 6 more columns in report.json):" in md
    assert "… 4 more rows in report.json" in md


def test_a_fails_verdict_says_which_amendment_was_tried_and_why_it_failed():
    md = format_markdown(report(), Path("."))
    broken = flat(md[md.index('<a id="broken">'):md.index('<a id="untried">')])
    assert "**Why it fails.** Amendment tried: delta > 0 when beta > 1" in broken
    assert "- `symbolic` refutes it: the amended bound is off by 2x at beta = 3" in broken
    assert ("- `numeric` tests no amendment, and the statement as written fails there: max error 0.5 at "
            "pi = (0.2, 0.8)") in broken
    untried = flat(md[md.index('<a id="untried">'):])
    assert ("**Why it fails.** The statement as written fails in `numeric`; no amended statement was tried "
            "(no method and no registry entry states one).") in untried
    # The registry's amendment, when the report carries it, is the one named.
    r = report()
    r["claims"][2]["amendment"] = "delta >= 0 for beta <= 1"
    assert "Amendment tried: delta >= 0 for beta <= 1" in flat(format_markdown(r, Path(".")))


def test_wrapped_lines_never_start_a_markdown_block():
    from dpo_rlhf_checks.report import _para

    escaped = 0
    for marker in ("-", "#", "1.", ">", "|", "+"):
        for pad in range(1, 120):  # the marker lands at every column, so at some line start
            lines = _para("x" * pad + " " + "word " * 20 + marker + " item " + "word " * 30)
            assert all(len(line) <= 110 or " " not in line.strip() for line in lines)  # a long word stays whole
            assert all(not re.match(r"[-+*#>|]|\d+[.)]", line) for line in lines[1:]), lines
            escaped += sum(line.startswith("\\") for line in lines[1:])
            assert flat(" ".join(lines).replace("\\", "")) == flat("x" * pad + " " + "word " * 20 + marker
                                                                    + " item " + "word " * 30)
    assert escaped >= 6
