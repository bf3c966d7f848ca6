"""Benchmark `rgwtls revoke`: from the command to every gateway serving the new key, against cron every 5 minutes.

The whole local site (BIND, Pebble, the WAPI emulator, one Ceph cluster):
`rgwtls revoke --reason keyCompromise` issues the replacement through
Pebble, records the old certificate, notifies the fleet and revokes at
Pebble once every gateway serves the new key. Two fleets of N gateways,
each in `deploy --watch`:

1. N HAProxy frontends before one radosgw, swapping in memory
   (`activate = "haproxy"`, no restart slot): the issue's target is 15 s.
2. N radosgw gateways restarting for real with `max_parallel_restarts = 1`:
   the issue's target is 60 s.

Each round is timed from the start of `rgwtls revoke` to the moment the
bench's own handshakes find the new certificate on every gateway, and the
time the replacement reached the pool is noted on the way. Beside each
fleet, what the same fleet takes with cron every 5 minutes instead of
watchers: the replacement's time to the pool, plus N cron jobs started at
once after it (measured: cron's best case, every job firing the moment the
set is stored), plus the wait for the last of N gateways' next run, which no
measurement shortens: N/(N+1) of 300 s on average for jobs at random minutes.

    .venv/bin/python -m bench.revoke_bench [--gateways N] [--rounds N] [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.harness import compile_sources, update_docs
from bench.watch_bench import HOST, Watcher, wait_until
from devsite.ceph import RadosGW, start_radosgw
from devsite.haproxy import HAProxy
from devsite.local import LocalSite, local_site
from devsite.site import DEPLOY_CAPS, ZONE
from rgwtls.config import CephConfig
from rgwtls.probe import pem_fingerprint, served_fingerprint
from rgwtls.store import Pool

RGWTLS = str(Path(sys.executable).with_name("rgwtls"))
CRON_PERIOD = 300.0


class Fleet:
    """N gateways of one kind: their deploy configs and the ports a client reaches them on."""

    def __init__(self, kind: str, configs: list[Path], ports: list[int], stop: Callable[[], None]) -> None:
        self.kind, self.configs, self.ports, self.stop = kind, configs, ports, stop

    def serving(self, fp: str) -> bool:
        return all(_serves(p, fp) for p in self.ports)


def _serves(port: int, fp: str) -> bool:
    try:
        return served_fingerprint(f"127.0.0.1:{port}", HOST, 5) == fp
    except OSError:
        return False


def gateway_config(site: LocalSite, work: Path, name: str, keyring: str, deploy: dict[str, Any]) -> Path:
    settings = site.stack.settings()
    settings["ceph"].update(user="client.rgwtls-deploy", keyring=keyring)
    settings["deploy"] = {
        "verify_timeout": 30.0,
        "restart_wait": 900.0,
        "interval": 3600.0,  # only the notify wakes a watcher within the bench
        "state_dir": str(work / f"state-{name}"),
        "trusted_roots": settings["deploy"]["trusted_roots"],
        **deploy,
    }
    return site.stack.write_config(settings, f"deploy-{name}.toml")


def haproxy_fleet(site: LocalSite, work: Path, n: int, keyring: str) -> Fleet:
    fronts = [HAProxy(work / f"hx{i}", site.rgw.port).start() for i in range(n)]
    configs = [
        gateway_config(site, work, f"hx{i}", keyring, {**f.deploy_settings(), "restart_command": "false"})
        for i, f in enumerate(fronts)
    ]

    def stop() -> None:
        for f in fronts:
            f.stop()

    return Fleet("haproxy", configs, [f.port for f in fronts], stop)


def restart_fleet(site: LocalSite, work: Path, n: int, keyring: str) -> Fleet:
    from bench.rotation_bench import own_pem

    ceph = site.stack.ceph
    work.mkdir(parents=True, exist_ok=True)
    gws: list[RadosGW] = []
    try:
        for i in range(n):
            gws.append(
                start_radosgw(ceph, work / f"rgw{i}", own_pem(work / f"rgw{i}.pem"), name=f"b{i}", supervised=True)
            )
    except BaseException:
        for g in gws:
            g.stop()
        raise
    configs = [
        gateway_config(
            site,
            work,
            f"rgw{i}",
            keyring,
            {
                "path": str(g.pem),
                "restart_command": g.restart_command,
                "verify_endpoint": f"127.0.0.1:{g.port}",
                "max_parallel_restarts": 1,
            },
        )
        for i, g in enumerate(gws)
    ]

    def stop() -> None:
        for g in gws:
            g.stop()
            with contextlib.suppress(ValueError):
                ceph.gateways.remove(g)

    return Fleet("restart", configs, [g.port for g in gws], stop)


def current_fp(pool: Pool) -> str:
    s = pool.read_set(ZONE)
    return pem_fingerprint(s.cert_pem) if s is not None else ""


def revoke_round(site: LocalSite, pool: Pool, fleet: Fleet, logs: Path, name: str) -> dict[str, float]:
    """One `revoke --again`, timed to the replacement in the pool and to every gateway serving it."""
    old = current_fp(pool)
    err = (logs / f"{name}.err").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(
        [RGWTLS, "revoke", "--reason", "keyCompromise", "--again", "--timeout", "300"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=err,
        env={**os.environ, "RGWTLS_CONFIG": str(site.issuer_config)},
        start_new_session=True,
    )
    try:
        wait_until("the replacement in the pool", lambda: current_fp(pool) != old, 300)
        stored = time.monotonic() - started
        new = current_fp(pool)
        wait_until("every gateway serving the new key", lambda: fleet.serving(new), 600, 0.05)
        served = time.monotonic() - started
        code = proc.wait(600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()
    if code != 0:
        raise SystemExit(f"bench: revoke exited {code}: {(logs / f'{name}.err').read_text()[-800:]}")
    return {"stored": stored, "served": served, "revoke": time.monotonic() - started}


def cron_best_case(site: LocalSite, pool: Pool, fleet: Fleet, logs: Path, name: str) -> float:
    """A revoke with no watcher (--timeout 0), then every gateway's cron job at once: seconds to all serving."""
    res = subprocess.run(
        [RGWTLS, "revoke", "--reason", "keyCompromise", "--again", "--timeout", "0"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env={**os.environ, "RGWTLS_CONFIG": str(site.issuer_config)},
        check=False,
    )
    (logs / f"{name}-revoke.err").write_bytes(res.stderr)
    new = current_fp(pool)
    if res.returncode != 1 or fleet.serving(new):
        raise SystemExit(
            f"bench: a revoke with no watcher did not leave the fleet behind: {res.stderr.decode()[-800:]}"
        )
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [RGWTLS, "deploy"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(logs / f"{name}-{i}.err").open("wb"),
            env={**os.environ, "RGWTLS_CONFIG": str(config)},
            start_new_session=True,
        )
        for i, config in enumerate(fleet.configs)
    ]
    codes = [p.wait(600) for p in procs]
    took = time.monotonic() - started
    if any(codes) or not fleet.serving(new):
        raise SystemExit(f"bench: a cron deploy failed ({codes}); see {logs}")
    # The same command again finishes that revoke (every gateway serves it now): the next --again starts anew.
    done = subprocess.run(
        [RGWTLS, "revoke", "--reason", "keyCompromise", "--timeout", "60"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env={**os.environ, "RGWTLS_CONFIG": str(site.issuer_config)},
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench: the revoke after the cron deploys did not finish: {done.stderr.decode()[-500:]}")
    return took


def measure(site: LocalSite, pool: Pool, fleet: Fleet, logs: Path, rounds: int) -> dict[str, list[float]]:
    for config in fleet.configs:
        subprocess.run(
            [RGWTLS, "deploy"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env={**os.environ, "RGWTLS_CONFIG": str(config)},
            check=True,
        )
    out: dict[str, list[float]] = {"stored": [], "served": [], "revoke": [], "cron": []}
    watchers = [Watcher(c, logs / f"{fleet.kind}-w{i}.err") for i, c in enumerate(fleet.configs)]
    try:
        for w in watchers:
            wait_until("a watcher's start", lambda w=w: w.said("watching pool") >= 1, 120)
        for n in range(rounds):
            r = revoke_round(site, pool, fleet, logs, f"{fleet.kind}-{n}")
            for k, v in r.items():
                out[k].append(v)
    finally:
        for w in watchers:
            w.stop()
    for n in range(rounds):
        out["cron"].append(cron_best_case(site, pool, fleet, logs, f"{fleet.kind}-cron-{n}"))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    compile_sources()
    parser = argparse.ArgumentParser(prog="python -m bench.revoke_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--gateways", type=int, default=12, help="gateways in each fleet (default 12)")
    parser.add_argument("--rounds", type=int, default=3, help="revokes for each fleet (default 3)")
    parser.add_argument("--no-write", action="store_true", help="print, do not update docs/performance.md")
    args = parser.parse_args(argv)
    began = time.monotonic()
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="rgwtls-revoke-bench-") as tmp:
        work = Path(tmp)
        logs = work / "logs"
        logs.mkdir()
        with local_site(work / "site") as site, contextlib.ExitStack() as stack:
            ceph = site.stack.ceph
            keyring = str(ceph.create_user("client.rgwtls-deploy", DEPLOY_CAPS))
            admin = CephConfig(conf=str(ceph.conf), user="client.admin", keyring=str(ceph.admin_keyring), pool="rgwtls")
            pool = stack.enter_context(Pool(admin))
            subprocess.run(
                [RGWTLS, "issue"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env={**os.environ, "RGWTLS_CONFIG": str(site.issuer_config)},
                check=True,
            )
            for make in (haproxy_fleet, restart_fleet):
                fleet = make(site, work / make.__name__, args.gateways, keyring)
                try:
                    results[fleet.kind] = measure(site, pool, fleet, logs, args.rounds)
                finally:
                    fleet.stop()
                    # The next fleet starts with no known gateway of this one.
                    for obj in pool.names("deploy", "host."):
                        if isinstance(obj, str):
                            pool.remove("deploy", obj)
    took = time.monotonic() - began
    text = section(args, took, results)
    print(text)
    if not args.no_write:
        update_docs("revoke-bench", text)
    return 0


TARGETS = {"haproxy": 15.0, "restart": 60.0}
LABELS = {
    "haproxy": 'HAProxy frontends, hot swap (`activate = "haproxy"`)',
    "restart": "radosgw gateways restarted, `max_parallel_restarts = 1`",
}


def section(args: argparse.Namespace, took: float, results: dict[str, dict[str, list[float]]]) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    med = statistics.median
    n = args.gateways
    wait = CRON_PERIOD * n / (n + 1)
    lines = [
        "## The bad day: `rgwtls revoke` to every gateway serving the new key",
        "",
        f"Measured {when} on {os.cpu_count()} cores, Linux {platform.release()}: Pebble 2.10 issuing and revoking, "
        f"BIND, the WAPI emulator, one Ceph cluster (16.2), {n} gateways in `deploy --watch` per fleet; the whole "
        f"benchmark took {took:.0f} s. Rerun: `.venv/bin/python -m bench.revoke_bench`.",
        "",
        "Each round is `rgwtls revoke --reason keyCompromise` (with `--again` after the first), timed from its start "
        "to the bench's own handshakes finding the new certificate on every gateway; the replacement's time to "
        f"the pool (the order at Pebble, DNS-01 through the WAPI emulator) is part of it. Median of {args.rounds}. "
        "The cron column is what the same fleet takes without watchers: the replacement's time to the pool, plus "
        f"{n} cron jobs started together after it (measured, cron's best case), plus the wait for the last of {n} "
        f"gateways' next run, {n}/{n + 1} of 300 s on average for jobs at random minutes ({wait:.0f} s), which no "
        "measurement shortens.",
        "",
        "| fleet | replacement in the pool | every gateway serves it | target | `revoke` exits (CA revoked) | "
        "cron every 5 minutes, expected |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, r in results.items():
        stored, served = med(r["stored"]), med(r["served"])
        cron = stored + med(r["cron"]) + wait
        lines.append(
            f"| {n} {LABELS[kind]} | {stored:.1f} s | {served:.1f} s | <= {TARGETS[kind]:g} s "
            f"({'met' if served <= TARGETS[kind] else 'missed'}) | {med(r['revoke']):.1f} s | {cron:.0f} s |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
