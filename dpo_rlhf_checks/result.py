"""What a check returns, and the context it runs in.

A verdict is always computed from the evidence a check gathered: checks call
:func:`decide` with the booleans they measured, never write a verdict string themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERDICTS = ("holds", "holds-amended", "fails", "not-checked")
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
    """The outcome of one claim's check.

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

    literal: the claim as literally stated passed this method's test (computed, never typed in).
    amended: the amended statement passed this method's test; None when this method does not test
        an amendment (the runner then reads it as "no evidence for the amendment from this method").
    summary: one line: the few numbers that decide this method's booleans.
    evidence: the key numbers, JSON-serialisable after :func:`to_jsonable`.
    depends_on: the toolkit formulas this method takes as given, as "module.function" names
        (e.g. ``"dpo_rlhf_checks.losses.dpo_loss"``, ``"toy_bandits.rlhf.gibbs_policy"``). Two methods
        of a claim that share a formula under test are not independent.
    counterexample: concrete numbers where ``literal`` is False, else None.
    amended_statement: the statement this method found to hold (only what was measured), or None.
    figures: paths of figures this method wrote.
    """

    literal: bool
    amended: bool | None
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    counterexample: dict[str, Any] | None = None
    amended_statement: str | None = None
    figures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.literal, bool) or not (self.amended is None or isinstance(self.amended, bool)):
            raise TypeError("literal must be a bool and amended a bool or None (cast numpy booleans with bool())")
        if not self.literal and self.counterexample is None:
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
    """A claim this toolkit does not (or cannot) check, with the reason."""
    return CheckResult(verdict=VERDICTS[3], methods=[], summary=reason, evidence={"reason": reason, **evidence})


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/sympy/torch scalars and arrays, Paths and tuples into plain JSON values.

    Non-finite floats become the strings "inf", "-inf", "nan" (JSON has no such numbers).
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
        return obj if math.isfinite(obj) else str(obj)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return to_jsonable(obj.tolist())
    if hasattr(obj, "is_Number") and obj.is_Number:  # sympy numbers
        return to_jsonable(float(obj))
    if hasattr(obj, "__index__"):
        return int(obj)
    if hasattr(obj, "__float__"):
        return to_jsonable(float(obj))
    return str(obj)
