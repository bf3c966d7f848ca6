"""Free loopback ports for the test servers.

Ports come from 10000-32767: the kernel's ephemeral range starts at 32768, and
a server there can collide with the source port of any outgoing connection.
"""

from __future__ import annotations

import random
import socket

_LOW, _HIGH = 10000, 32767
_handed_out: set[int] = set()


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1, never the same twice per run."""
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(_LOW, _HIGH)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port in 10000-32767 on 127.0.0.1")
