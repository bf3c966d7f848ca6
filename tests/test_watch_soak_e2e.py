"""The watcher's lifetime: a watch replaced again and again leaves nothing behind and prints no traceback.

A watcher lives for months, and every outage makes it replace its watch.
These tests run one against a cluster of their own (a stalled daemon here
never stalls the session's cluster), in a network namespace of its own
whose link they cut: what broke once after one partition (threads from 14
to 27) or printed a traceback at every replaced watch must stay flat over
many. Each outage lasts until the watch is broken (the watcher's own line
says so, or the OSD no longer lists it), and no longer.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devsite.ceph import CephCluster, ceph_cluster
from devsite.netns import Netns, netns
from devsite.site import DEPLOY_CAPS, to_toml
from tests import waits

OUTAGES = 20
# The watcher's ceph.timeout: every librados wait, its watch's timeout (5 s at least) and a failed close.
TIMEOUT = 3.0
# How long one outage may take to be noticed and one watch to be made again: the watch's timeout, the
# mon's and OSD's own detection and a connect, with room for a loaded machine.
NOTICED = 60.0
TRACEBACKS = ("Traceback", "Exception ignored")
# No set is ever stored: every run ends at once in its one ERROR line, which says the watcher is idle again.
CERT = "soak.example.org"


@dataclass
class Usage:
    threads: int
    fds: int
    rss_kb: int

    @classmethod
    def of(cls, pid: int) -> Usage:
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
        )
        return cls(int(status["Threads"]), len(os.listdir(f"/proc/{pid}/fd")), int(status["VmRSS"].split()[0]))

    def within(self, start: Usage, share: float) -> bool:
        return all(
            now <= then * (1 + share)
            for now, then in ((self.threads, start.threads), (self.fds, start.fds), (self.rss_kb, start.rss_kb))
        )


class Watcher:
    """`rgwtls deploy --watch` as systemd runs it, inside the namespace; its journal is its stderr."""

    def __init__(self, ns: Netns, ceph: CephCluster, keyring: Path, where: Path) -> None:
        settings = {
            "ceph": {
                "conf": str(ceph.conf),
                "user": "client.rgwtls-deploy",
                "keyring": str(keyring),
                "timeout": TIMEOUT,
            },
            # An hour: only an outage wakes it (its reconnect pause is the lesser of this and 30 s).
            "deploy": {
                "interval": 3600.0,
                "state_dir": str(where / "state"),
                "path": str(where / "rgw.pem"),
                "verify_endpoint": "127.0.0.1:9",
            },
            "certificate": [{"name": CERT, "domains": [CERT]}],
        }
        config = where / "rgwtls.toml"
        config.write_text(to_toml(settings))
        config.chmod(0o644)
        self.log = where / "watch.log"
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(
            ns.command([sys.executable, "-m", "rgwtls", "-v", "deploy", "--watch"]),
            stdout=subprocess.DEVNULL,
            stderr=self._out,
            env={**os.environ, "RGWTLS_CONFIG": str(config)},
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text()

    def count(self, line: str) -> int:
        return self.text().count(line)

    def wait_for(self, what: str, ready: Callable[[], bool]) -> None:
        """Until `ready()`, within NOTICED; at once, with the watcher's log, if the watcher ends first."""
        waits.wait_for(what, ready, NOTICED, proc=self.proc, output=self.text)

    def watching(self) -> int:
        return self.count("deploy --watch: watching pool")

    def lost(self) -> int:
        return self.count("; watching again")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        code = self.proc.wait(30)
        self._out.close()
        return code


@pytest.fixture
def soak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Netns, CephCluster, Watcher]]:
    tmp_path = tmp_path_factory.mktemp("w")  # short: the daemons' sockets' paths must fit in 107 bytes
    with netns() as ns, ceph_cluster(tmp_path / "ceph", addr=ns.host_addr) as ceph:
        keyring = ceph.create_user("client.rgwtls-deploy", DEPLOY_CAPS)
        # A messenger that lost its link retries after up to 15 s by default: 1 s here, so that
        # each link cut ends soon after the link is back. The watcher's own settings stay as shipped.
        with ceph.conf.open("a") as f:
            f.write("ms max backoff = 1\n")
        ceph._close_admin()  # the test's own connection would only hunt for the mon in every stall
        where = tmp_path / "gw"
        where.mkdir()
        w = Watcher(ns, ceph, keyring, where)
        try:
            yield ns, ceph, w
        finally:
            w.stop()


def idle(w: Watcher) -> bool:
    """Waiting, with one connection: every watch made was followed by its run's end line."""
    return w.count(f"no certificate {CERT} in pool") >= w.watching()


def replaced(w: Watcher, outage: Callable[[], None], mend: Callable[[], None], broken: Callable[[], bool]) -> None:
    """One outage, from its start until `broken()`; then mended, until the watcher has a new watch and is idle."""
    lost, watching = w.lost(), w.watching()
    outage()
    try:
        w.wait_for("the outage to break the watch", broken)
    finally:
        mend()
    w.wait_for("the watcher noticing", lambda: w.lost() > lost)
    w.wait_for("a new watch", lambda: w.watching() > watching)
    w.wait_for("the run after it", lambda: idle(w))


