"""The fleet as the pool sees it: each gateway's record of its last deploy, and `rgwtls rollout`.

A gateway writes `deploy/host.HOST.ENDPOINT` after every deploy that
changed something or failed (a no-op writes nothing: cron runs it every few
minutes). `rollout`, on the issuer, announces the pool's set and follows the
wave through those records: the issuer cannot reach each gateway's local
endpoint, but every gateway says what it serves.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rgwtls.config import Config
from rgwtls.errors import Interrupted, RgwtlsError
from rgwtls.probe import pem_fingerprint, served_fingerprint, server_name
from rgwtls.store import NS_DEPLOY, Pool

log = logging.getLogger(__name__)
PREFIX = "host."


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def deploy_recorded(cfg: Config, **kwargs: Any) -> bool:
    """`deploy`, then this gateway's record if it changed something or failed (a no-op writes nothing)."""
    from rgwtls.deploy import deploy

    try:
        changed = deploy(cfg, **kwargs)
    except RgwtlsError as e:
        if not kwargs.get("dry_run"):
            record(cfg, bool(kwargs.get("staging")), str(e))
        raise
    if changed:
        record(cfg, bool(kwargs.get("staging")), None)
    return changed


def record(cfg: Config, staging: bool, error: str | None) -> None:
    """This gateway's record after a deploy that changed something or failed; a failure to write it is only INFO."""
    d = cfg.deploy
    cert = cfg.certificate(d.certificate or cfg.certificates[0].name)[0]
    try:
        served = served_fingerprint(
            d.verify_endpoint, server_name(d, d.names or cert.domains), min(d.verify_timeout, 5)
        )
    except OSError:
        served = ""
    host = os.uname().nodename
    doc = {
        "host": host,
        "endpoint": d.verify_endpoint,
        "certificate": cert.name,
        "staging": staging,
        "served": served,
        "ok": error is None,
        "error": error,
        "at": _now(),
    }
    try:
        with Pool(cfg.ceph) as pool:
            pool.write(NS_DEPLOY, f"{PREFIX}{host}.{d.verify_endpoint}", json.dumps(doc).encode())
    except Interrupted:
        raise
    except RgwtlsError as e:
        log.info("could not record this deploy in the pool (rollout will not see it): %s", e)


@dataclass(frozen=True)
class Gateway:
    """One known gateway and where it stands against the pool's set."""

    name: str
    state: str  # "serving", "failed", "waiting"
    detail: str


def _standing(records: dict[str, bytes], want: dict[str, str], since: str) -> list[Gateway]:
    found = []
    for obj, raw in records.items():
        try:
            doc: dict[str, Any] = json.loads(raw)
            name = f"{doc['host']} ({doc['endpoint']})"
            fp = want.get(str(doc["certificate"]))
        except (ValueError, KeyError, TypeError):
            found.append(Gateway(obj, "failed", "its record is unreadable"))
            continue
        if fp is None:
            continue  # a certificate the issuer does not configure
        if doc.get("served") == fp:
            found.append(Gateway(name, "serving", "serves the pool's certificate"))
        elif not doc.get("ok") and str(doc.get("at", "")) >= since:
            found.append(Gateway(name, "failed", str(doc.get("error"))))
        else:
            found.append(Gateway(name, "waiting", f"last deploy {doc.get('at')}"))
    return found


def rollout(
    cfg: Config, wait: bool = False, timeout: float = 600.0, out: Callable[[str], None] | None = None
) -> list[Gateway]:
    """Announce the pool's sets to the fleet and follow the wave until every known gateway serves them.

    With `wait`, a wave that is not done within `timeout` is one error line
    naming each gateway that lags and why (its last-deploy record).
    """
    say = out or (lambda line: print(line, file=sys.stderr))
    tty = sys.stderr.isatty() and out is None
    since = _now()
    started = time.monotonic()
    with Pool(cfg.ceph) as pool:
        want: dict[str, str] = {}
        for cert in cfg.certificates:
            current = pool.read_set(cert.name)
            if current is None:
                continue
            want[cert.name] = pem_fingerprint(current.cert_pem)
            pool.announce(cert.name, current.generation, False)
        if not want:
            raise RgwtlsError(f"rollout: no certificate in pool {cfg.ceph.pool} yet; run 'rgwtls issue' first")
        last = ""
        while True:
            fleet = _standing(pool.objects(NS_DEPLOY, PREFIX), want, since)
            done = sum(g.state == "serving" for g in fleet)
            failed = [g for g in fleet if g.state == "failed"]
            took = time.monotonic() - started
            line = f"rollout: {done}/{len(fleet)} gateways serve the pool's certificate ({took:.0f}s)"
            if failed:
                line += f"; failed: {', '.join(g.name for g in failed)}"
            if tty:
                sys.stderr.write("\r" + line)
                sys.stderr.flush()
            elif line.split(" (")[0] != last.split(" (")[0]:
                say(line)
            last = line
            if fleet and done == len(fleet):
                if tty:
                    sys.stderr.write("\n")
                return fleet
            if not wait and took >= timeout:
                return fleet
            if took >= timeout:
                if tty:
                    sys.stderr.write("\n")
                lagging = "; ".join(f"{g.name}: {g.state} ({g.detail})" for g in fleet if g.state != "serving")
                raise RgwtlsError(
                    f"rollout: {len(fleet) - done} of {len(fleet)} gateways do not serve the pool's certificate "
                    f"after {timeout:g}s: {lagging or 'no gateway has recorded a deploy'}"
                )
            time.sleep(1.0)
