"""Joule Ledger's tests. ``HYPOTHESIS_PROFILE=ci`` selects the CI settings of the property and fuzz tests: no
per-example deadline on a loaded runner, and the reproduction blob of any failure printed. Tests that promise a
number of examples per run (the conservation property: 2,000) set it themselves, whatever the profile."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
