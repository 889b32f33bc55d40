"""Hypothesis profiles: "ci" (default; fast and deterministic) and "thorough".

Select with HYPOTHESIS_PROFILE=thorough pytest. A test that needs fewer examples than the profile's (a CVXPY
solve per example) scales its count from the active profile, ``@settings(max_examples=n *
settings.default.max_examples // 60)``: n under "ci", about 33 n under "thorough"; never a fixed count the
thorough profile cannot reach.
"""

import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, derandomize=True, database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    """Started from a shell without job control (``nohup pytest &``, a background CI step), Python inherits SIGINT
    ignored, and so does every process a test starts: the interrupt tests (an in-process SIGINT, a SIGINT sent to a
    child) would then fail for a reason that is not the toolkit's. Restore Python's own handler for the session (a
    child started by exec then gets the default action, as from a terminal)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_APPROX = pytest.approx
TINY_EXPECTED = 1e-11


def _has_tiny(expected) -> bool:
    values = list(expected.values()) if isinstance(expected, dict) else expected
    try:
        a = np.abs(np.asarray(values, dtype=float))
    except (TypeError, ValueError):
        return False
    a = a[np.isfinite(a)]
    return bool(np.any((a > 0) & (a < TINY_EXPECTED)))


def approx_guarded(expected, rel=None, abs=None, nan_ok=False):  # noqa: A002 (pytest's own keyword)
    """pytest.approx, refusing a nonzero expected value below 1e-11 without an explicit ``abs=``: there pytest's
    default absolute tolerance (1e-12, also when ``rel=`` is given) decides, and the comparison can hardly fail.
    A scan of the suite found eight such comparisons (one a wrong expected value, 1.2e-14 for 1.7e-14, that passed);
    each now says ``abs=0`` (or its absolute tolerance)."""
    if abs is None and _has_tiny(expected):
        raise ValueError(f"pytest.approx({expected!r}): a nonzero expected value below {TINY_EXPECTED:g} needs an "
                         "explicit abs= (the default absolute tolerance 1e-12 would decide the comparison)")
    return _APPROX(expected, rel=rel, abs=abs, nan_ok=nan_ok)


pytest.approx = approx_guarded


def docs_finding(doc: str, where: str, pattern: str, flags: int = 0) -> re.Match:
    """The match of ``pattern`` in ``doc`` (a path under the repository), whose part ``where`` states the numbers a
    test reads (the docs-number tests: a changed documented number or a changed computed one fails them)."""
    found = re.search(pattern, (Path(__file__).resolve().parents[1] / doc).read_text(encoding="utf-8"), flags)
    assert found, f"{doc} {where} no longer states the numbers this test reads"
    return found
