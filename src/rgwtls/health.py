"""Before a restart: could a new radosgw start? A running one survives what a starting one cannot.

A running radosgw keeps serving TLS through a stalled OSD and through PGs
that do not go active; a starting one must first read its zone in
`.rgw.root`, then create and watch the control objects `notify.0` to
`notify.7` in the zone's control pool, and it hangs or fails while their
PGs do not answer. The mon answering proves none of that (an OSD stalled
with no peer to report it stays "up" for up to 15 minutes, and a PG that is
not active is invisible to a deploy user without the mgr). So the signal is
the one radosgw itself would meet: a stat of those object names in each of
`deploy.rgw_pools` (the object there or not: the stat proves its PG answers),
and where the object is there (the control pool), a write in its PG: after
an OSD stall the PG may answer reads for minutes while its writes stay
blocked, and a radosgw started then hangs creating its control objects. The
write is an object of our own, placed in that PG by its locator key, created
and removed in one operation; radosgw's own objects are only read. It runs
from a connection of its own whose operations time out after `WAIT` seconds,
all of them within `TOTAL`.

A check it cannot make (no such pool, the deploy user may not read or write
it) is one WARNING and no refusal: a misconfigured check must not stop every
renewal of the fleet. See docs/deploy.md for the caps.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from rgwtls.config import CephConfig
from rgwtls.errors import StoreError
from rgwtls.store import Pool
from rgwtls.store.holder import this_host

log = logging.getLogger(__name__)

# radosgw's control objects (rgw_num_control_oids); elsewhere, the PGs these names map to.
PROBES = tuple(f"notify.{i}" for i in range(8))
# The most one probe waits (and connecting); a healthy cluster answers in milliseconds.
WAIT = 5.0
# The most all of them take (one slow answer after another); a healthy cluster's 24 take tens of milliseconds.
TOTAL = 10.0
# Our own object beside radosgw's control object N: OWN.HOST.N, with notify.N as its locator key.
OWN = "rgwtls-probe"


def radosgw_could_not_start(ceph: CephConfig, pools: tuple[str, ...]) -> str:
    """Why a new radosgw could not start now, "" if every pool answered (or could not be asked)."""
    if not pools:
        return ""
    seconds = min(ceph.timeout, WAIT)
    started = time.monotonic()
    try:
        probe = Pool(dataclasses.replace(ceph, timeout=seconds)).connect()
    except StoreError as e:
        return f"{e}"
    cannot = Unchecked()
    try:
        for pool in pools:
            why = _pool_could_not(probe, pool, started, cannot)
            if why:
                return why
    finally:
        probe.close()
    if cannot:
        cannot.warn(ceph.user)
    else:
        log.info("radosgw's pools %s answered in %.2fs", ", ".join(pools), time.monotonic() - started)
    return ""


@dataclasses.dataclass
class Unchecked:
    """The pools a probe could not be made in, by why: for one WARNING."""

    missing: list[str] = dataclasses.field(default_factory=list)
    unreadable: list[str] = dataclasses.field(default_factory=list)
    unwritable: list[str] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unreadable or self.unwritable)

    def warn(self, user: str) -> None:
        """One WARNING for all of them, saying what to change."""
        said = []
        if self.missing:
            said.append(
                f"there is no pool {', '.join(self.missing)} "
                "(set deploy.rgw_pools to this zone's root and control pools)"
            )
        if self.unreadable:
            caps = ", ".join(f"allow r pool={p}" for p in self.unreadable)
            pools = ", ".join(self.unreadable)
            said.append(f"{user} may not read pool {pools} (add '{caps}' to its osd caps, docs/deploy.md)")
        if self.unwritable:
            caps = ", ".join(f"allow rw pool={p}" for p in self.unwritable)
            pools = ", ".join(self.unwritable)
            said.append(
                f"{user} may not write in pool {pools}, so its writes are not checked "
                f"(make its cap there '{caps}', docs/deploy.md)"
            )
        log.warning(
            "whether a new radosgw could start is not checked before this restart: %s; the restart goes ahead",
            "; ".join(said),
        )


def _pool_could_not(probe: Pool, pool: str, started: float, cannot: Unchecked) -> str:
    """Why `pool` would stop a starting radosgw, "" if it would not (or cannot be asked: noted in `cannot`)."""
    for i, obj in enumerate(PROBES):
        if time.monotonic() - started > TOTAL:
            return f"radosgw's pools did not answer within {TOTAL:g}s (slow at {pool}, {obj}; an OSD slow or stalled)"
        asked = time.monotonic()
        answer = probe.probe(pool, obj)
        if answer in ("no pool", "denied"):
            (cannot.missing if answer == "no pool" else cannot.unreadable).append(pool)
            return ""
        if answer not in ("present", "absent"):
            return (
                f"radosgw's pool {pool} does not answer (a stat of {obj}: {answer} after "
                f"{time.monotonic() - asked:.1f}s; PGs not active, or an OSD stalled)"
            )
        if answer == "absent" or pool in cannot.unwritable:
            continue
        asked = time.monotonic()
        own = f"{OWN}.{this_host()}.{i}"
        wrote = probe.probe_write(pool, own, obj)
        log.debug("radosgw's pool %s: a write of %s beside %s: %s", pool, own, obj, wrote)
        if wrote == "denied":
            cannot.unwritable.append(pool)
        elif wrote != "ok":
            return (
                f"radosgw's pool {pool} takes no write (a write of {own} beside {obj}: {wrote} after "
                f"{time.monotonic() - asked:.1f}s; writes blocked, as after an OSD stall)"
            )
    return ""
