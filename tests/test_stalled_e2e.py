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
from devsite.gateway import Gateway
from devsite.pebble import Pebble
from devsite.ports import free_port
from devsite.proc import Server
from devsite.site import DEPLOY_CAPS, ISSUER_CAPS, POOL, Stack
from devsite.wapi import WapiEmulator
from tests.conftest import Result, _empty_pool, run_cli
from tests.test_deploy_e2e import fingerprint_of_pool
from tests.test_deploy_guard_e2e import renewed
from tests.test_issue_e2e import assert_one_error_line


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephCluster]:
    with ceph_cluster(tmp_path_factory.mktemp("own-ceph"), pools=(POOL,)) as c:
        yield c


@pytest.fixture(scope="module")
def own_issuer_keyring(own_cluster: CephCluster) -> Path:
    return own_cluster.create_user("client.rgwtls-issuer", ISSUER_CAPS)


@pytest.fixture(scope="module")
def own_deploy_keyring(own_cluster: CephCluster) -> Path:
    return own_cluster.create_user("client.rgwtls-deploy", DEPLOY_CAPS)


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
        writable_again(cluster, RGW_CONTROL, 120)


RGW_CONTROL = "default.rgw.control"


def writable_again(cluster: CephCluster, pool: str, bound: float) -> None:
    """Wait until `pool` takes a write again, as a starting radosgw's first writes need.

    After an OSD stall its PGs may be active and answer reads while writes stay
    blocked for a while (the audit's slow requests on the control pool): a
    radosgw started then hangs in its start-up, and so does the next test's.
    Each try is `rados put` with a deadline of its own, killed by its handle.
    """
    if pool not in cluster.admin().list_pools():
        return
    argv = ["rados", "-c", str(cluster.conf), "-k", str(cluster.admin_keyring), "-n", "client.admin"]
    argv += ["-p", pool, "put", "rgwtls-test-writable", "/dev/null"]
    deadline = time.monotonic() + bound
    while True:
        try:
            if subprocess.run(argv, capture_output=True, timeout=3, check=False).returncode == 0:
                return
        except subprocess.TimeoutExpired:
            pass
        assert time.monotonic() < deadline, f"{pool} took no write within {bound:g}s of the stall's end"


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """A port that accepts connections and never says a word: a TLS handshake with it waits for its timeout."""
    listener = socket.create_server(("127.0.0.1", free_port()))
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


# -- deploy: no restart into a cluster where a new radosgw could not start ---------------------------------------


@pytest.fixture
def own_gateway(own_stack: Stack, own_deploy_keyring: Path, tmp_path: Path) -> Iterator[Gateway]:
    """A gateway on the module's cluster; its first start made radosgw's pools there."""
    gw = Gateway(own_stack, own_deploy_keyring, tmp_path / "rgw")
    yield gw
    gw.stop()


CONTROL = "default.rgw.control"


def _pool_set(cluster: CephCluster, pool: str, var: str, val: str) -> None:
    cluster.mon_command({"prefix": "osd pool set", "pool": pool, "var": var, "val": val, "yes_i_really_mean_it": True})


