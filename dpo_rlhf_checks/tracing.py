"""Measured dependencies: which toolkit functions a method actually executed, and which of them are formulas.

A method's ``depends_on`` used to be declared by hand, and some declarations were wrong (a method that
read the LM loss did not name it). :func:`measure_calls` runs a function under a call profiler
(``sys.settrace`` and ``threading.settrace``) and returns every toolkit function it entered, as
``"module.qualname"``. :func:`formulas` reduces such a set to the formulas the method takes as given: each
name is folded into the module-level function or method that defines it (a comprehension, lambda or closure
is part of the function that encloses it), the method's own function is dropped, and so is every name in
:data:`SHARED_PRIMITIVES`, the short list of helpers that compute no quantity a claim is about.

Memoised results. A result computed once and read again from a cache is still a dependency of the reader:

- a function behind ``functools.lru_cache``/``cache`` counts when its cache is consulted (hit or miss, read
  from ``cache_info()`` before and after), and so does everything the cached function entered when it was
  computed under this profiler (its *closure*, recorded on a miss);
- a function in :data:`MEMOISED` keeps results in a cache of its own (a dict); entering it counts its
  closure the same way. When the cached value was computed with other arguments the closure is the union over
  all traced computations: an over-approximation, never an omission;
- a cache that holds values computed outside the profiler (their closure unknown) is cleared before the
  method runs, so the method computes them again under the profiler.

Code run while a toolkit module is being imported (module bodies, class bodies, module-level calls) is not
attributed to the method that happened to import it first.

Only the toolkit's own packages (:data:`TOOLKIT_PACKAGES`) are recorded; numpy, torch, sympy, ... are not.
"""

from __future__ import annotations

import inspect
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

TOOLKIT_PACKAGES = ("dpo_rlhf_checks", "theory", "toy_bandits", "toy_lm", "figures")
_ROOT = Path(__file__).resolve().parent.parent
_PACKAGE_DIRS = tuple(str(_ROOT / p) + "/" for p in TOOLKIT_PACKAGES)

# Functions that memoise their results in a cache of their own (not functools.lru_cache): entering one counts
# everything it entered when it computed a value under the profiler (see the module docstring).
# Each maps to its cache (a dict, as "module.attribute"), which is cleared when it holds values computed outside the
# profiler (their closure unknown), so that what a method reads is always measured.
MEMOISED = {
    "toy_lm.stage.get_stage": "toy_lm.stage._CACHE",  # the LM stage (training and tabular prediction), once per run
    "toy_lm.claims._shared_figures": "toy_lm.claims._FIGURES",  # the stage's figures and records, drawn once
    "toy_bandits.constrained.compiled_problem": "toy_bandits.constrained._COMPILED",  # the CVXPY program per shape
    "toy_lm.kernel_claim.seed_lin": "toy_lm.kernel_claim._LIN",  # J at each seed's reference, once per stage
    "toy_lm.kernel_claim.prediction": "toy_lm.kernel_claim._PRED",  # the linearised predictions per cell and seed
    "toy_lm.kernel_claim.evaluate_fraction": "toy_lm.kernel_claim._DECISIONS",  # decided comparisons per stage
}

