"""The run's wind-down: once it is told to stop, every outside call it still makes is short.

A run stopped by a signal or by its bound still cleans up: it removes its
challenge records and releases the issuer lock. Those cleanup calls go to the
same WAPI, portal or hook that may be what hung the run, so after the stop
each gets at most `CAP` seconds, and all of them together `CLEANUP` seconds;
past that, calls are not made at all. The run then ends within seconds, and
the journal lists whatever was left for the next run.

Only standard-library imports here: `deploy`'s signal handler uses it, and a
no-op deploy must not load requests.
"""

from __future__ import annotations

import threading
import time

# The most any one request or hook call may take once the run is stopping.
CAP = 2.0
# The most every call after the stop may take together.
CLEANUP = 6.0

_lock = threading.Lock()
_stopped_at: float | None = None
_why = ""


def wind_down(why: str) -> None:
    """From now on, calls are capped; `why` ("interrupted by SIGTERM") is for their error text. The first one counts."""
    global _stopped_at, _why
    with _lock:
        if _stopped_at is None:
            _stopped_at, _why = time.monotonic(), why


def reset() -> None:
    """Back to a run that is not stopping (for tests, and for a command run twice in one process)."""
    global _stopped_at, _why
    with _lock:
        _stopped_at, _why = None, ""


def stopping() -> str:
    """Why the run is stopping, or "" if it is not."""
    with _lock:
        return _why


def limit(seconds: float | None) -> float | None:
    """How long a call that would take `seconds` (None: unbounded) may take now; 0: it must not be made."""
    with _lock:
        stopped = _stopped_at
    if stopped is None:
        return seconds
    left = max(0.0, stopped + CLEANUP - time.monotonic())
    return min(CAP, left) if seconds is None else min(seconds, CAP, left)


def used_up() -> str:
    """The reason a call is not made once the cleanup's time is used up, for its error line."""
    return f"not made: the run is stopping ({stopping()}) and its {CLEANUP:g}s for cleanup are used up"
