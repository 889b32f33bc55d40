"""Hypothesis profiles: "ci" (default; fast and deterministic) and "thorough".

Select with HYPOTHESIS_PROFILE=thorough pytest. A test that needs fewer examples than the profile's (a CVXPY
solve per example) scales its count from the active profile, ``@settings(max_examples=n *
settings.default.max_examples // 60)``: n under "ci", about 33 n under "thorough"; never a fixed count the
thorough profile cannot reach.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, derandomize=True, database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
