"""Property-based fuzzing of every reader of user input (hypothesis).

The property is the same for all: an input is accepted, or refused with our error (ValueError,
OSError subclasses we raise) naming the file, and the line or key where there is one. Any other
exception is a bug. The default profile is short, for a quick `pytest`; CI runs the `ci` profile
(`SPANISH_FT_FUZZ=ci`, .ci/run), with many more examples per reader.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

settings.register_profile("default", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("ci", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.load_profile(os.environ.get("SPANISH_FT_FUZZ", "default"))
