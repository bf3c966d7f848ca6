"""The restart wave's hand-off: N gateways through one restart slot, notify against polling, on a real cluster.

Each gateway is its own librados client (a Pool, in a thread), takes a slot,
"restarts" for RESTART seconds, and frees it. The wave's time is compared
with the sum of the restarts, the floor no hand-off can beat: with polling,
a waiter notices a freed slot at its next poll (pauses doubling to 2 s);
with the notify, at once. Run: python -m bench.slot_bench [--gateways 12].
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devsite.ceph import ceph_cluster
from rgwtls.config import CephConfig
from rgwtls.store import Pool

POOL = "rgwtls"
RESTART = 0.3  # what one gateway's restart-to-serving takes here (radosgw restarts in 0.3 to 0.9 s)


def wave(conf: Path, keyring: Path, gateways: int, slots: int, notify: bool) -> float:
    cfg = CephConfig(conf=str(conf), user="client.admin", keyring=str(keyring), pool=POOL, timeout=10.0)
    pools = [Pool(cfg).connect() for _ in range(gateways)]
    if not notify:
        for p in pools:  # the previous release: no notify on release, no watch while waiting
            p._hand_on = lambda obj: None  # type: ignore[method-assign]
            p._watch_slots = lambda slots, freed: []  # type: ignore[method-assign]
    start = threading.Barrier(gateways + 1)

    def gateway(pool: Pool) -> None:
        start.wait()
        with pool.restart_slot(slots, wait=600, hold=60):
            time.sleep(RESTART)

    threads = [threading.Thread(target=gateway, args=(p,)) for p in pools]
    for t in threads:
        t.start()
    start.wait()
    began = time.monotonic()
    for t in threads:
        t.join()
    took = time.monotonic() - began
    for p in pools:
        p.close()
    return took


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slot_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--gateways", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="rgwtls-slot-bench-") as tmp,
        ceph_cluster(Path(tmp) / "ceph", pools=(POOL,)) as cluster,
    ):
        keyring: Any = cluster.admin_keyring
        print(f"{args.gateways} gateways, restart {RESTART}s each, median of {args.runs} waves")
        print("| slots | sum of restarts / slots | polling | notify | notify / floor |")
        print("|---:|---:|---:|---:|---:|")
        for slots in (1, 2):
            floor = args.gateways * RESTART / slots
            polled = [wave(cluster.conf, keyring, args.gateways, slots, False) for _ in range(args.runs)]
            pushed = [wave(cluster.conf, keyring, args.gateways, slots, True) for _ in range(args.runs)]
            p, n = statistics.median(polled), statistics.median(pushed)
            print(f"| {slots} | {floor:.2f} s | {p:.2f} s ({p / floor:.2f}x) | {n:.2f} s | {n / floor:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