# Shared primitives: toolkit functions that do not count as formulas. A function that computes a quantity a
# claim is about (a loss, a policy, an optimum, a probability, a test statistic) is a formula and is not here.
# Exact names (after folding nested functions into their enclosing function); each with its reason.
SHARED_PRIMITIVES: dict[str, str] = {
    # result plumbing
    "dpo_rlhf_checks.result.MethodResult.__post_init__": "validates the result's types; computes nothing",
    "dpo_rlhf_checks.result.CheckContext.fig_dir": "creates the figure folder",
    "theory.common.holds_only": "packs named booleans the method computed into a MethodResult",
    "theory.common.proofs": "selects the named booleans of a derivation's dict",
    "dpo_rlhf_checks.registry.get_claim": "looks up a claim's registry text (its amendment, fixed before the run)",
    # seeds and sizes
    "theory.common.rng_for": "a numpy generator from (seed, salt)",
    "theory.common.n_for": "picks the quick or the full sample size",
    "theory.common.wmax": "max that keeps NaN (running worst error); compares, computes no quantity",
    # comparison of two values the method computed (the decision procedure, not a formula under test)
    "theory.symbols.is_identity": "decides whether an expression the method built simplifies to 0",
    "theory.symbols.is_identity_log": "is_identity after expanding logs",
    "theory.symbols.max_identity_error": "largest mpmath difference of two expressions the method built",
    "theory.symbols.rel_err": "relative error of two numbers",
    "theory.symbols.ref_precision": "sets mpmath's working precision for a block; computes nothing",
    "theory.common.cond_tol": "float64 tolerance from the conditioning bound",
    # test inputs: draw or list instances (random or fixed numbers); none plants an answer a method compares with
    "theory.common.pair_instances": "draws (beta, pi_ref pair, dr) test instances",
    "theory.common.random_policy_instances": "draws (beta, log pi_ref, r) test instances",
    "theory.common.sample_points": "copies the first instances into the evidence",
    "theory.symbols.random_betas": "draws test values of beta",
    "theory.symbols.extreme_betas": "the fixed list of extreme beta decades",
    "theory.symbols.extreme_probabilities": "the fixed list of probabilities near 0 and 1",
    "theory.symbols.random_reference_pairs": "draws (pi_ref(y_w), pi_ref(y_l)) test pairs",
    "toy_bandits.dataset.named_graphs": "the fixed list of label sets",
    "toy_bandits.dataset.random_labels": "draws random label triples",
    "toy_bandits.dataset_claims._graph_suite": "named_graphs plus random_labels draws",
    "toy_bandits.dataset_claims._list_instance": "draws a (log pi_ref, reward, ranking, beta) test instance",
    "toy_bandits.dataset_claims._cpo_grid": "the (beta delta_ref, dr) grid",
    "toy_bandits.solver_claims._random_instances": "draws single-pair test instances",
    "toy_bandits.solver_claims._random_batch": "draws a batch of single-pair test instances",
    "toy_bandits.map_claims._reference_grid": "the grid of reference log-probabilities",
    "toy_bandits.map_claims._easy_grid": "the grid of per-token mean log-probabilities",
    "toy_bandits.map_claims._figures": "calls a figure function by name",
    "dpo_rlhf_checks.atlas_rows.Setting.key": "formats an atlas row's name from its settings",
    # input validation and array conversion (raise on bad input, else return the input unchanged)
    "dpo_rlhf_checks.losses._check_logps": "input validation",
    "dpo_rlhf_checks.losses._check_positive": "input validation",
    "dpo_rlhf_checks.losses._check_tensors": "input validation",
    "dpo_rlhf_checks.losses._check_finite_number": "input validation",
    "dpo_rlhf_checks.losses._is_real": "tests that a parameter is a real number",
    "dpo_rlhf_checks.losses._validate_params": "input validation of a loss's parameters",
    "toy_bandits.dynamics._validate": "input validation",
    "toy_bandits.dataset._is_int": "tests that a value is an integer",
    "toy_bandits.finite_labels._check": "input validation",
    "toy_bandits.finite_labels._check_n": "input validation",
    "toy_bandits.listwise._check_ranking": "input validation",
    "toy_bandits.rlhf._arrays": "converts inputs to float arrays and validates them",
    "toy_bandits.rlhf._beta_column": "validates beta and broadcasts it to a column",
    "toy_bandits.length_norm._lengths": "converts lengths to float arrays and validates them",
}

# Whole packages that do not count: figures draw what a method computed; no verdict reads a figure.
SHARED_PACKAGES: dict[str, str] = {
    "figures": "draws a figure of numbers the method computed; no verdict reads a figure",
}

_CLOSURES: dict[str, set[str]] = {}  # cached/memoised function -> every toolkit function it entered, ever
_MODULE_BODY = object()  # marks a toolkit module body (an import in progress)


