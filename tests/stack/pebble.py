"""A real Pebble, Let's Encrypt's test CA, validating DNS-01 against our BIND."""

from __future__ import annotations

import json
import os
import ssl
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.stack.ports import free_port
from tests.stack.proc import Server
from tests.stack.tlsca import TestCA

# A name for Pebble that only a proxy started with `hosts={ONLY_VIA_PROXY: "127.0.0.1"}`
# resolves (tests/stack/proxy.py): through it the CA is reachable, directly it is not.
ONLY_VIA_PROXY = "acme.only-via-proxy.test"


@dataclass
class Pebble:
    server: Server
    port: int
    mgmt_port: int
    ca_bundle: Path  # verifies Pebble's own HTTPS API

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def proxied_directory_url(self) -> str:
        """The directory by the name only the proxy resolves; Pebble's URLs follow the name asked."""
        return f"https://{ONLY_VIA_PROXY}:{self.port}/dir"

    def _mgmt(self, path: str) -> str:
        ctx = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(f"https://127.0.0.1:{self.mgmt_port}{path}", context=ctx, timeout=5) as r:
            return str(r.read().decode())

    def roots_pem(self) -> str:
        """The root that issues this run's certificates: Pebble makes a new one at every start."""
        return self._mgmt("/roots/0")

    def intermediates_pem(self) -> str:
        return self._mgmt("/intermediates/0")

    def stop(self) -> None:
        self.server.stop()


@contextmanager
def pebble_server(workdir: Path, ca: TestCA, dns_port: int, env: dict[str, str] | None = None) -> Iterator[Pebble]:
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = ca.issue("pebble", hosts=("localhost", ONLY_VIA_PROXY))
    port, mgmt = free_port(), free_port()
    cfg = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{mgmt}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": free_port(),
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            # Let's Encrypt's 90 days, not Pebble's default of five years.
            "certificateValidityPeriod": 90 * 86400,
        }
    }
    conf = workdir / "pebble.json"
    conf.write_text(json.dumps(cfg))
    full_env = dict(os.environ)
    # No sleeps before validation, and as little authorization reuse as
    # Pebble 2.4 allows: with 0 it still reuses a valid one about 1% of the
    # time (its check is rand.Intn(100) > percent; -1 is refused). Every test
    # starts with an empty pool, so a new account, which has nothing to reuse.
    full_env.update({"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_AUTHZREUSE": "0"})
    full_env.update(env or {})
    server = Server(
        "pebble",
        ["pebble", "-config", conf, "-dnsserver", f"127.0.0.1:{dns_port}", "-strict=false"],
        workdir / "pebble.log",
        env=full_env,
        cwd=workdir,
    )
    pebble = Pebble(server, port, mgmt, ca.ca_pem)
    server.start()
    try:
        server.wait_until(lambda: bool(pebble._mgmt("/roots/0")), timeout=20, what="serving")
        yield pebble
    finally:
        server.stop()
