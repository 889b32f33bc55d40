"""Hypothesis profiles: "ci" (default; fast and deterministic) and "thorough".

Select with HYPOTHESIS_PROFILE=thorough pytest. A test that needs fewer examples than the profile's (a CVXPY
solve per example) scales its count from the active profile, ``@settings(max_examples=n *
settings.default.max_examples // 60)``: n under "ci", about 33 n under "thorough"; never a fixed count the
thorough profile cannot reach.
"""

import os
import signal

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
