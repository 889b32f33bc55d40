"""``report.tex``: escaping, table structure and figure snippets on a synthetic report; compiled when a
LaTeX engine is installed."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from pathlib import Path

from dpo_rlhf_checks.report_tex import REQUIRED_PACKAGES, format_latex, latex_escape, latex_math_text, write_latex
from figures.style import new_figure, save

NASTY = r"a_b 50% & #1 $x$ {y} ~z^2 \cmd β ≥ 0 → π* ⇔ δ ≤ m · ∞ “q” — end 🙂 <|>"


@pytest.mark.parametrize("raw,escaped", [
    ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}"),
    ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}"), ("\\", r"\textbackslash{}"),
    ("≥", r"$\geq$"), ("→", r"$\to$"), ("β", r"$\beta$"), ("≤", r"$\leq$"), ("é", "é"), ("🙂", "U+1F642"),
    ("<", r"\textless{}"), ("a\nb", "a b"), ("\\_", r"\textbackslash{}\_"),
])
def test_latex_escape_each_character(raw, escaped):
    assert latex_escape(raw) == escaped


def test_latex_escape_sentence():
    assert latex_escape(NASTY) == (
        r"a\_b 50\% \& \#1 \$x\$ \{y\} \textasciitilde{}z\textasciicircum{}2 \textbackslash{}cmd $\beta$ $\geq$ 0 "
        r"$\to$ $\pi$* $\Leftrightarrow$ $\delta$ $\leq$ m $\cdot$ $\infty$ ``q'' --- end U+1F642 "
        r"\textless{}\textbar{}\textgreater{}")


def test_ascii_math_is_typeset_as_math():
    assert latex_math_text("pi*(y) = pi_ref(y) exp(r(y)/beta); delta* = delta_ref + dr/beta") == (
        r"$\pi^{*}$(y) = $\pi_{\mathrm{ref}}$(y) exp(r(y)/$\beta$); $\delta^{*}$ = $\delta_{\mathrm{ref}}$ + dr/$\beta$")
    assert latex_math_text("pi(y_w) > pi(y_l) <=> l < l_crit, beta -> inf, m >= 0") == (
        r"$\pi$($y_{w}$) $>$ $\pi$($y_{l}$) $\Leftrightarrow$ l $<$ $l_{\mathrm{crit}}$, $\beta$ $\to$ inf, m $\geq$ 0")
    # words that merely contain a Greek name stay text; other specials are escaped
    assert latex_math_text("optimum alphabet a_w 5%") == r"optimum alphabet a\_w 5\%"


def test_figures_relative_to_the_tex_file_and_each_included_once(tmp_path):
    out = tmp_path / "deep" / "out"
    fig_dir = out / "figures"
    fig, ax = new_figure()
    ax.plot([0, 1], [0, 1])
    shared = save(fig, fig_dir, "lm_shared")
    claims = [{"id": f"lm-{k}", "statement": "s", "verdict": "holds", "summary": "", "figures": shared}
              for k in ("a", "b")]
    tex = format_latex({"claims": claims}, out)
    graphics = re.findall(r"\\includegraphics\[[^]]*\]\{\\PaperChecksDir (.*?)\}", tex)
    assert graphics == ["figures/lm_shared.pdf"]  # once, relative to report.tex
    assert str(tmp_path) not in tex
    tex_abs = format_latex({"claims": claims[:1]}, out.resolve())
    assert "figures/lm_shared.pdf" in tex_abs and str(tmp_path.resolve()) not in tex_abs


def test_no_negative_zero_in_the_table():
    tex = format_latex({"claims": [{"id": "x", "statement": "s", "verdict": "holds", "summary": "min -0.0e+00",
                                    "figures": []}]}, Path("."))
    assert "-0.0" not in tex and "min 0.0e+00" in tex


def unescaped_specials(tex: str) -> list[str]:
    """Special characters not produced by an escape or a command we emit."""
    # File paths (\includegraphics, \PaperChecksDir) are not text: '_' is legal there.
    tex = re.sub(r"\\includegraphics\[[^]]*\]\{[^}]*\}|\\providecommand\{\\PaperChecksDir\}\{[^}]*\}", "", tex)
    body = re.sub(r"\\[A-Za-z]+|\\[_%&#${}\\ ]", "", tex)  # drop commands and escaped characters
    body = re.sub(r"(?m)^%.*$", "", body)  # comment lines
    body = re.sub(r"\$[^$]*\$", "", body)  # inline math ($\beta$, $\pi_{\mathrm{ref}}$, $y_{w}$)
    return [ch for ch in "_%#$^~" if ch in body]


def balanced(tex: str) -> bool:
    depth = 0
    for ch in re.sub(r"\\[{}\\]", "", tex):
        depth += (ch == "{") - (ch == "}")
        if depth < 0:
            return False
    return depth == 0


@pytest.fixture
def report(tmp_path):
    fig_dir = tmp_path / "out" / "figures"
    fig, ax = new_figure()
    ax.plot([0, 1], [0, 1], label="x")
    a = save(fig, fig_dir, "claim_a_fig")  # PDF + PNG
    fig, ax = new_figure()
    ax.plot([0, 1], [1, 0])
    b = save(fig, fig_dir, "claim_b_map")
    return {
        "schema": 1, "toolkit_version": "0.1.0", "created": "2026-11-28T00:00:00+00:00",
        "claims": [
            {"id": "dpo-rlhf_equiv", "title": "Equivalence & 100% of pairs", "paper_ref": "Sec. 3; docs/theory.md §4",
             "statement": NASTY, "verdict": "holds-amended", "summary": "min over 1e3 draws: δ* ≥ 0 in 70% of pairs",
             "amended_statement": "Holds iff β δ_ref + dr > 0 for every pair", "figures": a},
            {"id": "undesirable", "title": "U", "paper_ref": "Def. 3.3", "statement": "plain", "verdict": "fails",
             "summary": "loss < log 2 yet pi(y_w) < pi(y_l)", "amended_statement": None, "figures": [b[1]]},
            {"id": "table", "title": "Table", "paper_ref": "Sec. 6", "statement": "s", "verdict": "not-checked",
             "summary": "needs 8B training", "amended_statement": None, "figures": []},
        ],
    }


def test_structure_and_escaping(report, tmp_path):
    out = tmp_path / "out"
    path = write_latex(report, out)
    assert path == out / "report.tex"
    tex = path.read_text(encoding="utf-8")
    assert "\\documentclass" not in tex and "\\begin{document}" not in tex
    assert tex.count("\\begin{longtable}") == 1 and tex.count("\\end{longtable}") == 1
    assert all(f"\\usepackage{{{p}}}" in tex for p in REQUIRED_PACKAGES)
    assert tex.index("\\toprule") < tex.index("\\endfirsthead") < tex.index("\\endhead") < tex.index("\\endfoot")
    rows = [line for line in tex.splitlines() if line.startswith("\\texttt{")]
    assert len(rows) == 3
    assert rows[0] == (r"\texttt{dpo-\allowbreak{}rlhf\_\allowbreak{}equiv} \newline "
                       r"{\footnotesize Sec. 3; docs/theory.md \S{}4} & "
                       + latex_math_text(NASTY)
                       + r" \newline \emph{Amended:} Holds iff $\beta$ $\delta$\_ref + dr $>$ 0"
                       r" for every pair"
                       r" & \textbf{holds-amended} & min over 1e3 draws: $\delta$* $\geq$ 0 in 70\% of pairs \\")
    assert all(row.count(" & ") == 3 and row.endswith("\\\\") for row in rows)
    assert unescaped_specials(tex) == [] and balanced(tex)
    # Figures: PDF only, relative to the report folder, one per figure, with escaped captions.
    graphics = re.findall(r"\\includegraphics\[width=0.7\\linewidth\]\{\\PaperChecksDir (.*?)\}", tex)
    assert graphics == ["figures/claim_a_fig.pdf", "figures/claim_b_map.pdf"]
    assert "\\providecommand{\\PaperChecksDir}{}" in tex and out.as_posix() not in tex  # relative to report.tex
    caption = "\\caption{Claim \\texttt{dpo-rlhf\\_equiv}: Equivalence \\& 100\\% of pairs (verdict: holds-amended).}"
    assert caption in tex
    assert "\\label{fig:paper-checks:dpo-rlhf-equiv:1}" in tex and tex.count("\\begin{figure}") == 2


def test_png_without_pdf_kept(tmp_path):
    png = tmp_path / "figures" / "only.png"
    png.parent.mkdir()
    png.write_bytes(b"\x89PNG")
    tex = format_latex({"claims": [{"id": "x", "statement": "s", "verdict": "holds", "summary": "",
                                    "figures": [str(png)]}]}, tmp_path)
    assert "{\\PaperChecksDir figures/only.png}" in tex


ENGINES = ("pdflatex", "lualatex", "xelatex", "tectonic")


def test_compiles_with_a_latex_engine(report, tmp_path):
    engine = next((e for e in ENGINES if shutil.which(e)), None)
    if engine is None:
        pytest.skip(f"no LaTeX engine on PATH (looked for {', '.join(ENGINES)}); on Debian `apt-get install "
                    "--no-install-recommends texlive-latex-recommended` provides pdflatex and booktabs")
    out = tmp_path / "out"
    write_latex(report, out)
    wrapper = out / "appendix.tex"
    wrapper.write_text(
        "\\documentclass{article}\n\\usepackage[T1]{fontenc}\n"
        + "".join(f"\\usepackage{{{p}}}\n" for p in REQUIRED_PACKAGES)
        + "\\newcommand{\\PaperChecksDir}{}\n\\begin{document}\n\\appendix\n\\section{Checked claims}\n"
        "\\input{report.tex}\n\\end{document}\n")
    cmd = [engine, wrapper.name] if engine == "tectonic" else [engine, "-interaction=nonstopmode", "-halt-on-error",
                                                               wrapper.name]
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (out / "appendix.pdf").stat().st_size > 5000


# ---------------------------------------------------------------------------------------------------------------
# Issue 17 item 15: a long row must not run off the page (a longtable row cannot break across pages)

LONG_STATEMENT = ("For every reference pi_ref and reward r with beta delta_ref + dr > 0, the DPO optimum ranks y_w "
                  "first; ") * 22


def long_report():
    return {"toolkit_version": "0.1.0", "created": "now", "claims": [
        {"id": f"long-claim_{i}", "paper_ref": "Sec. 3; docs/theory.md §4", "statement": LONG_STATEMENT[:2160],
         "verdict": "holds-amended", "summary": "min over 1e3 draws: delta* >= 0 in 70% of pairs; " * 30,
         "amended_statement": "Holds iff beta delta_ref + dr > 0 for every pair. " * 20, "figures": []}
        for i in range(3)] + [{"id": "short", "statement": "s", "verdict": "holds", "summary": "fine", "figures": []}]}


def test_long_cells_are_cut_and_given_in_full_after_the_table(tmp_path):
    from dpo_rlhf_checks.report_tex import CELL_CHARS

    tex = format_latex(long_report(), tmp_path)
    table = tex[tex.index("\\begin{longtable}"):tex.index("\\end{longtable}")]
    rows = [line for line in table.splitlines() if line.startswith("\\texttt{")]
    assert len(rows) == 4 and all(len(row) < 3 * sum(CELL_CHARS.values()) for row in rows), [len(r) for r in rows]
    assert rows[0].count("\\ldots{}") == 3 and "(in full below the table)" in rows[0] and "ldots" not in rows[3]
    after = tex[tex.index("\\end{longtable}"):]
    assert "\\textbf{Claims in full}" in after and after.count("\\emph{Statement:}") == 3  # not the short claim
    assert latex_math_text(" ".join(LONG_STATEMENT[:2160].split())) in after
    assert unescaped_specials(tex) == [] and balanced(tex)


def test_long_rows_compile_within_the_page(tmp_path):
    """Compiled with pdflatex (.ci/run installs texlive-latex-recommended): no row taller than the page (LaTeX says
    'Overfull \\vbox ... while \\output is active'), and, where pdftoppm is installed, no ink below the text area
    of any page (the page style is empty, so the bottom margin must be blank)."""
    engine = next((e for e in ("pdflatex", "lualatex", "xelatex") if shutil.which(e)), None)
    if engine is None:
        pytest.skip("no LaTeX engine on PATH; on Debian `apt-get install --no-install-recommends "
                    "texlive-latex-recommended` provides pdflatex")
    out = tmp_path / "out"
    write_latex(long_report(), out)
    (out / "appendix.tex").write_text(
        "\\documentclass{article}\n\\usepackage[T1]{fontenc}\n"
        + "".join(f"\\usepackage{{{p}}}\n" for p in REQUIRED_PACKAGES)
        + "\\pagestyle{empty}\n\\begin{document}\n\\input{report.tex}\n\\end{document}\n")
    proc = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", "appendix.tex"], cwd=out,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    log = (out / "appendix.log").read_text(errors="replace")
    assert "Overfull \\vbox" not in log, re.findall(r"Overfull \\vbox.*", log)
    if shutil.which("pdftoppm") is None:
        return  # the log check above stands alone
    import numpy as np
    from PIL import Image

    subprocess.run(["pdftoppm", "-r", "20", "-gray", "appendix.pdf", "page"], cwd=out, check=True, timeout=120)
    pages = sorted(out.glob("page-*.pgm"))
    assert len(pages) >= 2  # the full texts follow the table
    for page in pages:
        ink = np.flatnonzero((np.asarray(Image.open(page)) < 128).any(axis=1))
        height = Image.open(page).size[1]
        # letter paper, article class: the text area ends near 0.85 of the height; the old rows reached 0.99
        assert ink.max() / height < 0.9, (page.name, ink.max() / height)
