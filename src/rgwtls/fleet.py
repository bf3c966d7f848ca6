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
from rgwtls.scrub import clean
from rgwtls.store import MAX_OBJECT, NS_DEPLOY, Holder, Pool, TooLarge

log = logging.getLogger(__name__)
PREFIX = "host."
# What one field of a gateway's record holds, as written and as shown: a record stays a few KiB, far
# below the pool's MAX_OBJECT, and one line of rollout stays readable.
FIELD = 256
ERROR_FIELD = 2000
# The fields rollout uses, and what each must be; anything else makes the record unusable.
_TEXT = ("host", "endpoint", "certificate")
_TEXT_OR_NULL = ("served", "error", "at", "activate")


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
    # Bounded and cleaned here too: the error may quote what a socket or the cluster answered.
    doc = {
        "host": clean(host, FIELD),
        "endpoint": clean(d.verify_endpoint, FIELD),
        "certificate": cert.name,
        "activate": d.activate,
        "staging": staging,
        "served": served,
        "ok": error is None,
        "error": None if error is None else clean(error, ERROR_FIELD),
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


def parse(raw: bytes) -> dict[str, Any] | str:
    """A gateway's record, its text fields cleaned and bounded (rgwtls.scrub); or why it cannot be used.

    Whoever has the deploy caps writes these records, a compromised gateway
    too: nothing in one may reach the issuer operator's terminal raw.
    """
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "it is not UTF-8"
    except (ValueError, RecursionError):
        return "it is not JSON"
    if not isinstance(doc, dict):
        return "it is not a JSON object"
    for key in _TEXT:
        if not isinstance(doc.get(key), str):
            return f"its {key} is not a string"
    for key in _TEXT_OR_NULL:
        if not isinstance(doc.get(key), str | None):
            return f"its {key} is neither a string nor null"
    if not isinstance(doc.get("ok", False), bool):
        return "its ok is not true or false"
    return {
        key: clean(doc.get(key), ERROR_FIELD if key == "error" else FIELD) if isinstance(doc.get(key), str) else None
        for key in (*_TEXT, *_TEXT_OR_NULL)
    } | {"ok": bool(doc.get("ok", False))}


def _skipped(obj: str, why: str) -> str:
    return (
        f"rollout: skipped {NS_DEPLOY}/{clean(obj, FIELD)}: {why}; it shows no gateway until its gateway's next "
        "deploy rewrites it or 'rgwtls rollout --forget HOST' removes it"
    )


def _not_utf8(pool: str, obj: bytes) -> str:
    """What to say of a name that is not UTF-8: python-rados can neither read nor remove it, the rados CLI can."""
    return (
        f"{NS_DEPLOY}/{clean(obj, FIELD)}: its name is not UTF-8, which python-rados cannot name; remove it with: "
        f"rados -N {NS_DEPLOY} -p {pool} rm {_shell_bytes(obj)}"
    )


def _shell_bytes(raw: bytes) -> str:
    """The name as bash's $'...' quoting spells it, every byte that is not plain ASCII as \\xNN."""
    plain = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:-_+=@%,/[]")
    return "$'" + "".join(chr(b) if b in plain else f"\\x{b:02x}" for b in raw[:FIELD]) + "'"


def _standing(
    records: dict[str, bytes],
    want: dict[str, str],
    since: str,
    holders: list[Holder],
    warn: Callable[[str], None] = log.warning,
) -> list[Gateway]:
    restarting = {(h.host, h.label): h for h in holders}
    found = []
    for obj, raw in records.items():
        doc = parse(raw)
        if isinstance(doc, str):
            warn(_skipped(obj, doc))
            continue
        fp = want.get(doc["certificate"])
        if fp is None:
            continue  # a certificate the issuer does not configure
        name = f"{doc['host']} ({doc['endpoint']})"
        how = f", {doc['activate']}" if doc["activate"] not in (None, "restart") else ""
        holder = restarting.get((doc["host"], doc["endpoint"]))
        if doc["served"] == fp:
            found.append(Gateway(name, "serving", f"serves the pool's certificate since {doc['at']}{how}"))
        elif holder is not None:
            found.append(Gateway(name, "restarting", f"holds a restart slot since {clean(holder.since, 64)}"))
        elif not doc["ok"] and (doc["at"] or "") >= since:
            found.append(Gateway(name, "failed", str(doc["error"])))
        else:
            found.append(Gateway(name, "waiting", f"last deploy {doc['at']}{how}"))
    return found


def _records(pool: Pool, warn: Callable[[str], None]) -> dict[str, bytes]:
    """Every gateway's record, whole; a name not in UTF-8, or a record too large to be one: warned of, skipped."""
    found: dict[str, bytes] = {}
    for obj in pool.names(NS_DEPLOY, PREFIX):
        if isinstance(obj, bytes):
            warn(f"rollout: skipped {_not_utf8(pool.cfg.pool, obj)}")
            continue
        try:
            raw = pool.read(NS_DEPLOY, obj)
        except TooLarge:
            warn(_skipped(obj, f"it is larger than {MAX_OBJECT} bytes (a gateway writes a few hundred)"))
            continue
        if raw is not None:
            found[obj] = raw
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

    def warn(self, text: str) -> None:
        """A WARNING line, on a line of its own: the count being rewritten on a terminal is cleared first."""
        if self.open:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
        log.warning("%s", text)

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
    warned: set[str] = set()

    def warn(text: str) -> None:  # once a run: rollout looks again every second
        if text not in warned:
            warned.add(text)
            progress.warn(text)

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
                records = _records(pool, warn)
                fleet = _standing(records, want, since, pool.slot_holders(cfg.deploy.slot_hold), warn)
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
    """Remove the deploy records of a retired host, so that rollout no longer waits for it; how many.

    By name (`host.HOST.*`), so that a record too large or not JSON goes too.
    "gw1." also starts the names of gw1.example.org's records: a name is kept
    only if its record is readable and names another host. A name that is not
    UTF-8 is left, with the rados command that removes it, and exit status 1.
    """
    say = out or (lambda line: print(line, file=sys.stderr))
    with Pool(cfg.ceph) as pool:
        names = pool.names(NS_DEPLOY, f"{PREFIX}{host}.")
        mine = [obj for obj in names if isinstance(obj, str) and not _of_another_host(pool, obj, host)]
        for obj in mine:
            pool.remove(NS_DEPLOY, obj)
            say(f"rollout: forgot {clean(obj[len(PREFIX) :], FIELD)}")
    odd = [obj for obj in names if isinstance(obj, bytes)]
    if odd:
        raise RgwtlsError(f"rollout: could not forget {'; '.join(_not_utf8(cfg.ceph.pool, obj) for obj in odd)}")
    if not mine:
        raise RgwtlsError(
            f"rollout: no gateway {clean(host, FIELD)!r} has recorded a deploy in pool {cfg.ceph.pool}; "
            "nothing to forget"
        )
    return len(mine)


def _of_another_host(pool: Pool, obj: str, host: str) -> bool:
    try:
        raw = pool.read(NS_DEPLOY, obj)
    except TooLarge:
        return False
    doc = parse(raw) if raw is not None else None
    return isinstance(doc, dict) and doc["host"] != clean(host, FIELD)
