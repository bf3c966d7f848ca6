"""`rgwtls deploy --watch` through the real stack: gateways learn of a new set from the issuer's notify, no cron run.

Each watcher is a real process, as systemd would run it, with an interval
far longer than the test: only the notify can wake it. It must survive the
cluster going away and coming back, stop cleanly on SIGTERM, and a watcher
that was SIGKILLed must leave nothing a cron run cannot converge.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devsite.gateway import Gateway
from tests.conftest import Stack, run_cli
from tests.test_issue_e2e import stored_set


class Watcher:
    def __init__(self, gw: Gateway, interval: float = 3600.0) -> None:
        gw.settings["deploy"]["interval"] = interval
        gw.settings["ceph"]["timeout"] = 3.0
        self.gw = gw
        self.log = gw.pem.parent / "watch.log"
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rgwtls", "-v", "deploy", "--watch"],
            stdout=subprocess.DEVNULL,
            stderr=self._out,
            env={**os.environ, "RGWTLS_CONFIG": str(gw.config())},
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


def wait_for(what: str, ready: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not ready():
        assert time.monotonic() - started < timeout, f"{what} did not happen within {timeout}s"
        time.sleep(0.1)
    return time.monotonic() - started


def serves_pool(stack: Stack, gw: Gateway) -> bool:
    from rgwtls.probe import pem_fingerprint

    s = stored_set(stack)
    try:
        return s is not None and gw.served() == pem_fingerprint(str(s["cert_pem"]))
    except OSError:
        return False  # restarting


@pytest.fixture
def fleet(stack: Stack, deploy_keyring: Path, tmp_path: Path) -> Iterator[list[Gateway]]:
    gateways = [Gateway(stack, deploy_keyring, tmp_path / f"rgw{i}", name=f"w{i}") for i in range(2)]
    try:
        yield gateways
    finally:
        for gw in gateways:
            gw.stop()


def test_watching_gateways_serve_a_new_set_seconds_after_issue_with_no_cron_run(
    stack: Stack, fleet: list[Gateway]
) -> None:
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    watchers = [Watcher(gw) for gw in fleet]
    try:
        for w in watchers:
            wait_for("the first deploy", lambda w=w: serves_pool(stack, w.gw), 60)  # type: ignore[misc]
            wait_for("the watch", lambda w=w: w.said("watching pool"), 10)  # type: ignore[misc]
        restarts = [gw.restarts() for gw in fleet]
        res = run_cli(issuer, "issue", "--force")
        assert res.code == 0, res.stderr
        took = wait_for("every gateway serving generation 2", lambda: all(serves_pool(stack, gw) for gw in fleet), 30)
        assert took < 20
        assert [gw.restarts() for gw in fleet] == [r + 1 for r in restarts]
        # A cron run after it has nothing to do.
        for gw in fleet:
            again = run_cli(gw.config(), "deploy")
            assert again.code == 0
            assert again.stderr == ""
    finally:
        codes = [w.stop() for w in watchers]
    # SIGTERM while waiting: a clean stop.
    assert codes == [0, 0]
    for w in watchers:
        assert "stopped by SIGTERM" in w.log.read_text()
        assert "ERROR" not in w.log.read_text()


def test_watcher_survives_the_cluster_going_away_and_coming_back(stack: Stack, fleet: list[Gateway]) -> None:
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    w = Watcher(fleet[0])
    try:
        wait_for("the watch", lambda: w.said("watching pool"), 60)
        wait_for("the first deploy", lambda: serves_pool(stack, fleet[0]), 60)
        with stack.ceph.osd_stopped():
            time.sleep(8)  # past ceph.timeout and the watch's own timeout
        wait_for("the cluster back", lambda: run_cli(issuer, "status").code in (0, 1), 30)
        res = run_cli(issuer, "issue", "--force")
        assert res.code == 0, res.stderr
        wait_for("the new set served", lambda: serves_pool(stack, fleet[0]), 60)
        wait_for("that deploy done", lambda: w.said("installed cog.example.org generation 2"), 30)
        time.sleep(1)  # a watch made again wakes one more run, a no-op
        assert w.proc.poll() is None
    finally:
        assert w.stop() == 0


def test_killed_watcher_leaves_nothing_cron_cannot_converge(stack: Stack, fleet: list[Gateway]) -> None:
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    w = Watcher(fleet[0])
    wait_for("the watch", lambda: w.said("watching pool"), 60)
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
    time.sleep(1.0)  # inside its first connect
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
            wait_for("the first deploy", lambda w=w: serves_pool(stack, w.gw), 60)  # type: ignore[misc]
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
