"""A real Pebble, Let's Encrypt's test CA, validating DNS-01 against our BIND.

The stack runs Debian sid's Pebble 2.10, which scripts/setup unpacks into
.cache/pebble-sid: it has what Let's Encrypt has in 2026 (profiles, ARI with
alreadyReplaced, EAB, alternate roots, dns-persist-01). Bookworm's Pebble 2.4
(/usr/bin/pebble) stays for one smoke test.

Pebble 2.10.0 offers dns-persist-01 on every authorization, with no PEBBLE_*
setting, listing PERSIST_ISSUER as its one issuer domain name; its challenge
holds no `accounturi` field (that came with 2.10.1). It reads the record
`_validation-persist.NAME` from the -dnsserver, as it reads dns-01's.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from devsite.ports import free_port
from devsite.proc import Server
from devsite.tlsca import TestCA

ROOT = Path(__file__).resolve().parents[1]
PEBBLE_CACHE = ROOT / ".cache" / "pebble-sid"
PEBBLE = PEBBLE_CACHE / "root" / "usr" / "bin" / "pebble"
BOOKWORM_PEBBLE = Path("/usr/bin/pebble")

# A name for Pebble that only a proxy started with `hosts={ONLY_VIA_PROXY: "127.0.0.1"}`
# resolves (devsite/proxy.py): through it the CA is reachable, directly it is not.
ONLY_VIA_PROXY = "acme.only-via-proxy.test"

# The issuer-domain-names of Pebble 2.10's dns-persist-01 challenges, and its directory's CAA identity.
PERSIST_ISSUER = "pebble.letsencrypt.org"

HOUR = 3600
DAY = 24 * HOUR
# Let's Encrypt's profiles as they stand in 2026: classic 90 days (64 from
# 2027-02-10, 45 from 2028-02-16), tlsserver 45 days, shortlived 160 hours.
PROFILES: dict[str, int] = {"classic": 90 * DAY, "tlsserver": 45 * DAY, "shortlived": 160 * HOUR}
# What an order without a profile gets at Let's Encrypt. Pebble gives such an
# order one of its profiles at random, so a stack that must not vary offers this one alone.
DEFAULT_PROFILE = "classic"


# The roots of every Pebble this process started, new at each start. The dev
# site trusts all of its test CAs (Stack.settings() writes them to
# deploy.trusted_roots), as a site on a private ACME CA names that CA's root.
STARTED_ROOTS: list[str] = []


def pebble_version(binary: Path = PEBBLE) -> str:
    """The Debian version of a Pebble binary: the cache's VERSION file, or dpkg's for /usr/bin/pebble."""
    if binary == PEBBLE:
        return (PEBBLE_CACHE / "VERSION").read_text().strip()
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "pebble"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


@dataclass
class Pebble:
    server: Server
    port: int
    mgmt_port: int
    ca_bundle: Path  # verifies Pebble's own HTTPS API
    binary: Path = PEBBLE

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def proxied_directory_url(self) -> str:
        """The directory by the name only the proxy resolves; Pebble's URLs follow the name asked."""
        return f"https://{ONLY_VIA_PROXY}:{self.port}/dir"

    @property
    def version(self) -> str:
        return pebble_version(self.binary)

    def _mgmt(self, path: str, body: Any = None) -> str:
        ctx = ssl.create_default_context(cafile=str(self.ca_bundle))
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"https://127.0.0.1:{self.mgmt_port}{path}", data=data, headers={"User-Agent": "rgwtls-tests"}
        )
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            return str(r.read().decode())

    def roots_pem(self, chain: int = 0) -> str:
        """The root that issues this run's certificates (chain 0), or an alternate one: new at every start."""
        return self._mgmt(f"/roots/{chain}")

    def all_roots_pem(self) -> str:
        """Every root this Pebble issues under (chain 0 and each alternate), one PEM bundle."""
        roots: list[str] = []
        while True:
            try:
                roots.append(self.roots_pem(len(roots)))
            except urllib.error.HTTPError as e:
                e.close()  # an HTTPError holds its response open: Python 3.14 warns of one left to the collector
                if e.code != 404 or not roots:
                    raise
                return "".join(roots)

    def intermediates_pem(self, chain: int = 0) -> str:
        return self._mgmt(f"/intermediates/{chain}")

    def set_renewal_info(self, cert_pem: str, start: dt.datetime, end: dt.datetime) -> None:
        """Make the CA's renewalInfo for this certificate suggest [start, end] (management port)."""
        window = {
            "suggestedWindow": {
                "start": start.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "end": end.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        }
        self._mgmt("/set-renewal-info/", {"certificate": cert_pem, "ariResponse": json.dumps(window)})

    def cert_status(self, serial_hex: str) -> dict[str, Any]:
        """What Pebble holds of a certificate it issued (management API): Status "Valid" or "Revoked", and Reason."""
        doc: dict[str, Any] = json.loads(self._mgmt(f"/cert-status-by-serial/{serial_hex}"))
        return doc

    def revoked_reason(self, serial_hex: str) -> int | None:
        """The RFC 5280 reason code Pebble revoked the certificate for; None while it is not revoked."""
        doc = self.cert_status(serial_hex)
        return int(doc.get("Reason", 0)) if doc.get("Status") == "Revoked" else None

    def stop(self) -> None:
        self.server.stop()


@contextmanager
def pebble_server(
    workdir: Path,
    ca: TestCA,
    dns_port: int,
    env: dict[str, str] | None = None,
    *,
    binary: Path = PEBBLE,
    profiles: Mapping[str, int] | None = None,
    eab_keys: Mapping[str, str] | None = None,
    eab_required: bool = False,
) -> Iterator[Pebble]:
    """Pebble on free ports.

    `profiles`: name -> validity in seconds; default classic's 90 days alone.
    `eab_keys`: kid -> base64url HMAC key, required for new accounts if `eab_required`.
    """
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: run scripts/setup, which fetches Debian sid's Pebble")
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = ca.issue("pebble", hosts=("localhost", ONLY_VIA_PROXY))
    port, mgmt = free_port(), free_port()
    wanted = dict(profiles or {DEFAULT_PROFILE: PROFILES[DEFAULT_PROFILE]})
    cfg: dict[str, Any] = {
        "listenAddress": f"127.0.0.1:{port}",
        "managementListenAddress": f"127.0.0.1:{mgmt}",
        "certificate": str(cert),
        "privateKey": str(key),
        "httpPort": free_port(),
        "tlsPort": free_port(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": eab_required,
        # Let's Encrypt's 90 days, not Pebble's default of five years
        # (Pebble 2.4, which has no profiles, reads only this).
        "certificateValidityPeriod": wanted.get(DEFAULT_PROFILE, 90 * DAY),
        "profiles": {name: {"description": name, "validityPeriod": s} for name, s in wanted.items()},
    }
    if eab_keys:
        cfg["externalAccountMACKeys"] = dict(eab_keys)
    conf = workdir / "pebble.json"
    conf.write_text(json.dumps({"pebble": cfg}))
    full_env = dict(os.environ)
    # No sleeps before validation, and no reuse of valid authorizations
    # (Pebble 2.4 still reused one about 1% of the time with 0). Every test
    # starts with an empty pool, so a new account, which has nothing to reuse.
    full_env.update({"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_AUTHZREUSE": "0"})
    full_env.update(env or {})
    server = Server(
        "pebble",
        [binary, "-config", conf, "-dnsserver", f"127.0.0.1:{dns_port}", "-strict=false"],
        workdir / "pebble.log",
        env=full_env,
        cwd=workdir,
    )
    pebble = Pebble(server, port, mgmt, ca.ca_pem, binary)
    server.start()
    try:
        server.wait_until(lambda: bool(pebble._mgmt("/roots/0")), what="serving")
        STARTED_ROOTS.append(pebble.all_roots_pem())
        yield pebble
    finally:
        server.stop()


def finds_by_serial(cert_pem: str) -> bool:
    """Whether Pebble finds the order of this certificate when a new order names it in ARI's `replaces`.

    Pebble keeps an order under the hex of its serial's shortest bytes (Go's big.Int.Bytes), and
    looks up a `replaces` under the hex of the bytes the client sent: the DER INTEGER's content, as
    RFC 9773 4.1 asks, with a 0x00 in front when the top bit is set. So a serial whose length in bits
    is a multiple of 8, about 1 in 256 of Pebble's 63-bit random serials, is never found: Pebble
    refuses the order "could not find order resulting in the given certificate serial number", a
    defect of the test CA (rgwtls then orders without `replaces`, as it should).
    """
    serial = x509.load_pem_x509_certificate(cert_pem.encode()).serial_number
    return serial.bit_length() % 8 != 0
