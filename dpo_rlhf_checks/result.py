"""What a method returns, the context it runs in, and the one rule that merges methods into a verdict.

A claim's verdict is always computed from the evidence its methods gathered: each method
returns a :class:`MethodResult` with the booleans it measured, and :func:`merge_methods` (called
by the runner, :mod:`dpo_rlhf_checks.report`, and nowhere else) turns them into the verdict.
No method writes a verdict string, and no method merges another method's result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

VERDICTS = ("holds", "holds-amended", "fails", "not-checked", "inconclusive")
INCONCLUSIVE = VERDICTS[4]
ERROR_VERDICT = "error"  # a method crashed: the claim has no verdict (the run exits 1)
# What each verdict means, one line each: the README's table, report.md's and report.tex's key print these.
VERDICT_MEANINGS = {
    "holds": "the claim as stated passed every method's test",
    "holds-amended": "the literal statement fails (a counterexample is given) and the amended statement, given too, "
                     "passed every method",
    "fails": "the literal statement fails, with a counterexample, and no amendment passed every method",
    "not-checked": "not checked here, with the reason",
    "inconclusive": "some method could not decide: an interval across seeds still straddled its pre-registered margin "
                    "when the seed budget was spent (the run still exits 0)",
    ERROR_VERDICT: "a method crashed (its traceback is in report.json and report.md); the command exits 1",
}
METHODS = ("symbolic", "numeric", "convex", "simulation", "training")


@dataclass(frozen=True)
class CheckContext:
    """Settings shared by every check of one run.

    seed: seed of every random draw a check makes (numpy, torch, Hypothesis-free sampling).
    quick: a fast pass (fewer grid points, shorter training); verdicts keep their meaning.
    out_dir: where the report goes; figures go to ``out_dir / "figures"``.
    lm_config: the language-model configuration: "default" (CPU, about a minute),
        "large" (meant for a GPU), or a path to a JSON config file.
    device: "auto", "cpu" or "cuda" for the language-model stage.
    """

    seed: int = 0
    quick: bool = False
    out_dir: Path = Path("results")
    lm_config: str = "default"
    device: str = "auto"

    @property
    def fig_dir(self) -> Path:
        path = Path(self.out_dir) / "figures"
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class CheckResult:
    """Legacy (schema 1) outcome of a whole claim's check; the runner no longer accepts it.

    Kept only so that code written against it (the LM stage's ``check_lm_*``) still imports; a method
    function returns a :class:`MethodResult` instead.

    verdict: one of VERDICTS, computed by :func:`decide` or :func:`not_checked`.
    methods: the subset of METHODS the check used.
    summary: one line of evidence for the printed table.
    evidence: the key numbers (JSON-serialisable after :func:`to_jsonable`).
    counterexample: concrete numbers where the literal statement fails, else None.
    amended_statement: the statement that does hold when the verdict is "holds-amended".
    figures: paths of figures the check wrote.
    """

    verdict: str
    methods: list[str]
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    counterexample: dict[str, Any] | None = None
    amended_statement: str | None = None
    figures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; valid: {METHODS}")
        if self.verdict == "holds-amended" and not self.amended_statement:
            raise ValueError("a 'holds-amended' verdict needs the amended statement")
        if self.verdict in ("holds-amended", "fails") and self.counterexample is None:
            raise ValueError(f"a {self.verdict!r} verdict needs a counterexample to the literal statement")


@dataclass
class MethodResult:
    """What one method of a claim measured (issue 9's engine merges these; no method merges others).

    A claim lists its methods by name in the registry (``Claim.methods``: name -> "module:function");
    each function takes the :class:`CheckContext` and returns one of these. It never calls another
    method of the same claim.

    literal: the claim as literally stated passed this method's test (computed, never typed in); None only
        when ``inconclusive`` is set and the data could not decide it.
    amended: the amended statement passed this method's test; None when this method does not test
        an amendment (the runner then reads it as "no evidence for the amendment from this method"), or, with
        ``inconclusive`` set, when the data could not decide it.
    inconclusive: None when the method decided; else the reason it could not (e.g. "interval [0.02, 0.19] of
        obs - pred straddles the margin 0.10 after 9 seeds, the budget"). A method with a reason makes the claim
        ``inconclusive`` (:func:`merge_methods`), whatever its literal and amended say.
    summary: one line: the few numbers that decide this method's booleans.
    evidence: the key numbers, JSON-serialisable after :func:`to_jsonable`.
    depends_on: the toolkit formulas this method takes as given, as "module.function" names
        (e.g. ``"dpo_rlhf_checks.losses.dpo_loss"``, ``"toy_bandits.rlhf.gibbs_policy"``), or a module or class
        name that covers all of its functions. It is a declaration: the runner measures what the method executes
        (:mod:`dpo_rlhf_checks.tracing`), computes independence from the measurement, and a test fails when a
        measured formula is not covered by this list.
    counterexample: concrete numbers where ``literal`` is False, else None.
    amended_statement: the statement this method found to hold (only what was measured), or None.
    figures: paths of figures this method wrote.
    """

    literal: bool | None
    amended: bool | None
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    counterexample: dict[str, Any] | None = None
    amended_statement: str | None = None
    figures: list[str] = field(default_factory=list)
    inconclusive: str | None = None

    def __post_init__(self) -> None:
        # a numpy comparison that ends an `and` chain is a numpy.bool_, typically only on the path where a check
        # fails: it is a bool, so it is taken as one (refusing it turned a failed check into a crash); anything
        # else (an array, a number, a string) is refused
        for name in ("literal", "amended"):
            if isinstance(getattr(self, name), np.bool_):
                setattr(self, name, bool(getattr(self, name)))
        if not (self.literal is None or isinstance(self.literal, bool)) or not (
                self.amended is None or isinstance(self.amended, bool)):
            raise TypeError("literal and amended must be bools or None")
        if self.inconclusive is not None and not (isinstance(self.inconclusive, str) and self.inconclusive.strip()):
            raise ValueError("inconclusive must be None or the reason the method could not decide (a non-empty string)")
        if self.literal is None and self.inconclusive is None:
            raise ValueError("literal may be None (undecided) only in an inconclusive method: give the reason")
        if self.literal is False and self.counterexample is None:
            raise ValueError("a method whose literal test fails must give a counterexample")
        self.depends_on = tuple(self.depends_on)


def decide(literal_holds: bool, amended_holds: bool | None = None) -> str:
    """The verdict from what a check measured.

    literal_holds: the claim as literally stated passed every test.
    amended_holds: the amended statement passed (None when there is no amendment).
    """
    if bool(literal_holds):
        return VERDICTS[0]
    if amended_holds:
        return VERDICTS[1]
    return VERDICTS[2]


def not_checked(reason: str, **evidence: Any) -> CheckResult:
    """A claim this toolkit does not (or cannot) check, with the reason (legacy; the registry's
    ``Claim(not_checked=reason)`` is how a claim is marked not checked now)."""
    return CheckResult(verdict=VERDICTS[3], methods=[], summary=reason, evidence={"reason": reason, **evidence})


def method_amended_holds(literal: bool, amended: bool | None) -> bool:
    """Whether one method supports the amended statement: its amended test passed, or (amended None) its
    literal test passed (a method that confirms the literal statement confirms every weaker one)."""
    return bool(amended) if amended is not None else bool(literal)


def _all3(values: list[bool | None]) -> bool | None:
    """Three-valued "all": False if any is False, else None if any is undecided, else True."""
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def merge_methods(results: dict[str, MethodResult]) -> dict[str, Any]:
    """THE merge rule (written once; the runner calls it): methods -> the claim's verdict.

    Any method with ``inconclusive`` set makes the claim ``inconclusive`` (a crash, which the runner handles
    before merging, still makes it ``error``). Otherwise: literal holds iff every method's literal test holds;
    the amended statement holds iff every method supports it (:func:`method_amended_holds`); verdict =
    :func:`decide` of the two. An empty dict is an error (a claim with methods must run all of them; the
    runner never merges a smaller list).
    Returns {"verdict", "literal", "amended", "counterexample", "amended_statement", "inconclusive"}: literal and
    amended are three-valued when inconclusive (False if a method decided False, None if undecided); the
    counterexample is each method's counterexample under its name (every verdict but holds); the amended
    statement is the distinct amended statements of the methods (holds-amended only); inconclusive is
    {method: reason} or None.
    """
    if not results:
        raise ValueError("merge_methods needs at least one method result")
    undecided = {name: r.inconclusive for name, r in results.items() if r.inconclusive is not None}
    if undecided:
        literal = _all3([r.literal for r in results.values()])
        amended = _all3([None if r.inconclusive is not None and r.amended is None and r.literal is not True
                         else method_amended_holds(bool(r.literal), r.amended) for r in results.values()])
        counterexample = {name: r.counterexample for name, r in results.items() if r.counterexample is not None}
        return {"verdict": INCONCLUSIVE, "literal": literal, "amended": amended, "counterexample": counterexample or None,
                "amended_statement": None, "inconclusive": undecided}
    literal = all(r.literal for r in results.values())
    amended = all(method_amended_holds(r.literal, r.amended) for r in results.values())
    verdict = decide(literal, amended)
    counterexample = None
    statement = None
    if verdict != VERDICTS[0]:
        counterexample = {name: r.counterexample for name, r in results.items() if r.counterexample is not None}
    if verdict == VERDICTS[1]:
        texts: list[str] = []
        for r in results.values():
            if r.amended_statement and r.amended_statement not in texts:
                texts.append(r.amended_statement)
        if not texts:
            raise ValueError("the methods support an amended statement but none of them states it")
        statement = " ".join(texts)
    return {"verdict": verdict, "literal": literal, "amended": amended, "counterexample": counterexample,
            "amended_statement": statement, "inconclusive": None}


def independent_methods(depends_on: dict[str, tuple[str, ...]]) -> list[str]:
    """The largest set of methods whose ``depends_on`` sets are pairwise disjoint (first such set in
    declaration order). Two methods that take one toolkit formula as given are not independent: a wrong
    formula would fool both. A method that takes nothing from the toolkit as given is independent of all.

    The runner passes the *measured* formula sets (:func:`dpo_rlhf_checks.tracing.formulas` of what each method
    was measured to execute), never the declared ones."""
    names = list(depends_on)
    best: list[str] = []
    for mask in range(1, 1 << len(names)):
        chosen = [n for i, n in enumerate(names) if mask >> i & 1]
        if len(chosen) <= len(best):
            continue
        seen: set[str] = set()
        ok = True
        for n in chosen:
            deps = set(depends_on[n])
            if deps & seen:
                ok = False
                break
            seen |= deps
        if ok:
            best = chosen
    return best


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/sympy/torch scalars and arrays, Paths and tuples into plain JSON values.

    Non-finite floats become the strings "inf", "-inf", "nan" (JSON has no such numbers); -0.0 becomes 0.0
    (a reader should not see a negative zero in a report).
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return str(obj)
        return obj + 0.0  # -0.0 + 0.0 == +0.0
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return to_jsonable(obj.tolist())
    if hasattr(obj, "is_Number") and obj.is_Number:  # sympy numbers
        return to_jsonable(float(obj))
    if hasattr(obj, "__index__"):
        return int(obj)
    if hasattr(obj, "__float__"):
        return to_jsonable(float(obj))
    return str(obj)
