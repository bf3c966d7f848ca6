"""`python -m tests.freeze POINT rgwtls-args...`: the real rgwtls, which stops itself with SIGSTOP once at POINT.

A process can be frozen at any instruction (a VM pause, a swap storm, a
debugger): this puts the freeze exactly where a test needs it, with no
switch in the product. The process is stopped by the kernel as any SIGSTOP
stops it, librados' threads and all, and goes on where it was at SIGCONT.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

# Where the command freezes: a function of the product, and which of its calls (1: the first).
POINTS: dict[str, tuple[str, str, int]] = {
    # After the slot's fence, before the restart command runs.
    "before the restart": ("rgwtls.restart", "run", 1),
    # The first handshake of the check after the restart (the first call of all asked what was served before).
    "during the verification": ("rgwtls.probe", "served_fingerprint", 2),
    # The check failed; before the previous certificate is put back and radosgw restarted onto it.
    "before the rollback": ("rgwtls.restart", "roll_back", 1),
    # Before the probe's first write in radosgw's control pool, its stats all answered (rgwtls.health).
    "before the write probe": ("rgwtls.store.connection", "Connection.probe_write", 1),
    # An issue's records published, before the wait until every authoritative server answers them.
    "before the propagation wait": ("rgwtls.propagation", "wait_for_values", 1),
}


def freeze_at(module: Any, name: str, nth: int) -> None:
    """Freeze at the nth call of `name` in `module` (a dotted name: a class's method)."""
    *outer, name = name.split(".")
    for part in outer:
        module = getattr(module, part)
    original: Callable[..., Any] = getattr(module, name)
    calls = 0

    @functools.wraps(original)
    def frozen(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == nth:
            os.kill(os.getpid(), signal.SIGSTOP)
        return original(*args, **kwargs)

    setattr(module, name, frozen)


def main() -> None:
    import importlib

    module, name, nth = POINTS[sys.argv[1]]
    freeze_at(importlib.import_module(module), name, nth)
    from rgwtls.cli import main as rgwtls

    rgwtls(sys.argv[2:], prog_name="rgwtls")


if __name__ == "__main__":
    main()
