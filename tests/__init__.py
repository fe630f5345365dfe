"""Joule Ledger's tests.

Property and fuzz tests are seeded (``derandomize``): the same examples on every run, so a result never depends on
luck. ``HYPOTHESIS_PROFILE=explore`` draws fresh random examples instead (for looking for new defects by hand;
a failure prints the blob that reproduces it). Tests that promise a number of examples per run (the conservation
property: 2,000) set it themselves, whatever the profile.
"""

import os

from hypothesis import HealthCheck, settings

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("seeded", derandomize=True, database=None, deadline=None, suppress_health_check=_QUIET)
settings.register_profile("ci", parent=settings.get_profile("seeded"), print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "seeded"))
