"""A stalled cluster, through the real stack: SIGSTOP of the OSD or the mon of a cluster of these tests' own.

A stopped daemon answers nothing and closes nothing: librados waits for it
up to its own timeouts, and sometimes past them. The session's cluster is
never stalled; the cluster here is started once for the module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devsite.bind import Bind
from devsite.ceph import CephCluster, ceph_cluster
from devsite.pebble import Pebble
from devsite.proc import Server
from devsite.site import ISSUER_CAPS, POOL, Stack
from devsite.wapi import WapiEmulator
from tests.conftest import Result, _empty_pool


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephCluster]:
    with ceph_cluster(tmp_path_factory.mktemp("own-ceph"), pools=(POOL,)) as c:
        yield c


@pytest.fixture(scope="module")
def own_issuer_keyring(own_cluster: CephCluster) -> Path:
    return own_cluster.create_user("client.rgwtls-issuer", ISSUER_CAPS)


@pytest.fixture
def own_stack(
    tmp_path: Path, bind: Bind, pebble: Pebble, own_cluster: CephCluster, wapi: WapiEmulator, own_issuer_keyring: Path
) -> Stack:
    """The site's stack, but with the module's own cluster, emptied for this test."""
    _empty_pool(own_cluster)
    return Stack(tmp_path, bind, pebble, own_cluster, wapi, own_issuer_keyring)


@contextlib.contextmanager
def stalled(cluster: CephCluster, daemon: Server) -> Iterator[None]:
    """`daemon` stopped with SIGSTOP for the block; continued after it, its pools active again, whatever happened."""
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
        cluster.wait_pools_active(120)


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """A port that accepts connections and never says a word: a TLS handshake with it waits for its timeout."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def timed_check(config: Path, *args: str) -> tuple[Result, float]:
    """`rgwtls check` as NRPE runs it; how long from its exec to its exit."""
    started = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "rgwtls", "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RGWTLS_CONFIG": str(config)},
        check=False,
    )
    return Result(res.returncode, res.stdout, res.stderr), time.monotonic() - started


def check_config(stack: Stack, endpoint: str) -> Path:
    """The shipped ceph.timeout, 10 s: longer than NRPE's 10 s once librados overruns it."""
    settings = stack.settings()
    settings["ceph"]["timeout"] = 10.0
    settings["deploy"].update(verify_endpoint=endpoint, verify_timeout=30.0)
    return stack.write_config(settings, "check.toml")


def test_check_answers_unknown_within_its_default_8s_while_the_osd_and_the_gateway_hang(own_stack: Stack) -> None:
    with silent_endpoint() as endpoint, stalled(own_stack.ceph, own_stack.ceph.osd):
        res, took = timed_check(check_config(own_stack, endpoint))
    assert res.code == 3, (res.stdout, res.stderr)
    assert took < 8.0, took
    assert res.stdout.startswith("RGWTLS UNKNOWN - no answer within 8s (--timeout)"), res.stdout
    assert len(res.stdout.splitlines()) == 1, res.stdout


@pytest.mark.parametrize("daemon", ["osd", "mon"])
def test_check_answers_unknown_within_its_timeout_while_the_osd_or_the_mon_is_stalled(
    own_stack: Stack, daemon: str
) -> None:
    # No gateway answers here at all: the handshake fails at once, the cluster is all that hangs.
    with socket.create_server(("127.0.0.1", 0)) as closed:
        endpoint = f"127.0.0.1:{closed.getsockname()[1]}"
    with stalled(own_stack.ceph, getattr(own_stack.ceph, daemon)):
        res, took = timed_check(check_config(own_stack, endpoint), "--timeout", "5")
    assert res.code == 3, (res.stdout, res.stderr)
    assert took < 5.0, took
    assert res.stdout.startswith("RGWTLS UNKNOWN - "), res.stdout
    assert len(res.stdout.splitlines()) == 1, res.stdout


def test_check_answers_as_before_when_nothing_hangs(own_stack: Stack) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        endpoint = f"127.0.0.1:{closed.getsockname()[1]}"
    res, took = timed_check(check_config(own_stack, endpoint))
    assert res.code == 2, (res.stdout, res.stderr)
    assert "no certificate in the pool" in res.stdout, res.stdout
    assert took < 8.0, took