class ControlStats:
    """Stats of radosgw's control objects through the admin handle, in flight as long as they need.

    A stat of an inactive PG waits until it is active again: its I/O context
    is closed only once every stat made through it has ended (closing it
    under a pending completion crashes the process).
    """

    def __init__(self, cluster: CephCluster, pool: str) -> None:
        self._ioctx = cluster.admin().open_ioctx(pool)
        self._pending: list[threading.Event] = []

    def answered(self, within: float) -> bool:
        """Whether a stat of each of `notify.0` to `notify.7` is answered within `within` seconds."""
        asked = [threading.Event() for _ in range(8)]
        for i, done in enumerate(asked):
            self._ioctx.aio_stat(f"notify.{i}", lambda *_, done=done: done.set())
        self._pending += asked
        deadline = time.monotonic() + within
        return all(done.wait(max(0.0, deadline - time.monotonic())) for done in asked)

    def close(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for done in self._pending:
            assert done.wait(max(0.0, deadline - time.monotonic())), "a stat never ended"
        self._ioctx.close()


@contextlib.contextmanager
def inactive(cluster: CephCluster, pool: str) -> Iterator[None]:
    """`pool`'s PGs not active for the block (two copies wanted, one OSD to hold them): its operations wait.

    The mon answers, and so does the rgwtls pool: what the audit saw after an
    OSD stall, ops blocked on default.rgw.control while the rest answered.
    """
    stats = ControlStats(cluster, pool)
    try:
        _pool_set(cluster, pool, "size", "2")
        _pool_set(cluster, pool, "min_size", "2")
        try:
            deadline = time.monotonic() + 30
            while stats.answered(1.0):
                assert time.monotonic() < deadline, f"{pool} stays active"  # peering takes a moment
            yield
        finally:
            _pool_set(cluster, pool, "min_size", "1")
            _pool_set(cluster, pool, "size", "1")
            deadline = time.monotonic() + 60
            while not stats.answered(1.0):
                assert time.monotonic() < deadline, f"{pool} never active again"
    finally:
        stats.close(60)


def test_deploy_does_not_restart_while_radosgws_control_pool_does_not_answer_and_the_next_run_does(
    own_stack: Stack, own_gateway: Gateway
) -> None:
    served, pem, pid = renewed(own_stack, own_gateway)
    with inactive(own_stack.ceph, CONTROL):
        started = time.monotonic()
        res = run_cli(own_gateway.config(), "deploy")
        took = time.monotonic() - started
        assert_one_error_line(
            res,
            f"radosgw's pool {CONTROL} does not answer (a stat of notify.0: timed out",
            "a new radosgw could not start, so nothing was installed",
            f"the gateway keeps serving certificate {served[:16]}",
            "the next run tries again",
        )
        assert took < 30, took
        # The running radosgw serves on, untouched.
        assert own_gateway.rgw.supervisor("pid") == pid
        assert own_gateway.served() == served
        assert own_gateway.pem.read_bytes() == pem
        assert own_gateway.restarts() == 1
    again = run_cli(own_gateway.config(), "deploy")
    assert again.code == 0, again.stderr
    assert own_gateway.served() == fingerprint_of_pool(own_stack)
    assert own_gateway.restarts() == 2


def test_deploy_with_the_osd_stalled_leaves_radosgw_serving_and_the_next_run_restarts(
    own_stack: Stack, own_gateway: Gateway
) -> None:
    served, pem, pid = renewed(own_stack, own_gateway)
    with stalled(own_stack.ceph, own_stack.ceph.osd):
        res = run_cli(own_gateway.config(), "deploy")
        assert res.code == 1, res.stderr
        assert own_gateway.rgw.supervisor("pid") == pid
        assert own_gateway.served() == served
        assert own_gateway.restarts() == 1
    assert own_gateway.pem.read_bytes() == pem
    again = run_cli(own_gateway.config(), "deploy")
    assert again.code == 0, again.stderr
    assert own_gateway.served() == fingerprint_of_pool(own_stack)


def test_deploy_user_that_may_not_read_radosgws_pools_restarts_after_one_warning(
    own_stack: Stack, own_gateway: Gateway
) -> None:
    """A site whose deploy user has the caps of before: the probe cannot be made, and the restart goes ahead."""
    keyring = own_stack.ceph.create_user(
        "client.rgwtls-deploy-old",
        {"mon": "allow r", "osd": DEPLOY_CAPS["osd"].split(", allow r pool=.rgw.root")[0]},
    )
    own_gateway.settings["ceph"].update(user="client.rgwtls-deploy-old", keyring=str(keyring))
    renewed(own_stack, own_gateway)
    res = run_cli(own_gateway.config(), "deploy")
    assert res.code == 0, res.stderr
    warnings = [line for line in res.lines if line.startswith("WARNING:")]
    assert len(warnings) == 1, res.stderr
    for needle in (
        "whether a new radosgw could start is not checked before this restart",
        "client.rgwtls-deploy-old may not read pool .rgw.root, default.rgw.control",
        "add 'allow r pool=.rgw.root, allow r pool=default.rgw.control' to its osd caps",
        "the restart goes ahead",
    ):
        assert needle in warnings[0], warnings
    assert own_gateway.served() == fingerprint_of_pool(own_stack)
