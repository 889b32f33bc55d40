"""Documentation travels with the code: every cited section of docs/theory.md exists, nothing cites a file
outside the repository.

(a) No tracked file outside docs/ names the old brief that lived outside the repository (its name is
    spelled in pieces here so this file does not match itself).
(b) Every ``docs/theory.md §N`` (also ``§9a``, ``§4(a)``, ``§6-7``, ``§3, §6, §7`` and LaTeX's ``\\S{}N``)
    in a tracked file, and in the claim registry as loaded, is a heading of docs/theory.md.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from dpo_rlhf_checks.registry import CLAIMS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "theory.md"
OLD_BRIEF = "THEORY" + ".md"
OLD_SHORT = re.compile("THEORY" + r" §")  # "THEORY §7", the short form of the same dead reference
SECTION = r"(?:§|\\S\{\})"
CITATION = re.compile(r"docs/theory\.md((?:\s*(?:,|-|–|and)?\s*" + SECTION + r"?\s*\d+(?:\([a-z]\)|[a-z])?)+)")
NUMBER = re.compile(r"(\d+)(?:\(([a-z])\)|([a-z]))?")
HEADING = re.compile(r"^#{2,4}\s+(\d+)(?:\(([a-z])\)|([a-z]))?[.\s]", re.MULTILINE)


SKIP_DIRS = {".git", "__pycache__", "results", "build", "dist", "audit_figures", ".venv", "venv", ".hypothesis",
             ".pytest_cache"}  # git's own and .gitignore's folders


def tracked_files() -> list[Path]:
    """git's tracked files; outside a git checkout (a source archive, the mutation runner's copy), every file but
    the folders .gitignore names."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        files = [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in ROOT.rglob("*")
                 if not any(part in SKIP_DIRS or part.endswith(".egg-info")
                            for part in p.relative_to(ROOT).parts[:-1])]
    return [f for f in files if f.is_file() and f.suffix in (".py", ".md", ".tex", ".json", ".toml", ".txt", ".cfg",
                                                              ".yml", ".yaml", "")]


def headings() -> set[str]:
    found = set()
    for m in HEADING.finditer(DOC.read_text(encoding="utf-8")):
        found.add(m.group(1))
        if m.group(2) or m.group(3):
            found.add(m.group(1) + (m.group(2) or m.group(3)))
    return found


def cited_sections(text: str) -> list[str]:
    cited = []
    for m in CITATION.finditer(text):
        for num, sub_paren, sub in NUMBER.findall(m.group(1)):
            cited.append(num + (sub_paren or sub))
    return cited


def test_doc_has_the_sections_of_the_brief():
    have = headings()
    assert {str(n) for n in range(1, 16)} <= have, sorted(have)
    assert {"4a", "4b", "4c", "9a", "9b", "9c"} <= have


def test_citation_parser_reads_every_form():
    text = ("docs/theory.md §9a; docs/theory.md §4(a); (docs/theory.md §6-7); docs/theory.md §3, §6, §7, §10; "
            r"docs/theory.md \S{}12 and docs/theory.md notation")
    assert cited_sections(text) == ["9a", "4a", "6", "7", "3", "6", "7", "10", "12"]
    assert "99" not in headings()  # a wrong citation would be caught
    assert cited_sections("docs/theory.md §99") == ["99"]


def test_no_file_outside_docs_cites_the_old_brief():
    offenders = []
    for path in tracked_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("docs/") or rel == "tests/test_docs_citations.py":
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for i, line in enumerate(text.splitlines(), 1):
            if OLD_BRIEF in line or OLD_SHORT.search(line):
                offenders.append(f"{rel}:{i}: {line.strip()[:100]}")
    assert not offenders, f"{len(offenders)} references to a file outside the repository:\n" + "\n".join(offenders[:20])


def test_every_cited_section_exists():
    have = headings()
    missing = []
    for path in tracked_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel == "tests/test_docs_citations.py":
            continue
        for section in cited_sections(path.read_text(encoding="utf-8", errors="replace")):
            if section not in have:
                missing.append(f"{rel}: §{section}")
    for claim in CLAIMS:  # as loaded (the report prints these)
        for text in (claim.paper_ref, claim.statement, claim.title):
            missing += [f"registry {claim.id}: §{s}" for s in cited_sections(text) if s not in have]
    assert not missing, "cited sections without a heading in docs/theory.md:\n" + "\n".join(missing)


@pytest.mark.parametrize("claim", CLAIMS, ids=[c.id for c in CLAIMS])
def test_every_claim_is_in_the_doc(claim):
    assert f"`{claim.id}`" in DOC.read_text(encoding="utf-8"), claim.id
