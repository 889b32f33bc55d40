"""Appendix export: ``report.tex``, a claims table and figure snippets to ``\\input`` into a paper.

``paper_checks.py --all --format latex`` calls :func:`write_latex`. The file has no preamble
(no ``\\documentclass``); the including document needs::

    \\usepackage{booktabs}   % \\toprule, \\midrule, \\bottomrule
    \\usepackage{longtable}  % the table breaks across pages (one-column mode: longtable refuses
                            % two columns, so put it after \\onecolumn in a two-column paper)
    \\usepackage{array}      % \\raggedright in p{} columns
    \\usepackage{graphicx}   % \\includegraphics of the PDF figures
    \\usepackage[T1]{fontenc} % recommended (accented letters)

Figures are included from ``\\PaperChecksDir`` + the figure's path relative to ``report.tex`` (never an
absolute path); ``\\PaperChecksDir`` is empty by default (the document compiles in the report folder) and
is defined before ``\\input`` when the paper lives elsewhere (``\\newcommand{\\PaperChecksDir}{results/}``).
A figure that two claims share (the LM stage's) is included once, with the first claim that names it.
Every piece of text from the report is escaped (:func:`latex_escape`): LaTeX's special characters and
the unicode symbols the statements use (``≥``, ``→``, Greek letters, ...); other characters outside
Latin-1 are written as ``U+XXXX`` so that pdflatex never stops on them. Statements, amended statements
and summaries are written in the toolkit's ASCII math (``pi_ref``, ``delta*``, ``beta``, ``<=``);
:func:`latex_math_text` typesets those tokens as math (``$\\pi_{\\mathrm{ref}}$``, ``$\\delta^{*}$``,
``$\\beta$``, ``$\\leq$``) and escapes the rest, so the table reads as mathematics, not as escaped code.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Any

REQUIRED_PACKAGES = ("booktabs", "longtable", "array", "graphicx")

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}
_UNICODE = {
    "≥": r"$\geq$", "≤": r"$\leq$", "≠": r"$\neq$", "≈": r"$\approx$", "→": r"$\to$", "←": r"$\leftarrow$",
    "⇒": r"$\Rightarrow$", "⇔": r"$\Leftrightarrow$", "↔": r"$\leftrightarrow$", "∞": r"$\infty$",
    "×": r"$\times$", "·": r"$\cdot$", "±": r"$\pm$", "∈": r"$\in$", "∉": r"$\notin$", "⊆": r"$\subseteq$",
    "∑": r"$\sum$", "∏": r"$\prod$", "√": r"$\surd$", "∂": r"$\partial$", "∇": r"$\nabla$", "∀": r"$\forall$",
    "∃": r"$\exists$", "≡": r"$\equiv$", "∝": r"$\propto$", "−": r"$-$", "°": r"$^\circ$",
    "α": r"$\alpha$", "β": r"$\beta$", "γ": r"$\gamma$", "δ": r"$\delta$", "ε": r"$\varepsilon$",
    "η": r"$\eta$", "θ": r"$\theta$", "λ": r"$\lambda$", "μ": r"$\mu$", "π": r"$\pi$", "ρ": r"$\rho$",
    "σ": r"$\sigma$", "τ": r"$\tau$", "φ": r"$\phi$", "χ": r"$\chi$", "ψ": r"$\psi$", "ω": r"$\omega$",
    "Δ": r"$\Delta$", "Γ": r"$\Gamma$", "Λ": r"$\Lambda$", "Π": r"$\Pi$", "Σ": r"$\Sigma$", "Ω": r"$\Omega$",
    "–": "--", "—": "---", "…": r"\ldots{}", "‘": "`", "’": "'", "“": "``", "”": "''", "§": r"\S{}",
    "\u00a0": "~",
}


def latex_escape(text: Any) -> str:
    """``text`` as LaTeX text-mode source that prints it literally (see the module docstring)."""
    out = []
    for ch in unicodedata.normalize("NFC", str(text)):
        if ch in _SPECIAL:
            out.append(_SPECIAL[ch])
        elif ch in _UNICODE:
            out.append(_UNICODE[ch])
        elif ch in "\n\r\t":
            out.append(" ")
        elif ord(ch) < 32 or ord(ch) == 127:
            continue  # control characters print nothing
        elif ord(ch) > 0xFF:
            out.append(f"U+{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


_GREEK = {"pi": r"\pi", "delta": r"\delta", "beta": r"\beta", "gamma": r"\gamma", "sigma": r"\sigma", "mu": r"\mu",
          "nu": r"\nu", "tau": r"\tau", "alpha": r"\alpha", "lambda": r"\lambda", "eps": r"\varepsilon",
          "theta": r"\theta"}
_OPS = {"<=>": r"\Leftrightarrow", "<=": r"\leq", ">=": r"\geq", "!=": r"\neq", "->": r"\to", "<": "<", ">": ">"}
_MATH_TOKEN = re.compile(
    r"(?P<op><=>|<=|>=|!=|->|(?<![<>=-])[<>](?![<>=]))"
    r"|\b(?P<greek>pi|delta|beta|gamma|sigma|mu|nu|tau|alpha|lambda|eps|theta)(?P<star>\*?)"
    r"(?:_(?P<sub>ref|w|l|c|crit|pi|mean|tau|m))?(?![A-Za-z0-9])"
    r"|\b(?P<var>[yl])_(?P<vsub>w|l|crit)(?![A-Za-z0-9])")


def _sub(text: str) -> str:
    return f"_{{{text}}}" if len(text) == 1 else f"_{{\\mathrm{{{text}}}}}"


def latex_math_text(text: Any) -> str:
    """The toolkit's ASCII math as LaTeX: Greek names (with ``*`` and ``_ref``/``_w``/``_l``/``_crit`` subscripts),
    ``y_w``, ``y_l``, ``l_crit`` and the operators ``<=``, ``>=``, ``!=``, ``->``, ``<=>`` become inline math; every
    other character goes through :func:`latex_escape`."""
    text = str(text)
    out, pos = [], 0
    for m in _MATH_TOKEN.finditer(text):
        out.append(latex_escape(text[pos:m.start()]))
        if m.group("op"):
            out.append(f"${_OPS[m.group('op')]}$")
        elif m.group("greek"):
            star = "^{*}" if m.group("star") else ""
            sub = _sub(m.group("sub")) if m.group("sub") else ""
            out.append(f"${_GREEK[m.group('greek')]}{star}{sub}$")
        else:
            out.append(f"${m.group('var')}{_sub(m.group('vsub'))}$")
        pos = m.end()
    out.append(latex_escape(text[pos:]))
    return "".join(out)


# A longtable row cannot break across pages: a row taller than the page runs off its bottom (issue 17: a
# 2,160-character statement in a 0.35\\linewidth column). Each cell is cut at a word to these many characters, about
# a dozen lines at \\small, and the whole texts follow the table as ordinary paragraphs, which do break.
CELL_CHARS = {"statement": 420, "amended": 280, "summary": 320}


def _capped(text: Any, limit: int) -> tuple[str, bool]:
    """``text`` (one line) cut at a word boundary to at most ``limit`` characters; (text, whether it was cut)."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text, False
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(",;:") + " …", True


