"""What a whole local site is made of, and the rgwtls config that points at it.

Shared by the tests (conftest.py), the demo and the benchmarks.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from devsite.bind import Bind
from devsite.ceph import CephCluster
from devsite.certmaker import site_ca
from devsite.pebble import STARTED_ROOTS, Pebble
from devsite.uddi import UddiEmulator
from devsite.wapi import WapiEmulator

ZONE = "cog.example.org"
DOMAINS = (ZONE, f"*.{ZONE}")
POOL = "rgwtls"
ISSUER_CAPS = {"mon": "allow r", "osd": f"allow rwx pool={POOL}"}
DEPLOY_CAPS = {
    "mon": "allow r",
    "osd": 'allow r pool=rgwtls namespace="", allow r pool=rgwtls namespace=staging, '
    "allow rwx pool=rgwtls namespace=deploy, "
    # What deploy probes before a restart: could a new radosgw start (rgwtls.health)? It reads the zone
    # root, and writes (and removes) objects of its own beside radosgw's control objects.
    "allow r pool=.rgw.root, allow rw pool=default.rgw.control",
}


@dataclass
class Stack:
    """Everything a test's config points at."""

    dir: Path
    bind: Bind
    pebble: Pebble
    ceph: CephCluster
    wapi: WapiEmulator
    keyring: Path
    uddi: UddiEmulator | None = None

    def secret_file(self, name: str, value: str) -> Path:
        p = self.dir / name
        p.write_text(value + "\n")
        p.chmod(0o600)
        return p

    def trusted_roots(self) -> Path:
        """A bundle of every test CA's root: every Pebble this process started (this stack's too), the site's own.

        Written at each call: a Pebble started since (a test's own) is in it then.
        """
        path = self.dir / "trusted-roots.pem"
        # Renamed into place: a run started earlier may be reading it.
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(dict.fromkeys([*STARTED_ROOTS, site_ca()[1]])))
        tmp.replace(path)
        return path

    def settings(self, provider: str = "infoblox") -> dict[str, Any]:
        return {
            "acme": {
                "directory": self.pebble.directory_url,
                "staging_directory": self.pebble.directory_url + "?staging",
                "email": "ops@example.org",
                "ca_bundle": str(self.pebble.ca_bundle),
                "poll_interval": 0.1,
                "order_timeout": 60.0,
                "retry_backoff": 0.1,
            },
            "ceph": {
                "conf": str(self.ceph.conf),
                "user": "client.rgwtls-issuer",
                "keyring": str(self.keyring),
                "pool": POOL,
                "timeout": 5.0,
            },
            "dns": {
                "provider": provider,
                "resolvers": [f"127.0.0.1:{self.bind.port}"],
                "nameserver_port": self.bind.port,
                "propagation_timeout": 10.0,
                "propagation_interval": 0.1,
                "query_timeout": 1.0,
                "infoblox": {
                    "server": self.wapi.url.removeprefix("https://"),
                    "username": self.wapi.username,
                    "password_file": str(self.secret_file("wapi-password", self.wapi.password)),
                    "ca_bundle": str(self.wapi.ca_bundle),
                    "timeout": 3.0,
                },
                "rfc2136": {
                    "server": "127.0.0.1",
                    "port": self.bind.port,
                    "tsig_key_name": self.bind.tsig_name,
                    "tsig_algorithm": self.bind.tsig_algorithm,
                    "tsig_secret_file": str(self.secret_file("tsig-secret", self.bind.tsig_secret)),
                },
                **({"uddi": self._uddi_settings()} if self.uddi is not None else {}),
            },
            # This host's state (kept sets, deploy's lock): the test's own, never /var/lib/rgwtls.
            # Pebble's roots are no public CA's: named, as a site names a private CA's.
            "deploy": {"state_dir": str(self.dir / "state"), "trusted_roots": str(self.trusted_roots())},
            "certificate": [{"name": ZONE, "domains": list(DOMAINS)}],
        }

    def _uddi_settings(self) -> dict[str, Any]:
        assert self.uddi is not None
        return {
            "portal": self.uddi.portal,
            "api_key_file": str(self.secret_file("uddi-api-key", self.uddi.api_key)),
            "ca_bundle": str(self.uddi.ca_bundle),
            "timeout": 3.0,
        }

    def write_config(self, settings: dict[str, Any], name: str = "rgwtls.toml") -> Path:
        path = self.dir / name
        path.write_text(to_toml(settings))
        path.chmod(0o644)  # rgwtls refuses a config others may write, whatever the umask
        tomllib.loads(path.read_text())  # what we wrote must be TOML
        return path


def to_toml(doc: dict[str, Any]) -> str:
    """A config as TOML, written by tomli-w: the tests' values (paths, secrets, CA names) escaped as TOML wants."""
    return tomli_w.dumps(doc)
