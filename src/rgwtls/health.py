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
from a connection of its own whose operations time out after `WAIT` seconds.

A check it cannot make (no such pool, the deploy user may not read it)
is one WARNING and no refusal: a misconfigured check must not stop every
renewal of the fleet. See docs/deploy.md for the caps.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from rgwtls.config import CephConfig
from rgwtls.errors import StoreError
from rgwtls.store import Pool

log = logging.getLogger(__name__)

# radosgw's control objects (rgw_num_control_oids); elsewhere, the PGs these names map to.
PROBES = tuple(f"notify.{i}" for i in range(8))
# The most one probe waits (and connecting); a healthy cluster answers in milliseconds.
WAIT = 5.0


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
    missing: list[str] = []
    denied: list[str] = []
    try:
        for pool in pools:
            for obj in PROBES:
                asked = time.monotonic()
                answer = probe.probe(pool, obj)
                if answer == "ok":
                    continue
                if answer in ("no pool", "denied"):
                    (missing if answer == "no pool" else denied).append(pool)
                    break
                return (
                    f"radosgw's pool {pool} does not answer (a stat of {obj}: {answer} after "
                    f"{time.monotonic() - asked:.1f}s; PGs not active, or an OSD stalled)"
                )
    finally:
        probe.close()
    if missing or denied:
        _cannot_tell(ceph, missing, denied)
    else:
        log.info("radosgw's pools %s answered in %.2fs", ", ".join(pools), time.monotonic() - started)
    return ""


def _cannot_tell(ceph: CephConfig, missing: list[str], denied: list[str]) -> None:
    """One WARNING for all the pools that could not be probed, saying what to change."""
    said = []
    if missing:
        said.append(
            f"there is no pool {', '.join(missing)} (set deploy.rgw_pools to this zone's root and control pools)"
        )
    if denied:
        caps = ", ".join(f"allow r pool={p}" for p in denied)
        said.append(f"{ceph.user} may not read pool {', '.join(denied)} (add '{caps}' to its osd caps, docs/deploy.md)")
    log.warning(
        "whether a new radosgw could start is not checked before this restart: %s; the restart goes ahead",
        "; ".join(said),
    )