def watchers(ceph: CephCluster) -> str:
    """The OSD's own list of the watches on the announcements (empty once it dropped the watcher's)."""
    res = subprocess.run(
        [
            *("rados", "-c", str(ceph.conf), "--keyring", str(ceph.admin_keyring), "-p", "rgwtls", "-N", "deploy"),
            *("--client-mount-timeout", "10", "listwatchers", "announce"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return res.stdout.strip()


def test_a_watcher_stays_flat_over_20_cluster_outages_and_20_link_cuts_and_stops_in_one_without_a_traceback(
    soak: tuple[Netns, CephCluster, Watcher],
) -> None:
    ns, ceph, w = soak
    assert ceph.mon.proc is not None
    assert ceph.osd.proc is not None
    mon, osd = ceph.mon.proc.pid, ceph.osd.proc.pid

    def stall() -> None:
        # The mon stopped (SIGSTOP: nothing answers, nothing refuses): the watch breaks within its timeout.
        before = w.lost()
        freeze, thaw = (lambda: waits.sigstop(mon)), (lambda: os.kill(mon, signal.SIGCONT))
        replaced(w, freeze, thaw, lambda: w.lost() > before)

    def cut() -> None:
        # The link down: the watcher notices nothing until it is back, so the cut lasts until the OSD
        # dropped the watch (past its timeout); the watcher then learns that the watch is gone.
        replaced(w, ns.cut, ns.mend, lambda: watchers(ceph) == "")

    w.wait_for("the first watch and its run", lambda: w.watching() >= 1 and idle(w))
    stall()  # warm-up: the first replacements load what every later one uses
    cut()
    start = Usage.of(w.proc.pid)
    took: list[float] = []
    for outage in [stall] * OUTAGES + [cut] * OUTAGES:
        began = time.monotonic()
        outage()
        took.append(time.monotonic() - began)
    end = Usage.of(w.proc.pid)
    print(f"start {start}, end {end}; outages {min(took):.1f}-{max(took):.1f}s, {sum(took):.0f}s in all")
    assert w.watching() == 2 * OUTAGES + 3, w.text()
    assert end.within(start, 0.10), f"{start} -> {end}"
    # Last, a stop in the middle of a whole-cluster outage: no OSD answers the unwatch, and the
    # watcher still ends at once after its timeout, its connection shut down.
    try:
        for pid in (osd, mon):
            waits.sigstop(pid)
        began = time.monotonic()
        code = w.stop()
        stopping = time.monotonic() - began
    finally:
        for pid in (osd, mon):
            os.kill(pid, signal.SIGCONT)
    assert code == 0
    assert stopping < 3 * TIMEOUT + 5, stopping  # the unwatch's timeout, and the shutdown
    text = w.text()
    assert not any(t in text for t in TRACEBACKS), text
    assert "deploy --watch: stopped by SIGTERM" in text


def test_a_watch_whose_close_failed_goes_with_its_connection_and_prints_no_traceback(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The close that fails: the OSD stalled, the unwatch unanswered within the timeout, as in a partition.

    librados cancelled the watch all the same; the binding's handle must then
    neither unwatch it again nor complain from its destructor after the shutdown.
    """
    from rgwtls.config import parse
    from rgwtls.watch import _Watch

    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(f"{u.object}: {u.exc_value!r}"))
    # Its lines as text, kept nowhere else: a kept log record would hold the error, its traceback and
    # so the handle past the test, and its end would not be the watcher's.
    said: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("rgwtls")
    monkeypatch.setattr(logger, "handlers", [handler])
    monkeypatch.setattr(logger, "propagate", False)
    monkeypatch.setattr(logger, "level", logging.DEBUG)
    tmp_path = tmp_path_factory.mktemp("w")  # short: the daemons' sockets' paths must fit in 107 bytes
    with ceph_cluster(tmp_path / "ceph") as ceph:
        keyring = ceph.create_user("client.rgwtls-deploy", DEPLOY_CAPS)
        raw = {
            "ceph": {"conf": str(ceph.conf), "user": "client.rgwtls-deploy", "keyring": str(keyring), "timeout": 3.0},
            "certificate": [{"name": CERT, "domains": [CERT]}],
        }
        watcher = _Watch(parse(raw, tmp_path / "rgwtls.toml"), threading.Event())
        watcher.ensure()
        assert watcher.up
        assert ceph.osd.proc is not None
        # Every thread of it stopped: one still running would answer the unwatch (seen under load).
        try:
            waits.sigstop(ceph.osd.proc.pid)
            watcher.close()
        finally:
            os.kill(ceph.osd.proc.pid, signal.SIGCONT)
    assert not watcher.up
    gc.collect()
    assert unraisable == []
    # The binding prints the traceback through sys.excepthook first, then reports it as unraisable.
    assert not any(t in capsys.readouterr().err for t in TRACEBACKS)
    assert any("librados cancelled it already" in line for line in said), said  # the close did fail, as meant
