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
from rgwtls.store import NS_DEPLOY, Holder, Pool

log = logging.getLogger(__name__)
PREFIX = "host."


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


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
        "activate": d.activate,
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
    state: str  # "serving", "restarting", "failed", "waiting"
    detail: str


def _standing(records: dict[str, bytes], want: dict[str, str], since: str, holders: list[Holder]) -> list[Gateway]:
    restarting = {(h.host, h.label): h for h in holders}
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
        how = f", {doc['activate']}" if doc.get("activate") not in (None, "restart") else ""
        holder = restarting.get((str(doc["host"]), str(doc["endpoint"])))
        if doc.get("served") == fp:
            found.append(Gateway(name, "serving", f"serves the pool's certificate since {doc.get('at')}{how}"))
        elif holder is not None:
            found.append(Gateway(name, "restarting", f"holds a restart slot since {holder.since}"))
        elif not doc.get("ok") and str(doc.get("at", "")) >= since:
            found.append(Gateway(name, "failed", str(doc.get("error"))))
        else:
            found.append(Gateway(name, "waiting", f"last deploy {doc.get('at')}{how}"))
    return found


class _Progress:
    """The wave as it goes: one line per gateway that changed, and the count (rewritten in place on a terminal)."""

    def __init__(self, out: Callable[[str], None] | None) -> None:
        self.say = out or (lambda line: print(line, file=sys.stderr))
        self.tty = out is None and sys.stderr.isatty()
        self.seen: dict[str, tuple[str, str]] = {}
        self.last = ""
        self.open = False

    def show(self, fleet: list[Gateway], took: float) -> None:
        for g in fleet:
            if self.seen.get(g.name) != (g.state, g.detail):
                self.seen[g.name] = (g.state, g.detail)
                self._line(f"rollout: {g.name}: {g.state} ({g.detail})")
        done = sum(g.state == "serving" for g in fleet)
        counts = f"rollout: {done}/{len(fleet)} gateways serve the pool's certificate"
        if self.tty:
            sys.stderr.write(f"\r\x1b[K{counts} ({took:.0f}s)")
            sys.stderr.flush()
            self.open = True
        elif counts != self.last:
            self.say(f"{counts} ({took:.0f}s)")
        self.last = counts

    def _line(self, line: str) -> None:
        if self.tty:
            sys.stderr.write(f"\r\x1b[K{line}\n")
        else:
            self.say(line)

    def end(self) -> None:
        if self.open:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.open = False


def rollout(
    cfg: Config, wait: bool = False, timeout: float = 600.0, out: Callable[[str], None] | None = None
) -> list[Gateway]:
    """Announce the pool's sets to the fleet and follow the wave until every known gateway serves them.

    Known gateways are those that recorded a deploy in the pool. With
    `wait`, a wave that is not done within `timeout` is one error line
    naming each gateway that lags and why (its last-deploy record); without
    it, rollout follows for `timeout` at most and exits 0 either way.
    """
    since = _now()
    started = time.monotonic()
    progress = _Progress(out)
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
        try:
            while True:
                fleet = _standing(pool.objects(NS_DEPLOY, PREFIX), want, since, pool.slot_holders(cfg.deploy.slot_hold))
                took = time.monotonic() - started
                progress.show(fleet, took)
                done = sum(g.state == "serving" for g in fleet)
                if fleet and done == len(fleet):
                    return fleet
                if took >= timeout and not wait:
                    return fleet
                if took >= timeout:
                    progress.end()
                    lagging = "; ".join(f"{g.name}: {g.state} ({g.detail})" for g in fleet if g.state != "serving")
                    raise RgwtlsError(
                        f"rollout: {len(fleet) - done} of {len(fleet)} gateways do not serve the pool's certificate "
                        f"after {timeout:g}s: {lagging or 'no gateway has recorded a deploy'}"
                    )
                time.sleep(1.0)
        finally:
            progress.end()


def forget(cfg: Config, host: str, out: Callable[[str], None] | None = None) -> int:
    """Remove the deploy records of a retired host, so that rollout no longer waits for it; how many."""
    say = out or (lambda line: print(line, file=sys.stderr))
    with Pool(cfg.ceph) as pool:
        # By the record's own host: "gw1." also starts the records of gw1.example.org.
        mine = [obj for obj, raw in pool.objects(NS_DEPLOY, f"{PREFIX}{host}.").items() if _host_of(raw) == host]
        for obj in mine:
            pool.remove(NS_DEPLOY, obj)
            say(f"rollout: forgot {obj[len(PREFIX) :]}")
    if not mine:
        raise RgwtlsError(
            f"rollout: no gateway {host!r} has recorded a deploy in pool {cfg.ceph.pool}; nothing to forget"
        )
    return len(mine)


def _host_of(raw: bytes) -> str | None:
    try:
        doc = json.loads(raw)
        return str(doc["host"]) if isinstance(doc, dict) else None
    except (ValueError, KeyError):
        return None
