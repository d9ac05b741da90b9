"""Shared test settings.

Everything runs in float64 by default (set here once).  Hypothesis runs derandomised (reproducible in CI).  Profiles:
``default`` (developer runs) and ``ci`` (selected by CI=true or
HYPOTHESIS_PROFILE=ci) with more examples per property.
"""
import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))

torch.set_num_threads(1)
# Verification runs in float64 (THEORY standards).  Set once for the whole suite so that
# no test depends on which modules happened to be imported first in its worker; the
# library itself is explicit about dtypes (the experiments train in float32 regardless).
torch.set_default_dtype(torch.float64)
