"""Free loopback ports for the test servers.

Ports come from 10000-32767: the kernel's ephemeral range starts at 32768, and
a server there can collide with the source port of any outgoing connection.

Under pytest-xdist each worker is a process of its own with a stack of its own,
and `_handed_out` is per process: two workers could both find a port free and
both hand it out before either binds it. So each worker draws only from its own
slice of the range (gw0 the first, gw1 the next...), and no two ever collide.
"""

from __future__ import annotations

import os
import random
import re
import socket
from collections.abc import Mapping

_LOW, _HIGH = 10000, 32767
_handed_out: set[int] = set()


def port_range(env: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """[low, high) for this process: the whole range, or its xdist worker's slice of it."""
    m = re.fullmatch(r"gw(\d+)", env.get("PYTEST_XDIST_WORKER", ""))
    if not m:
        return _LOW, _HIGH
    index = int(m.group(1))
    count = max(int(env.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1), index + 1)
    size = (_HIGH - _LOW) // count
    return _LOW + index * size, _LOW + (index + 1) * size


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1, never the same twice per run (nor in two xdist workers)."""
    low, high = port_range()
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(low, high)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port in {low}-{high - 1} on 127.0.0.1")
