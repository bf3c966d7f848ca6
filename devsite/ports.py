"""Free loopback ports for the test servers.

Ports come from below 32768: the kernel's ephemeral range starts there, and
a server there can collide with the source port of any outgoing connection.
The host's runs take 10000-24999 and the Tentacle root's 25000-32767
(scripts/tentacle sets RGWTLS_TEST_PORTS=LOW-HIGH for it), so that the two
runs can go side by side, as .ci/run runs them, and never draw the same port.

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

RANGE_VAR = "RGWTLS_TEST_PORTS"
HOST_RANGE = "10000-25000"
_handed_out: set[int] = set()


def run_range(env: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """[low, high) for this run: RGWTLS_TEST_PORTS=LOW-HIGH, or the host's."""
    text = env.get(RANGE_VAR) or HOST_RANGE
    m = re.fullmatch(r"(\d+)-(\d+)", text)
    if not m or not 1024 <= int(m.group(1)) < int(m.group(2)) <= 32768:
        raise ValueError(f"{RANGE_VAR}={text!r}: want LOW-HIGH, 1024 <= LOW < HIGH <= 32768")
    return int(m.group(1)), int(m.group(2))


def port_range(env: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """[low, high) for this process: its run's range, or its xdist worker's slice of it."""
    low, high = run_range(env)
    m = re.fullmatch(r"gw(\d+)", env.get("PYTEST_XDIST_WORKER", ""))
    if not m:
        return low, high
    index = int(m.group(1))
    count = max(int(env.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1), index + 1)
    size = (high - low) // count
    return low + index * size, low + (index + 1) * size


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
