"""`rgwtls deploy --watch` through the real stack: gateways learn of a new set from the issuer's notify, no cron run.

Each watcher is a real process, as systemd would run it, with an interval
far longer than the test: only the notify can wake it. It must survive the
cluster going away and coming back, stop cleanly on SIGTERM, and a watcher
that was SIGKILLed must leave nothing a cron run cannot converge.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devsite.gateway import Gateway
from devsite.site import POOL
from tests import waits
from tests.conftest import Stack, run_cli
from tests.fleet import gateways
from tests.test_issue_e2e import stored_set


class Watcher:
    def __init__(self, gw: Gateway, interval: float = 3600.0, textfile: Path | None = None) -> None:
        gw.settings["deploy"]["interval"] = interval
        gw.settings["ceph"]["timeout"] = 3.0
        self.gw = gw
        self.log = gw.pem.parent / "watch.log"
        self._out = self.log.open("w")
        metrics = ["--textfile", str(textfile)] if textfile is not None else []
        self.config = gw.config()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rgwtls", "-v", "deploy", "--watch", *metrics],
            stdout=subprocess.DEVNULL,
            stderr=self._out,
            env={**os.environ, "RGWTLS_CONFIG": str(self.config)},
            start_new_session=True,
        )

    def said(self, text: str) -> bool:
        return text in self.log.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        code = self.proc.wait(timeout)
        self._out.close()
        return code


def connecting(pid: int) -> bool:
    """librados' messenger threads run in this process: it is inside a connect (they start with it)."""
    tasks = Path(f"/proc/{pid}/task")
    names = set()
    for task in tasks.iterdir() if tasks.exists() else ():
        with contextlib.suppress(OSError):
            names.add((task / "comm").read_text().strip())
    return "ms_dispatch" in names


def wait_for(what: str, ready: Callable[[], bool], w: Watcher, deploys: int = 1) -> float:
    """Wait for what a watcher's deploys make: each within a deploy's bound; at once if the watcher ends first."""
    return waits.wait_for(
        what,
        ready,
        deploys * waits.deploy_bound(w.config),
        w.proc,
        w.log.read_text,
        f"{deploys} x a deploy's bound" if deploys > 1 else "a deploy's bound",
    )


def serves_pool(stack: Stack, gw: Gateway) -> bool:
    from rgwtls.probe import pem_fingerprint

    s = stored_set(stack)
    try:
        return s is not None and gw.served() == pem_fingerprint(str(s["cert_pem"]))
    except OSError:
        return False  # restarting


@pytest.fixture
def fleet(stack: Stack, deploy_keyring: Path, tmp_path: Path) -> Iterator[list[Gateway]]:
    with gateways(stack, deploy_keyring, tmp_path, 2) as f:
        yield f


@pytest.fixture
def fleet3(stack: Stack, deploy_keyring: Path, tmp_path: Path) -> Iterator[list[Gateway]]:
    with gateways(stack, deploy_keyring, tmp_path, 3) as f:
        yield f


def serves_anything(gw: Gateway) -> bool:
    try:
        return bool(gw.served())
    except OSError:
        return False


def test_watching_gateways_serve_a_new_set_within_the_wave_time_of_issue_with_no_cron_run(
    stack: Stack, fleet3: list[Gateway], tmp_path: Path
) -> None:
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    prom = textfile / "rgwtls_deploy.prom"
    watchers = [Watcher(gw, textfile=textfile if i == 0 else None) for i, gw in enumerate(fleet3)]
    try:
        for w in watchers:
            wait_for("the first deploy", lambda w=w: serves_pool(stack, w.gw), w, len(watchers))  # type: ignore[misc]
            wait_for("the watch", lambda w=w: w.said("watching pool"), w, len(watchers))  # type: ignore[misc]
        # One slot: the wave is the gateways' restarts one after the other, plus the notify and each check.
        wave = sum(gw.rgw.timed_restart() for gw in fleet3)
        restarts = [gw.restarts() for gw in fleet3]
        res = run_cli(issuer, "issue", "--force")
        assert res.code == 0, res.stderr
        took = wait_for(
            "every gateway serving generation 2",
            lambda: all(serves_pool(stack, gw) for gw in fleet3),
            watchers[0],
            len(fleet3),
        )
        # Bounded above by the gateways' own deploy bounds (the wait's); how close it comes to the
        # restarts' sum is bench/'s to measure (bench/revoke_bench.py), not a timed assertion's.
        print(f"the wave took {took:.1f}s, its restarts {wave:.1f}s")
        assert [gw.restarts() for gw in fleet3] == [r + 1 for r in restarts]
        # The watcher wrote its metrics after each run, as the one-shot command does.
        wait_for("the metrics of the second run", lambda: runs_of(prom) >= 2, watchers[0])
        assert metric(prom, "rgwtls_last_run_success", command="deploy") == 1
        # A cron run after it has nothing to do.
        for gw in fleet3:
            again = run_cli(gw.config(), "deploy")
            assert again.code == 0
            assert again.stderr == ""
    finally:
        codes = [w.stop() for w in watchers]
    # SIGTERM while waiting: a clean stop.
    assert codes == [0, 0, 0]
    for w in watchers:
        assert "stopped by SIGTERM" in w.log.read_text()
        assert "ERROR" not in w.log.read_text()


