"""Gateways of one fleet for a test: each its own radosgw, config and keyring, on the test's stack.

A plain helper, not a fixture: the modules that need a fleet wrap it in a
fixture of their own (a fixture imported from another test module trips
ruff's F811 where a test names it), and conftest stays for what every test uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from devsite.gateway import Gateway
from tests.conftest import Stack


@contextlib.contextmanager
def gateways(stack: Stack, keyring: Path, where: Path, n: int) -> Iterator[list[Gateway]]:
    """`n` gateways named w0, w1... under `where`; each stopped afterwards, those started so far if one fails."""
    gateways: list[Gateway] = []
    try:
        for i in range(n):
            gateways.append(Gateway(stack, keyring, where / f"rgw{i}", name=f"w{i}"))
        yield gateways
    finally:
        for gw in gateways:
            gw.stop()
