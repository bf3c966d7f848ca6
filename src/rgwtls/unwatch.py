"""Closing a librados watch once, and letting go of its handle only after its cluster's shutdown.

librados' unwatch cancels the watch in the client before it waits for the
OSD's answer: a close that failed (no OSD answered within the op timeout, as
in a partition) has released the watch all the same. The Python binding
keeps the handle's cookie then, and its destructor unwatches again: while the
cluster is connected that reaches into the cancelled watch (freed memory in
Pacific's librados), and after the shutdown it raises, which Python prints as
"Exception ignored in: 'rados.Watch.__dealloc__'" with a traceback into the
watcher's journal, at every replaced watch. The cookie cannot be cleared from
Python. So a watch's handle is kept by its connection, closed or not, and
let go only after `shutdown()`, where the destructor no longer touches
librados; its one complaint there, that the cluster is shut down, is
expected and is a DEBUG line, while any other error in any other destructor
is printed as ever.

Only standard-library imports here: librados comes in as the caller's handles.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# What the binding names the destructor in its complaint, and the complaint itself.
_DEALLOC = "rados.Watch.__dealloc__"
_SHUT_DOWN = "RadosStateError"


def close(handle: Any, kept: list[Any], what: str) -> None:
    """Close the watch `handle`, once; `kept` holds it, closed or not, until `drop`.

    Kept first: a signal's exception may come out of the close as well, and
    the handle must not go with that exception's frames while connected.
    """
    kept.append(handle)
    try:
        handle.close()
    except Exception as e:  # whatever failed, the binding still holds the cancelled watch's cookie
        # Its text only: the error's traceback holds this frame, and so the handle, for as long as it lives.
        log.debug("closing %s: %s; librados cancelled it already, the handle goes after the shutdown", what, str(e))


def drop(kept: list[Any], shutdown: Callable[[], None]) -> None:
    """Run `shutdown` (the cluster's), then let go of the handles in `kept` without a traceback."""
    shutdown()
    if not kept:
        return
    # The binding reports it twice: the traceback through sys.excepthook, then "Exception ignored" through
    # sys.unraisablehook. Both are set aside for exactly the destructors run here, in this thread.
    unraisable, excepthook = sys.unraisablehook, sys.excepthook

    def expected(u: Any) -> None:
        if str(u.object) == _DEALLOC and type(u.exc_value).__name__ == _SHUT_DOWN:
            log.debug("dropped a watch whose close had failed, after its cluster's shutdown")
            return
        unraisable(u)

    def expected_traceback(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if kind.__name__ != _SHUT_DOWN:
            excepthook(kind, value, tb)

    sys.unraisablehook, sys.excepthook = expected, expected_traceback
    try:
        kept.clear()
    finally:
        sys.unraisablehook, sys.excepthook = unraisable, excepthook
