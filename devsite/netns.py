"""A network namespace of a test's own, joined to this host by a veth pair whose link the test can cut.

A process run in it (`Netns.command`) reaches this host only through the
pair, at `host_addr`: a cluster started with `ceph_cluster(..., addr=ns.host_addr)`
is then reachable from it, and `cut()` takes the namespace's end down, as a
partition would, while everything on the host still talks to everything
else. Needs root (ip netns). The namespace and both ends of the pair go on
exit, whatever happened; nothing else on the host is touched.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

# A benchmarking range (RFC 2544): on no real network, and unlikely to be on this host.
_RANGE = ipaddress.IPv4Network("198.18.0.0/15")


def _ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {res.stderr.strip()}")


def _used() -> str:
    return subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True).stdout


@dataclass
class Netns:
    name: str
    host_end: str
    ns_end: str
    host_addr: str
    ns_addr: str

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside the namespace (the process keeps its pid: ip execs into it)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        """The namespace's end of the link down: its packets go nowhere, nothing answers or refuses."""
        _ip("-n", self.name, "link", "set", self.ns_end, "down")

    def mend(self) -> None:
        _ip("-n", self.name, "link", "set", self.ns_end, "up")


@contextlib.contextmanager
def netns() -> Iterator[Netns]:
    """A fresh namespace and its veth pair, on a /30 of the benchmarking range that this host does not use."""
    tag = f"{os.getpid() % 100000}{random.randrange(100):02d}"
    used = _used()
    while True:
        first = _RANGE.network_address + random.randrange(0, _RANGE.num_addresses, 4)
        host, ns = str(first + 1), str(first + 2)
        if host not in used and ns not in used:
            break
    ns_ = Netns(f"rgwtls-{tag}", f"rwh{tag}", f"rwn{tag}", host, ns)
    _ip("netns", "add", ns_.name)
    try:
        _ip("link", "add", ns_.host_end, "type", "veth", "peer", "name", ns_.ns_end, "netns", ns_.name)
        _ip("addr", "add", f"{host}/30", "dev", ns_.host_end)
        _ip("link", "set", ns_.host_end, "up")
        _ip("-n", ns_.name, "addr", "add", f"{ns}/30", "dev", ns_.ns_end)
        _ip("-n", ns_.name, "link", "set", ns_.ns_end, "up")
        _ip("-n", ns_.name, "link", "set", "lo", "up")
        yield ns_
    finally:
        # Deleting the namespace destroys its end, and a veth pair goes with either end.
        with contextlib.suppress(RuntimeError):
            _ip("link", "del", ns_.host_end)
        _ip("netns", "del", ns_.name)