def _breakable_id(claim_id: str) -> str:
    """A claim id, escaped; ids are long unhyphenated words, so a line may break after each '-' and '_'."""
    return re.sub(r"(-|\\_)", r"\1\\allowbreak{}", latex_escape(claim_id))


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9:.-]", "-", text)


def _figure_paths(claim: dict[str, Any], out_dir: Path) -> list[str]:
    """The claim's figures as PDF, relative to the report folder (where report.tex is), in order, no repeats."""
    seen, paths = set(), []
    # report.json's figure paths are relative to out_dir (absolute in reports of older toolkits)
    listed = [Path(fig) if Path(fig).is_absolute() else out_dir / fig for fig in claim.get("figures") or []]
    for path in listed:
        if path.suffix.lower() not in (".pdf", ".png", ".jpg", ".jpeg"):
            continue
        pdf = path.with_suffix(".pdf")
        # The PDF twin of a PNG (figures.style.save writes both); a PNG stays only when no PDF exists.
        chosen = pdf if (path.suffix.lower() == ".pdf" or pdf.exists() or pdf in listed) else path
        rel = Path(os.path.relpath(chosen.resolve(), out_dir.resolve()))  # relative to report.tex, never absolute
        key = rel.with_suffix("").as_posix()
        if key not in seen:
            seen.add(key)
            paths.append(rel.as_posix())
    return paths


