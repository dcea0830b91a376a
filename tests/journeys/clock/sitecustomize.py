"""A wall clock running ahead, for one `mocksync` command of a journey (what libfaketime does,
in Python): `Device.ms(..., clock_shift_s=N)` puts this directory first on PYTHONPATH and sets
MOCKSYNC_JOURNEY_CLOCK_SHIFT_S=N, so `time.time()` in that process reads N seconds later.

Why: an invite's shortest lifetime is a minute; a journey cannot wait for it to expire, but it
can be "a while later" on the joining device, which is where the user sees the refusal.
"""

import os
import time

_SHIFT_S = float(os.environ.get("MOCKSYNC_JOURNEY_CLOCK_SHIFT_S") or 0)

if _SHIFT_S:
    _real_time = time.time
    _real_time_ns = time.time_ns

    def _shifted_time() -> float:
        return _real_time() + _SHIFT_S

    def _shifted_time_ns() -> int:
        return _real_time_ns() + int(_SHIFT_S * 1e9)

    time.time = _shifted_time
    time.time_ns = _shifted_time_ns
