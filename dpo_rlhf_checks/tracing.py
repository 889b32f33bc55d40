"""Measured dependencies: which toolkit functions a method actually executed.

A method's ``depends_on`` used to be declared by hand, and some declarations were wrong (a method that
read the LM loss did not name it). :func:`measure_calls` runs a function under a call profiler
(``sys.settrace`` and ``threading.settrace``) and returns every toolkit function it entered, as
``"module.qualname"``. A function behind ``functools.lru_cache``/``cache`` counts when the cached wrapper
is called, even when the call is answered from the cache (the cache would otherwise hide a formula that
an earlier method computed).

Only the toolkit's own packages (:data:`TOOLKIT_PACKAGES`) are recorded; numpy, torch, sympy, ... are not.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, Callable

TOOLKIT_PACKAGES = ("dpo_rlhf_checks", "theory", "toy_bandits", "toy_lm", "figures")
_ROOT = Path(__file__).resolve().parent.parent
_PACKAGE_DIRS = tuple(str(_ROOT / p) + "/" for p in TOOLKIT_PACKAGES)


def _code_name(code, cache: dict) -> str | None:
    """``module.qualname`` of a code object in a toolkit package, else None (memoised per code object)."""
    try:
        return cache[code]
    except KeyError:
        pass
    name = None
    filename = code.co_filename
    if filename.startswith(_PACKAGE_DIRS):
        rel = Path(filename).resolve().relative_to(_ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        qualname = getattr(code, "co_qualname", code.co_name)  # co_qualname: Python 3.11+
        if qualname != "<module>":
            name = ".".join(parts) + "." + qualname
    cache[code] = name
    return name


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


def measure_calls(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, frozenset[str]]:
    """Run ``fn(*args, **kwargs)`` and return (its result, the toolkit functions it entered).

    A global trace function (``sys.settrace``, which sees Python calls only, so torch's and numpy's C calls
    cost nothing) records each toolkit code object entered; it returns None, so no line is traced. A
    function behind ``functools.lru_cache`` counts when its cache was consulted (hit or miss), read from
    ``cache_info()`` before and after. The tracer is removed again whether ``fn`` returns or raises (an
    exception propagates unchanged). Names are ``"package.module.qualname"`` (e.g.
    ``"dpo_rlhf_checks.losses.dpo_loss"``); nested functions and lambdas appear with their ``<locals>``
    qualname.
    """
    codes: set = set()

    def trace(frame, event, arg):
        codes.add(frame.f_code)
        return None

    wrappers = _cached_functions()
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
    cache: dict = {}
    seen = {name for name in (_code_name(code, cache) for code in codes) if name is not None}
    after = _cache_calls(wrappers)
    seen |= {name for name, count in after.items() if count != before[name]}
    return result, frozenset(seen)