def _code_name(code, cache: dict) -> str | None:
    """``module.qualname`` of a function's code object in a toolkit package, else None (memoised per code object).

    Module and class bodies (no ``CO_NEWLOCALS``) are not functions and give None.
    """
    try:
        return cache[code]
    except KeyError:
        pass
    name = None
    filename = code.co_filename
    if filename.startswith(_PACKAGE_DIRS) and code.co_flags & inspect.CO_NEWLOCALS:
        rel = Path(filename).resolve().relative_to(_ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        qualname = getattr(code, "co_qualname", code.co_name)  # co_qualname: Python 3.11+
        name = ".".join(parts) + "." + qualname
    cache[code] = name
    return name


def _is_toolkit_module_body(code) -> bool:
    return code.co_name == "<module>" and code.co_filename.startswith(_PACKAGE_DIRS)


def _cached_functions() -> dict[str, Any]:
    """Every ``functools.lru_cache``/``cache`` wrapper defined at module level in a loaded toolkit module."""
    found = {}
    for mod_name, module in list(sys.modules.items()):
        if module is None or mod_name.split(".", 1)[0] not in TOOLKIT_PACKAGES:
            continue
        for value in list(vars(module).values()):
            inner = getattr(value, "__wrapped__", None)
            code = getattr(inner, "__code__", None)
            if code is not None and hasattr(value, "cache_info"):
                name = _code_name(code, {})
                if name is not None:
                    found[name] = value
    return found


def _cache_calls(wrappers: dict[str, Any]) -> dict[str, int]:
    counts = {}
    for name, wrapper in wrappers.items():
        info = wrapper.cache_info()
        counts[name] = info.hits + info.misses
    return counts


def _clear_unmeasured_caches(wrappers: dict[str, Any]) -> None:
    """Clear every cache whose values were computed outside the profiler (no recorded closure)."""
    for name, wrapper in wrappers.items():
        if name not in _CLOSURES and wrapper.cache_info().currsize:
            wrapper.cache_clear()
    for name, cache_path in MEMOISED.items():
        module_name, _, attr = cache_path.rpartition(".")
        module = sys.modules.get(module_name)
        cache = getattr(module, attr, None) if module is not None else None
        if cache and name not in _CLOSURES:
            cache.clear()


def record_closure(name: str, entered: Iterable[str]) -> None:
    """Record that the value held in the cache of ``name`` (a :data:`MEMOISED` function) was computed under the
    profiler, by code that entered ``entered`` (the set :func:`measure_calls` returned), though not through ``name``
    itself: a method that reads it counts that closure, and the cache is no longer cleared before a method runs.
    ``lm-map`` hands its stage to the slow claims this way (toy_lm/lm_map.py); before, the stage it put in
    ``toy_lm.stage._CACHE`` had no closure, so the cache was cleared and the claims trained a second stage."""
    if name not in MEMOISED:
        raise ValueError(f"{name!r} is not a memoised function; the valid ones: {sorted(MEMOISED)}")
    _CLOSURES.setdefault(name, set()).update(entered)


def measure_calls(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, frozenset[str]]:
    """Run ``fn(*args, **kwargs)`` and return (its result, the toolkit functions it entered).

    A global trace function (``sys.settrace``, which sees Python calls only, so torch's and numpy's C calls
    cost nothing) records each toolkit code object entered; it returns None for every frame except the few it
    must see return (a toolkit module body being imported, a cached or :data:`MEMOISED` function being
    computed), and those trace no lines. A function behind ``functools.lru_cache`` counts when its cache was
    consulted (hit or miss), read from ``cache_info()`` before and after, together with its recorded closure;
    so does a :data:`MEMOISED` function. The tracer is removed again whether ``fn`` returns or raises (an
    exception propagates unchanged). Names are ``"package.module.qualname"`` (e.g.
    ``"dpo_rlhf_checks.losses.dpo_loss"``); nested functions and lambdas appear with their ``<locals>``
    qualname. Not re-entrant: a nested call replaces the outer tracer for its duration.
    """
    wrappers = _cached_functions()
    tracked = set(wrappers) | set(MEMOISED)  # functions whose closure is recorded
    _clear_unmeasured_caches(wrappers)
    kinds: dict = {}  # code -> its name, _MODULE_BODY, or None (not a toolkit function: ignored)
    seen: set[str] = set()
    state = threading.local()  # per thread: [import depth], [open tracked functions]

    def trace(frame, event, arg):
        code = frame.f_code
        try:
            kind = kinds[code]
        except KeyError:
            kind = kinds[code] = _MODULE_BODY if _is_toolkit_module_body(code) else _code_name(code, {})
        if kind is None:
            return None
        try:
            importing, open_ = state.importing, state.open
        except AttributeError:
            importing, open_ = state.importing, state.open = [0], []
        if kind is _MODULE_BODY:
            importing[0] += 1
            frame.f_trace_lines = False

            def on_module_return(frame, event, arg):
                if event == "return":
                    importing[0] -= 1
                return on_module_return
            return on_module_return
        if importing[0]:
            return None
        seen.add(kind)
        for parent in open_:
            _CLOSURES.setdefault(parent, set()).add(kind)
        if kind in tracked:
            _CLOSURES.setdefault(kind, set())  # computed under the profiler: its closure is known from now on
            open_.append(kind)
            frame.f_trace_lines = False

            def on_tracked_return(frame, event, arg):
                if event == "return":
                    open_.pop()
                return on_tracked_return
            return on_tracked_return
        return None

    before = _cache_calls(wrappers)
    old_trace = sys.gettrace()
    old_thread_trace = threading.gettrace() if hasattr(threading, "gettrace") else None
    sys.settrace(trace)
    threading.settrace(trace)
    try:
        result = fn(*args, **kwargs)
    finally:
        sys.settrace(old_trace)
        threading.settrace(old_thread_trace)
    after = _cache_calls(wrappers)
    seen |= {name for name, count in after.items() if count != before[name]}
    for name in list(seen):
        if name in tracked:
            seen |= _CLOSURES.get(name, set())
    return result, frozenset(seen)


def enclosing_function(name: str) -> str:
    """The module-level function or method that defines ``name`` (a comprehension, lambda or nested function
    is part of the function around it): ``"m.f.<locals>.g.<locals>.<listcomp>"`` -> ``"m.f"``."""
    return name.split(".<locals>.", 1)[0]


def is_shared_primitive(name: str) -> bool:
    """Whether ``name`` (a folded ``module.qualname``) is a shared primitive that does not count as a formula."""
    return name in SHARED_PRIMITIVES or name.split(".", 1)[0] in SHARED_PACKAGES


def formulas(measured: Iterable[str], method: str | None = None) -> frozenset[str]:
    """The formulas in a measured set: every name folded into its enclosing function
    (:func:`enclosing_function`), minus the method's own function ``method`` (``"module:function"`` or
    ``"module.function"``) and minus the shared primitives (:data:`SHARED_PRIMITIVES`, :data:`SHARED_PACKAGES`).
    """
    own = method.replace(":", ".") if method else None
    out = set()
    for name in measured:
        name = enclosing_function(name)
        if name == own or is_shared_primitive(name):
            continue
        out.add(name)
    return frozenset(out)


def covers(declared: Iterable[str], formula: str) -> bool:
    """Whether a declared ``depends_on`` list names ``formula``: the name itself, or a module or class that
    contains it (``"toy_bandits.finite_labels"`` covers ``"toy_bandits.finite_labels.p_wrong"``)."""
    return any(formula == d or formula.startswith(d + ".") for d in declared)


def module_of(name: str) -> str:
    """The module part of a ``"module.qualname"`` name: its longest prefix that is a toolkit source file
    (``"toy_bandits.constrained.ConstrainedRLHF.solve"`` -> ``"toy_bandits.constrained"``)."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        path = _ROOT.joinpath(*parts[:cut])
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return ".".join(parts[:cut])
    return ".".join(parts[:-1])