def metric(prom: Path, name: str, **labels: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    if not prom.exists():
        return None
    for family in text_string_to_metric_families(prom.read_text()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def runs_of(prom: Path) -> float:
    return metric(prom, "rgwtls_runs_total", command="deploy", result="success") or 0.0


def test_watcher_that_lost_the_whole_cluster_watches_again_and_the_next_notify_reaches_it(
    stack: Stack, fleet: list[Gateway]
) -> None:
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    w = Watcher(fleet[0])
    try:
        wait_for("the watch", lambda: w.said("watching pool"), w)
        wait_for("the first deploy", lambda: serves_pool(stack, fleet[0]), w)
        # mon and OSD both gone, past ceph.timeout and the watch's own timeout. The OSD
        # comes back last: it cannot boot without the mon.
        with stack.ceph.osd_stopped(), stack.ceph.mon_stopped():
            # Time must pass, and nothing shows it: the watch's own timeout (max(ceph.timeout, 5 s), the
            # product's floor), and one ceph.timeout more for librados' ping to find it gone.
            timeout = w.gw.settings["ceph"]["timeout"]
            time.sleep(max(timeout, 5) + timeout)
            assert serves_anything(fleet[0])  # the gateway serves on through the outage
        # Nothing answers while the whole cluster is down, not even with an error: the watch's
        # loss shows when the cluster comes back and refuses the old watch.
        wait_for("the watch lost", lambda: w.said("watching again"), w)
        wait_for("the cluster back", lambda: run_cli(issuer, "status").code in (0, 1), w)
        res = run_cli(issuer, "issue", "--force")
        assert res.code == 0, res.stderr
        # Its next try connects and deploys: within the watcher's reconnect pause.
        wait_for("the new set served", lambda: serves_pool(stack, fleet[0]), w)
        wait_for("the watch made again", lambda: w.log.read_text().count("watching pool") >= 2, w)
        # The interval is an hour: only the notify on the new watch can bring generation 3 in seconds.
        res = run_cli(issuer, "issue", "--force")
        assert res.code == 0, res.stderr
        took = wait_for("generation 3 served", lambda: serves_pool(stack, fleet[0]), w)
        assert took < 15
        # Served before the run's own line, which follows its check: wait for that line too.
        wait_for("that deploy's line", lambda: w.said("installed cog.example.org generation 3"), w)
        assert w.proc.poll() is None
    finally:
        assert w.stop() == 0


def test_killed_watcher_leaves_nothing_cron_cannot_converge(stack: Stack, fleet: list[Gateway]) -> None:
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    w = Watcher(fleet[0])
    wait_for("the watch", lambda: w.said("watching pool"), w)
    assert w.stop(signal.SIGKILL) == -signal.SIGKILL
    assert run_cli(issuer, "issue", "--force").code == 0
    res = run_cli(fleet[0].config(), "deploy")
    assert res.code == 0, res.stderr
    assert serves_pool(stack, fleet[0])


def test_sigterm_while_the_watcher_cannot_reach_the_cluster_stops_it_instead_of_trying_again(
    stack: Stack, fleet: list[Gateway]
) -> None:
    """A stop during the connect is a stop: systemd must not have to SIGKILL a watcher of a dead cluster."""
    from devsite.ports import free_port

    gw = fleet[0]
    dead = gw.pem.parent / "dead-ceph.conf"
    conf = Path(gw.settings["ceph"]["conf"]).read_text()
    lines = conf.splitlines()
    dead.write_text(
        "".join(f"mon host = [v2:127.0.0.1:{free_port()}]\n" if x.startswith("mon host") else x + "\n" for x in lines)
    )
    gw.settings["ceph"]["conf"] = str(dead)
    w = Watcher(gw)  # its ceph.timeout is 3 s: every connect and deploy ends in that
    wait_for("its first connect", lambda: connecting(w.proc.pid), w)
    started = time.monotonic()
    assert w.stop(timeout=20) == 0
    assert time.monotonic() - started < 8  # the connect's timeout, and the run's own short end
    text = w.log.read_text()
    assert "stopped by SIGTERM" in text, text
    assert "trying again" not in text


def test_issue_with_no_watcher_anywhere_stores_as_before(stack: Stack) -> None:
    issuer = stack.write_config(stack.settings())
    res = run_cli(issuer, "-v", "issue")
    assert res.code == 0, res.stderr
    assert "their cron finds it" in res.stderr  # no announce object yet: nobody ever watched
    assert "WARNING" not in res.stderr


def test_rollout_wait_is_green_once_every_watching_gateway_serves_the_new_set(
    stack: Stack, fleet: list[Gateway]
) -> None:
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    watchers = [Watcher(gw) for gw in fleet]
    try:
        for w in watchers:
            wait_for("the first deploy", lambda w=w: serves_pool(stack, w.gw), w, len(watchers))  # type: ignore[misc]
        # A new set stored without telling anyone (as a run that lost its notify): rollout tells and follows.
        settings = stack.settings()
        assert run_cli(stack.write_config(settings), "issue", "--force").code == 0
        res = run_cli(issuer, "rollout", "--wait", "--timeout", "60")
        assert res.code == 0, res.stderr
        assert "2/2 gateways serve the pool's certificate" in res.stderr
        assert all(serves_pool(stack, gw) for gw in fleet)
    finally:
        for w in watchers:
            w.stop()


def test_rollout_wait_names_the_gateway_whose_restart_fails(stack: Stack, fleet: list[Gateway]) -> None:
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    broken = fleet[1]
    for gw in fleet:
        assert run_cli(gw.config(), "deploy").code == 0
    broken.settings["deploy"]["restart_command"] = "/bin/false"
    watchers = [Watcher(gw) for gw in fleet]
    try:
        assert run_cli(issuer, "issue", "--force").code == 0
        res = run_cli(issuer, "rollout", "--wait", "--timeout", "20")
        assert res.code == 1
        errors = [line for line in res.stderr.splitlines() if line.startswith("ERROR:")]
        assert len(errors) == 1, res.stderr
        assert "1 of 2 gateways do not serve the pool's certificate" in errors[0]
        assert f"({broken.settings['deploy']['verify_endpoint']}): failed" in errors[0]
        assert serves_pool(stack, fleet[0])
    finally:
        for w in watchers:
            w.stop()


def logged_restart(gw: Gateway, log: Path, pause: float) -> str:
    """gw's restart command, wrapped to log when it starts and ends, and made `pause` seconds slower."""
    script = gw.pem.parent / "restart.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "start {gw.name} $(date +%s.%N)" >> {log}\n'
        f"sleep {pause}\n"
        f"{gw.rgw.restart_command}\n"
        "rc=$?\n"
        f'echo "end {gw.name} $(date +%s.%N)" >> {log}\n'
        "exit $rc\n"
    )
    script.chmod(0o755)
    return str(script)


def most_at_once(log: Path) -> int:
    events = sorted(
        (float(t), +1 if what == "start" else -1) for what, _, t in (x.split() for x in log.read_text().splitlines())
    )
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_a_wave_with_two_slots_never_restarts_three_gateways_at_once_and_rollout_shows_who_restarts(
    stack: Stack, fleet3: list[Gateway], tmp_path: Path
) -> None:
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    log = tmp_path / "restarts.log"
    for gw in fleet3:
        gw.settings["deploy"].update(max_parallel_restarts=2, restart_command=logged_restart(gw, log, 2.0))
    watchers = [Watcher(gw) for gw in fleet3]
    try:
        for w in watchers:
            # Its restart command logs its end after the gateway already serves: wait for the run's own line.
            generation_1 = lambda w=w: w.said("installed cog.example.org generation 1")  # noqa: E731
            wait_for("the first deploy", generation_1, w, len(watchers))
        log.write_text("")
        # A set stored without a notify (its issuer's was lost): rollout tells the fleet and follows the wave.
        assert run_cli(stack.write_config(stack.settings()), "issue", "--force").code == 0
        res = run_cli(issuer, "rollout", "--wait", "--timeout", "60")
        assert res.code == 0, res.stderr
        assert "3/3 gateways serve the pool's certificate" in res.stderr
        assert ": restarting (holds a restart slot since " in res.stderr, res.stderr
        for gw in fleet3:
            assert f"rollout: {os.uname().nodename} ({gw.settings['deploy']['verify_endpoint']}): serving" in res.stderr
        assert len(log.read_text().splitlines()) == 6  # each gateway restarted once
        assert most_at_once(log) == 2, log.read_text()  # both slots used, never a third
    finally:
        for w in watchers:
            w.stop()


def deploy_records(stack: Stack) -> Any:
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    ioctx.set_namespace("deploy")
    return ioctx


def test_rollout_knows_a_watcher_from_its_first_run_and_forgets_a_retired_gateway_on_request(
    stack: Stack, fleet: list[Gateway]
) -> None:
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    assert run_cli(fleet[0].config(), "deploy").code == 0
    ioctx = deploy_records(stack)
    try:
        for o in list(ioctx.list_objects()):
            if o.key.startswith("host."):
                ioctx.remove_object(o.key)
        # A gateway whose certificate is current and which never recorded a deploy:
        # its watcher's first run is a no-op, and records it all the same.
        w = Watcher(fleet[0])
        try:
            wait_for("the watch", lambda: w.said("watching pool"), w)
            wait_for("its record", lambda: any(o.key.startswith("host.") for o in ioctx.list_objects()), w)
            # Another host's record, of a gateway retired since: rollout waits for it in vain.
            doc = {
                "host": "gw-retired",
                "endpoint": "10.0.0.9:443",
                "certificate": "cog.example.org",
                "served": "x",
                "ok": True,
                "error": None,
                "at": "2026-01-01T00:00:00+00:00",
            }
            ioctx.write_full("host.gw-retired.10.0.0.9:443", json.dumps(doc).encode())
            res = run_cli(issuer, "rollout", "--wait", "--timeout", "3")
            assert res.code == 1
            assert "1 of 2 gateways do not serve" in res.stderr
            assert "gw-retired (10.0.0.9:443): waiting" in res.stderr.splitlines()[-1]
            res = run_cli(issuer, "rollout", "--forget", "gw-retired")
            assert res.code == 0, res.stderr
            assert res.stderr == "rollout: forgot gw-retired.10.0.0.9:443\n"
            res = run_cli(issuer, "rollout", "--wait", "--timeout", "30")
            assert res.code == 0, res.stderr
            assert "1/1 gateways serve the pool's certificate" in res.stderr
            res = run_cli(issuer, "rollout", "--forget", "gw-retired")
            assert res.code == 1
            assert res.stderr.startswith("ERROR: rollout: no gateway 'gw-retired' has recorded a deploy")
        finally:
            assert w.stop() == 0
    finally:
        ioctx.close()


def test_sigterm_during_a_watchers_deploy_unwinds_it_stops_with_exit_0_and_cron_converges(
    stack: Stack, fleet: list[Gateway], tmp_path: Path
) -> None:
    """systemd's stop mid-restart: the deploy unwinds as any interrupted one, and the stop is a clean stop."""
    gw = fleet[0]
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    assert run_cli(gw.config(), "deploy").code == 0
    restarts = tmp_path / "restarts.log"
    gw.settings["deploy"]["restart_command"] = logged_restart(gw, restarts, 3.0)
    w = Watcher(gw)
    try:
        wait_for("the watch", lambda: w.said("watching pool"), w)
        assert run_cli(issuer, "issue", "--force").code == 0
        wait_for("the restart begun", lambda: "start" in restarts.read_text() if restarts.exists() else False, w)
    finally:
        code = w.stop(timeout=120)
    text = w.log.read_text()
    assert code == 0, text
    assert "deploy --watch: stopped by SIGTERM" in text
    assert "ERROR" not in text
    assert any(line.startswith("WARNING:") for line in text.splitlines()), text
    assert serves_anything(gw)  # never left down
    gw.settings["deploy"]["restart_command"] = gw.rgw.restart_command
    res = run_cli(gw.config(), "deploy")
    assert res.code == 0, res.stderr
    assert serves_pool(stack, gw)
