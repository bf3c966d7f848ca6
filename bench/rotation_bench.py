"""Benchmark a rotation: restart, graceful reload or HAProxy's hot swap, as a client that never retries sees it.

On one real Ceph cluster, side by side in one run: a radosgw restarted by
`deploy` (the client talks to it directly, as to a gateway), Debian's nginx in
front of it reloaded gracefully (`nginx -s reload` as restart_command), and
Debian's HAProxy in front of it swapping in memory (`activate = "haproxy"`).
Each rotation stores a new set in the pool and runs `rgwtls deploy` while
devsite.getloop's botocore S3 client, with `max_attempts = 1`, loops an
anonymous ListBuckets, one attempt each on a new connection. Then a wave: N
HAProxy frontends swapping at once against N gateways restarting with one slot.

    .venv/bin/python -m bench.rotation_bench [--rounds N] [--wave N]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.deploy_bench import new_set, run_ok, store
from bench.harness import compile_sources, median, update_docs
from devsite.ceph import RadosGW, ceph_cluster, start_radosgw
from devsite.certmaker import make_ca, pem_file
from devsite.getloop import GetLoop, Tally
from devsite.haproxy import HAProxy
from devsite.nginx import Nginx
from devsite.site import DEPLOY_CAPS, DOMAINS, POOL, ZONE, to_toml
from rgwtls.probe import served_fingerprint

RGWTLS = str(Path(sys.executable).with_name("rgwtls"))
HOST = f"anybucket.{ZONE}"
METHODS = {
    "restart": 'restart radosgw (`activate = "restart"`, the default)',
    "nginx": "nginx before radosgw, `nginx -s reload` as restart_command",
    "haproxy": 'HAProxy before radosgw, hot swap (`activate = "haproxy"`)',
}


def config_file(path: Path, ceph: dict[str, Any], deploy: dict[str, Any]) -> Path:
    path.write_text(
        to_toml({"ceph": ceph, "deploy": deploy, "certificate": [{"name": ZONE, "domains": list(DOMAINS)}]})
    )
    return path


def own_pem(path: Path) -> Path:
    path.write_text(pem_file(DOMAINS, days_before=30))
    path.chmod(0o600)
    return path


def rotate(config: Path, port: int, logs: Path, name: str) -> tuple[Tally, float]:
    loop = GetLoop(port, HOST).start().wait_for(10)
    try:
        wall = run_ok([RGWTLS, "deploy"], {"RGWTLS_CONFIG": str(config)}, logs, name).wall
        loop.wait_for(10)
    finally:
        tally = loop.stop()
    return tally, wall


def wave(configs: list[Path], logs: Path, name: str) -> float:
    """Start every deploy at once (cron firing on the whole fleet in one minute); seconds until the last ends."""
    started = time.perf_counter()
    procs = []
    for i, config in enumerate(configs):
        out = (logs / f"{name}-{i}.err").open("wb")
        procs.append(
            (
                subprocess.Popen(
                    [RGWTLS, "deploy"],
                    env={**os.environ, "RGWTLS_CONFIG": str(config)},
                    stdout=subprocess.DEVNULL,
                    stderr=out,
                ),
                out,
            )
        )
    for proc, out in procs:
        code = proc.wait(1800)
        out.close()
        if code != 0:
            raise SystemExit(f"bench: a deploy of the {name} wave failed ({code}); see {logs}")
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    compile_sources()
    parser = argparse.ArgumentParser(prog="python -m bench.rotation_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rotations of each method (default 5)")
    parser.add_argument("--wave", type=int, default=12, help="frontends and gateways in the wave (default 12)")
    parser.add_argument("--no-write", action="store_true", help="print, do not update docs/performance.md")
    args = parser.parse_args(argv)
    began = time.monotonic()
    results: dict[str, list[tuple[Tally, float]]] = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory(prefix="rgwtls-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        logs = work / "logs"
        logs.mkdir()
        cluster = stack.enter_context(ceph_cluster(work / "ceph", pools=(POOL,)))
        keyring = cluster.create_user("client.rgwtls-deploy", DEPLOY_CAPS)
        ceph = {"conf": str(cluster.conf), "user": "client.rgwtls-deploy", "keyring": str(keyring), "pool": POOL}
        rgw = start_radosgw(cluster, work / "rgw", own_pem(work / "rgw.pem"), supervised=True)
        hx = HAProxy(work / "haproxy", rgw.port).start()
        stack.callback(hx.stop)
        nx = Nginx(work / "nginx", rgw.port).start()
        stack.callback(nx.stop)
        ca = make_ca()
        # The bench's CA is no public one: named as a private CA's root is.
        roots = work / "trusted-roots.pem"
        roots.write_text(ca[1])
        base = {"verify_timeout": 30.0, "restart_wait": 900.0, "trusted_roots": str(roots)}
        configs = {
            "restart": config_file(
                work / "restart.toml",
                ceph,
                {
                    **base,
                    "path": str(rgw.pem),
                    "restart_command": rgw.restart_command,
                    "verify_endpoint": f"127.0.0.1:{rgw.port}",
                    "state_dir": str(work / "state-restart"),
                },
            ),
            "nginx": config_file(
                work / "nginx.toml",
                ceph,
                {
                    **base,
                    "path": str(nx.pem),
                    "restart_command": nx.reload_command,
                    "verify_endpoint": f"127.0.0.1:{nx.port}",
                    "state_dir": str(work / "state-nginx"),
                },
            ),
            "haproxy": config_file(
                work / "haproxy.toml",
                ceph,
                {**base, **hx.deploy_settings(), "restart_command": "false", "state_dir": str(work / "state-hx")},
            ),
        }
        ports = {"restart": rgw.port, "nginx": nx.port, "haproxy": hx.port}
        pids = (hx.pid, nx.pid)
        for gen in range(1, args.rounds + 1):
            store(cluster, new_set(gen, ca))
            order = list(METHODS) if gen % 2 else list(reversed(METHODS))
            for m in order:
                results[m].append(rotate(configs[m], ports[m], logs, f"{m}-{gen}"))
        if (hx.pid, nx.pid) != pids or not (hx.running() and nx.running()):
            raise SystemExit("bench: HAProxy or nginx was restarted; the rotations are not what they claim")
        restarts = int(rgw.supervisor("count"))
        # The wave: N HAProxy frontends swapping at once, N gateways restarting with one slot.
        gen = args.rounds + 1
        store(cluster, new_set(gen, ca))
        fronts = [HAProxy(work / f"wave-hx-{i}", rgw.port).start() for i in range(args.wave)]
        for f in fronts:
            stack.callback(f.stop)
        gws: list[RadosGW] = [
            start_radosgw(
                cluster, work / f"wave-rgw-{i}", own_pem(work / f"wave-rgw-{i}.pem"), name=f"w{i}", supervised=True
            )
            for i in range(args.wave)
        ]
        hx_configs = [
            config_file(
                work / f"wave-hx-{i}.toml",
                ceph,
                {**base, **f.deploy_settings(), "restart_command": "false", "state_dir": str(work / f"wave-hx-{i}-st")},
            )
            for i, f in enumerate(fronts)
        ]
        gw_configs = [
            config_file(
                work / f"wave-rgw-{i}.toml",
                ceph,
                {
                    **base,
                    "path": str(g.pem),
                    "restart_command": g.restart_command,
                    "max_parallel_restarts": 1,
                    "verify_endpoint": f"127.0.0.1:{g.port}",
                    "state_dir": str(work / f"wave-rgw-{i}-st"),
                },
            )
            for i, g in enumerate(gws)
        ]
        hx_wave = wave(hx_configs, logs, "wave-haproxy")
        gw_wave = wave(gw_configs, logs, "wave-restart")
        served = {
            served_fingerprint(f"127.0.0.1:{p}", HOST, 5) for p in [f.port for f in fronts] + [g.port for g in gws]
        }
        if len(served) != 1:
            raise SystemExit("bench: the wave left frontends or gateways serving different certificates")
        took = time.monotonic() - began
    text = section(args.rounds, args.wave, took, results, restarts, hx_wave, gw_wave)
    print(text)
    if not args.no_write:
        update_docs("rotation-bench", text)
    return 0


def section(
    rounds: int,
    wave_n: int,
    took: float,
    results: dict[str, list[tuple[Tally, float]]],
    restarts: int,
    hx_wave: float,
    gw_wave: float,
) -> str:
    table = [
        "| rotation | rotations | requests | failed requests (no retries) | longest gap between successes, s "
        "(median / max) | deploy wall s (median) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m, label in METHODS.items():
        rs = results[m]
        ok = sum(t.ok + t.failed for t, _ in rs)
        failed = sum(t.failed for t, _ in rs)
        gaps = [t.longest_gap for t, _ in rs]
        table.append(
            f"| {label} | {len(rs)} | {ok} | {failed} | {median(gaps):.3f} / {max(gaps):.3f} | "
            f"{median([w for _, w in rs]):.3f} |"
        )
    return "\n".join(
        [
            "## A rotation as a client that never retries sees it: restart, graceful reload, hot swap",
            "",
            f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, "
            f"{platform.system()} {platform.release()}; {rounds} rotations of each kind, interleaved; the whole "
            f"benchmark took {took:.0f} s. Rerun: `.venv/bin/python -m bench.rotation_bench` "
            "(`--rounds N`, default 5; `--wave N`, default 12).",
            "",
            "One radosgw (Ceph 16.2, beast, HTTPS), and in front of it Debian's nginx 1.22 and Debian's HAProxy "
            "2.6. Each rotation stores a new set in the pool and runs `rgwtls deploy` for one of them while a "
            f"real S3 client, botocore {version('botocore')} with `max_attempts = 1` (no retries), loops an "
            "anonymous ListBuckets (`GET /`, Host the certificate's name), each on a new TLS connection "
            "(`Connection: close`). "
            "A failed request is any exception botocore raises (a refused connection, a failed handshake, a "
            "connection closed mid-answer) or any answer but radosgw's 200. The gap is the longest time "
            "between two successful requests, from 10 successes before the deploy to 10 after; requests come "
            "back to back, so a gap of a few tens of milliseconds is the client's own pace.",
            "",
            *table,
            "",
            f"radosgw was restarted {restarts} times in all, once per `restart` rotation; HAProxy's and nginx's "
            "PIDs never changed. A refused connection fails at once, so during a restart the client fails many "
            "times in a row: the count of failures grows with the client's pace, the longest gap is the outage.",
            "",
            f"**A wave**: the pool's set changes, and every host's cron fires in the same minute. {wave_n} "
            f'HAProxy frontends with `activate = "haproxy"` (no slot) all swapped within {hx_wave:.1f} s; '
            f"{wave_n} gateways restarting with `max_parallel_restarts = 1` took {gw_wave:.1f} s until the last "
            f"served the new certificate ({gw_wave / wave_n:.1f} s per gateway, one after the other, each "
            "refusing connections while it restarts).",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
