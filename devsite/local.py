"""The whole local site in one context manager: what the demo shows and `python -m devsite up` keeps running.

BIND is authoritative for the zone, Pebble validates against it, the WAPI
emulator writes into it, a one-mon, one-OSD Ceph cluster holds the pool, and
a supervised radosgw serves HTTPS from its PEM as user ceph. Two configs
point at it: the issuer's and the gateway's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from devsite.bind import bind_server
from devsite.ceph import RadosGW, ceph_cluster, start_radosgw
from devsite.certmaker import pem_file
from devsite.pebble import pebble_server
from devsite.site import DEPLOY_CAPS, DOMAINS, ISSUER_CAPS, POOL, ZONE, Stack
from devsite.tlsca import TestCA
from devsite.wapi import wapi_emulator


@dataclass
class LocalSite:
    stack: Stack
    rgw: RadosGW
    pem: Path
    issuer_config: Path
    gateway_config: Path


@contextlib.contextmanager
def local_site(work: Path, say: Callable[[str], None] = lambda text: None) -> Iterator[LocalSite]:
    """Start everything under `work`, yield the site, and stop exactly what was started."""
    with contextlib.ExitStack() as stack:
        ca = TestCA(work / "ca")
        bind = stack.enter_context(bind_server(work / "bind", zones=(ZONE,)))
        say(f"  BIND 9, authoritative for {ZONE}, on 127.0.0.1:{bind.port}")
        pebble = stack.enter_context(pebble_server(work / "pebble", ca, bind.port))
        say(f"  Pebble (the ACME test CA), validating against that BIND: {pebble.directory_url}")
        wapi = stack.enter_context(wapi_emulator(work / "wapi", bind))
        say(f"  Infoblox WAPI emulator, writing into that BIND: {wapi.url}/wapi/v2.11/")
        ceph = stack.enter_context(ceph_cluster(work / "ceph", pools=(POOL,)))
        say(f"  Ceph: one mon, one memstore OSD, pool {POOL}")
        pem = work / "rgw.pem"
        pem.write_text(pem_file(DOMAINS))  # what the gateway served before: some other certificate
        pem.chmod(0o600)
        rgw = start_radosgw(ceph, work / "rgw", pem, supervised=True)
        say(f"  radosgw (beast) serving HTTPS on 127.0.0.1:{rgw.port} from {pem}, as user {rgw.user}")

        site = Stack(work, bind, pebble, ceph, wapi, ceph.create_user("client.rgwtls-issuer", ISSUER_CAPS))
        settings = site.settings()
        issuer_config = site.write_config(settings, "issuer.toml")
        settings["ceph"].update(
            user="client.rgwtls-deploy", keyring=str(ceph.create_user("client.rgwtls-deploy", DEPLOY_CAPS))
        )
        settings["deploy"] = {
            "path": str(pem),
            "restart_command": rgw.restart_command,
            "verify_endpoint": f"127.0.0.1:{rgw.port}",
            "state_dir": str(work / "gateway-state"),
            "trusted_roots": settings["deploy"]["trusted_roots"],
        }
        gateway_config = site.write_config(settings, "gateway.toml")
        yield LocalSite(site, rgw, pem, issuer_config, gateway_config)