def format_latex(report: dict[str, Any], out_dir: Path) -> str:
    """The text of ``report.tex`` for a report dict (``report.json``'s schema)."""
    out_dir = Path(out_dir)
    lines = [
        "% Claims checked by dpo-rlhf-checks " + latex_escape(report.get("toolkit_version", "")) + ", created "
        + latex_escape(report.get("created", "")) + ". Generated file: edit the report, not this file.",
        "% Needs in the preamble: " + " ".join(f"\\usepackage{{{p}}}" for p in REQUIRED_PACKAGES)
        + " (and \\usepackage[T1]{fontenc}); one-column mode (longtable).",
        "% Figure paths are relative to this file; define \\PaperChecksDir (the path from your document to this",
        "% folder, ending in /) before \\input when your document is compiled elsewhere.",
        "\\providecommand{\\PaperChecksDir}{}",
        "",
        "\\begingroup",
        "\\small",
        "\\setlength{\\LTpre}{0.5\\baselineskip}\\setlength{\\LTpost}{0.5\\baselineskip}",
        "\\begin{longtable}{@{}>{\\raggedright\\arraybackslash}p{0.16\\linewidth}"
        ">{\\raggedright\\arraybackslash}p{0.35\\linewidth}"
        ">{\\raggedright\\arraybackslash}p{0.11\\linewidth}"
        ">{\\raggedright\\arraybackslash}p{0.27\\linewidth}@{}}",
        "\\caption{Claims of the paper and the toolkit's computed verdicts.}\\label{tab:paper-checks-claims}\\\\",
        "\\toprule",
        "Claim & Statement & Verdict & Evidence \\\\",
        "\\midrule",
        "\\endfirsthead",
        "\\toprule",
        "Claim & Statement & Verdict & Evidence \\\\",
        "\\midrule",
        "\\endhead",
        "\\bottomrule",
        "\\endfoot",
    ]
    in_full = []  # claims with a cut cell: their whole texts follow the table
    for c in report["claims"]:
        text, cut_s = _capped(c.get("statement", ""), CELL_CHARS["statement"])
        statement = latex_math_text(text)
        cut_a = False
        if c.get("amended_statement"):
            text, cut_a = _capped(c["amended_statement"], CELL_CHARS["amended"])
            statement += " \\newline \\emph{Amended:} " + latex_math_text(text)
        summary, cut_e = _capped(_no_negative_zero(c.get("summary", "")), CELL_CHARS["summary"])
        if cut_s or cut_a or cut_e:
            in_full.append(c)
            summary += " (in full below the table)"
        ref = c.get("paper_ref")
        claim_cell = f"\\texttt{{{_breakable_id(c['id'])}}}" + (f" \\newline {{\\footnotesize {latex_escape(ref)}}}"
                                                                if ref else "")
        lines.append(f"{claim_cell} & {statement} & \\textbf{{{latex_escape(c.get('verdict', ''))}}} & "
                     f"{latex_math_text(summary)} \\\\")
    lines += ["\\end{longtable}", "\\endgroup", ""]
    if in_full:  # paragraphs break across pages, as a table row cannot
        lines += ["\\begingroup", "\\small",
                  "\\noindent\\textbf{Claims in full} (the table's cells above are cut at a word).\\par\\smallskip", ""]
        for c in in_full:
            parts = [f"\\emph{{Statement:}} {latex_math_text(' '.join(str(c.get('statement', '')).split()))}"]
            if c.get("amended_statement"):
                parts.append(f"\\emph{{Amended:}} {latex_math_text(' '.join(c['amended_statement'].split()))}")
            summary = " ".join(_no_negative_zero(c.get("summary", "")).split())
            parts.append("\\emph{Evidence:} " + latex_math_text(summary))
            verdict = latex_escape(c.get("verdict", ""))
            lines += [f"\\noindent\\texttt{{{_breakable_id(c['id'])}}} (\\textbf{{{verdict}}}). " + " ".join(parts)
                      + "\\par\\smallskip", ""]
        lines += ["\\endgroup", ""]
    from dpo_rlhf_checks.result import VERDICT_MEANINGS

    shown = [v for v in VERDICT_MEANINGS if any(c.get("verdict") == v for c in report["claims"])]
    if shown:  # the key of the verdicts the table uses
        lines += ["\\noindent\\emph{Key:} " + "; ".join(f"\\textbf{{{latex_escape(v)}}}: "
                                                          f"{latex_escape(VERDICT_MEANINGS[v])}" for v in shown) + ".",
                  ""]
    included: set[str] = set()
    for c in report["claims"]:
        for k, rel in enumerate(_figure_paths(c, out_dir), 1):
            if rel in included:  # a figure two claims share (the LM stage's) is included once
                continue
            included.add(rel)
            title = c.get("title") or c["id"]
            lines += [
                "\\begin{figure}[htbp]",
                "\\centering",
                f"\\includegraphics[width=0.7\\linewidth]{{\\PaperChecksDir {rel}}}",
                f"\\caption{{Claim \\texttt{{{latex_escape(c['id'])}}}: {latex_escape(title)} "
                f"(verdict: {latex_escape(c.get('verdict', ''))}).}}",
                f"\\label{{fig:paper-checks:{_label(c['id'])}:{k}}}",
                "\\end{figure}",
                "",
            ]
    return "\n".join(lines)


def _no_negative_zero(text: str) -> str:
    from dpo_rlhf_checks.report import no_negative_zero

    return no_negative_zero(text)


def write_latex(report: dict[str, Any], out_dir) -> Path:
    """Write ``out_dir / "report.tex"`` (see the module docstring) and return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.tex"
    path.write_text(format_latex(report, out_dir), encoding="utf-8")
    return path
