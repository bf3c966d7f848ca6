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
import rados

from devsite.bind import Bind
from devsite.ceph import CephCluster, Stat, ceph_cluster
from devsite.gateway import Gateway
from devsite.pebble import Pebble
from devsite.ports import free_port
from devsite.proc import Server
from devsite.site import DEPLOY_CAPS, ISSUER_CAPS, POOL, Stack
from devsite.wapi import WapiEmulator
from tests import waits
from tests.conftest import Result, _empty_pool, run_cli
from tests.test_deploy_e2e import fingerprint_of_pool
from tests.test_deploy_freeze_e2e import stop_deploy_at
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
    """The site's stack, but with the module's own cluster, emptied for this test.

    An earlier test's stall may have left radosgw's control pool taking no
    write: this test's radosgw would hang in its start, so it waits for that first.
    """
    writes_back(own_cluster, WRITES_BACK)
    _empty_pool(own_cluster)
    return Stack(tmp_path, bind, pebble, own_cluster, wapi, own_issuer_keyring)


@contextlib.contextmanager
def stalled(cluster: CephCluster, daemon: Server) -> Iterator[None]:
    """`daemon` stopped with SIGSTOP for the block; continued after it, its pools active again, whatever happened.

    Active, which is reads: writes in radosgw's control pool may stay blocked
    for minutes after (`control_writable`), and nothing here waits for them.
    """
    try:
        waits.sigstop(daemon.pid)
        yield
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
        try:
            cluster.wait_pools_active(120)
        except RuntimeError:
            # A read timed out: the OSD stayed wedged after the stall (seen on a busy machine, in
            # every pool). The runbook's remedy, so that the test's next step and the next test run.
            restart_osd(cluster)


def restart_osd(cluster: CephCluster) -> None:
    cluster.stop_osd()
    cluster.start_osd(120)
    cluster.wait_pools_active(120)


RGW_CONTROL = "default.rgw.control"
# How long a test waits for writes in the control pool to come back by themselves after a stall (the audit
# saw them blocked for over 4 minutes; here, from none to over 10): past it, the OSD is restarted.
WRITES_BACK = 60.0


def control_writable(cluster: CephCluster, within: float) -> bool:
    """Whether the PG of each of radosgw's control objects takes a write within `within` seconds.

    After an OSD stall those PGs may be active and answer reads while writes
    stay blocked for minutes (the audit's slow requests on the control pool):
    a radosgw started then hangs creating its control objects. Each write is
    an object of the test's own beside `notify.N` (its locator key), created
    and removed in one operation, as deploy's probe makes it (rgwtls.health);
    from a handle of its own whose operations time out after `within`.

    The cluster's own pools too (the rgwtls pool, where the restart slots are):
    a wedged OSD was seen blocking writes there as well. Their objects are any,
    so 64 names of the test's own, which reach all of a pool's 8 PGs but for a
    chance of 0.2%.
    """
    handle = cluster.connect(keyring=cluster.admin_keyring, conf={"rados_osd_op_timeout": f"{within:g}"})
    probes = [(pool, f"rgwtls-test-writable.{i}", "") for pool in cluster.pools for i in range(64)]
    if not pool_missing(cluster, RGW_CONTROL):
        probes += [(RGW_CONTROL, f"rgwtls-test-writable.{i}", f"notify.{i}") for i in range(8)]
    try:
        for pool, name, locator in probes:
            with contextlib.closing(handle.open_ioctx(pool)) as ioctx:
                ioctx.set_locator_key(locator)
                try:
                    with rados.WriteOpCtx() as op:
                        op.write_full(b"")
                        op.remove()
                        ioctx.operate_write_op(op, name)
                except rados.TimedOut:
                    return False
    finally:
        handle.shutdown()
    return True


def pool_missing(cluster: CephCluster, pool: str) -> bool:
    return pool not in cluster.admin().list_pools()


def writable_again(cluster: CephCluster, pool: str, bound: float) -> float:
    """Wait until radosgw's control pool takes writes again, within `bound` seconds; how long it took."""
    started = time.monotonic()
    while not control_writable(cluster, 3.0):
        assert time.monotonic() - started < bound, f"{pool} took no write within {bound:g}s"
    return time.monotonic() - started


def writes_back(cluster: CephCluster, wait: float) -> str:
    """radosgw's control pool taking writes again: by itself within `wait` seconds, else by the runbook's remedy.

    Blocked writes did not always end by themselves here (one stall left
    them blocked for over 10 minutes): then the OSD is restarted, as
    docs/runbook.md tells an operator to, and it is bounded by its start.
    """
    started = time.monotonic()
    while not control_writable(cluster, 3.0):
        if time.monotonic() - started > wait:
            restart_osd(cluster)
            writable_again(cluster, RGW_CONTROL, 60)
            return f"blocked for {time.monotonic() - started:.0f}s, until the OSD was restarted"
    return f"back by themselves after {time.monotonic() - started:.0f}s"


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
    """A gateway on the module's cluster; its first start made radosgw's pools there.

    Once, after a stall, every radosgw start hung for minutes (silent after its
    first log lines) while the pools took reads and writes (`own_stack`): the
    runbook's remedy then, restarting the OSD, and one more start, so that an
    earlier test's stall does not fail the tests after it.
    """
    try:
        gw = Gateway(own_stack, own_deploy_keyring, tmp_path / "rgw")
    except RuntimeError as e:
        print(f"radosgw did not start ({str(e).splitlines()[0]}); restarting the OSD")
        restart_osd(own_stack.ceph)
        gw = Gateway(own_stack, own_deploy_keyring, tmp_path / "rgw-again")
    yield gw
    gw.stop()


CONTROL = "default.rgw.control"


def _pool_set(cluster: CephCluster, pool: str, var: str, val: str) -> None:
    cluster.mon_command({"prefix": "osd pool set", "pool": pool, "var": var, "val": val, "yes_i_really_mean_it": True})


class ControlStats:
    """Stats of radosgw's control objects through the admin handle, in flight as long as they need.

    A stat of an inactive PG waits until it is active again: its I/O context
    is closed only once every stat made through it has ended (`Stat`).
    """

    def __init__(self, cluster: CephCluster, pool: str) -> None:
        self._ioctx = cluster.admin().open_ioctx(pool)
        self._pending: list[Stat] = []

    def answered(self, within: float) -> bool:
        """Whether a stat of each of `notify.0` to `notify.7` is answered within `within` seconds."""
        asked = [Stat(self._ioctx, f"notify.{i}") for i in range(8)]
        self._pending += asked
        deadline = time.monotonic() + within
        return all(stat.answered.wait(max(0.0, deadline - time.monotonic())) for stat in asked)

    def close(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for stat in self._pending:
            assert stat.answered.wait(max(0.0, deadline - time.monotonic())), "a stat never ended"
            stat.result()
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
    """The run right after the stall restarts and serves, or refuses while radosgw's pools take no write: no hang."""
    served, pem, pid = renewed(own_stack, own_gateway)
    with stalled(own_stack.ceph, own_stack.ceph.osd):
        res = run_cli(own_gateway.config(), "deploy")
        assert res.code == 1, res.stderr
        assert own_gateway.rgw.supervisor("pid") == pid
        assert own_gateway.served() == served
        assert own_gateway.restarts() == 1
    assert own_gateway.pem.read_bytes() == pem
    again = run_cli(own_gateway.config(), "deploy")
    if again.code != 0:
        assert_refused_with_radosgw_serving(own_gateway, again, served, pem, pid)
        print(f"radosgw's control pool: writes {writes_back(own_stack.ceph, WRITES_BACK)}")
        again = run_cli(own_gateway.config(), "deploy")
    assert again.code == 0, again.stderr
    assert own_gateway.served() == fingerprint_of_pool(own_stack)
    assert own_gateway.restarts() == 2


def assert_refused_with_radosgw_serving(gateway: Gateway, res: Result, served: str, pem: bytes, pid: str) -> None:
    """One line: radosgw's pools take no write, or do not answer; radosgw untouched, serving what it served."""
    assert_one_error_line(
        res,
        "radosgw's pool",
        "a new radosgw could not start, so nothing was installed",
        f"the gateway keeps serving certificate {served[:16]}",
        "the next run tries again",
    )
    assert "takes no write" in res.stderr or "does not answer" in res.stderr, res.stderr
    assert gateway.rgw.supervisor("pid") == pid
    assert gateway.served() == served
    assert gateway.pem.read_bytes() == pem
    assert gateway.restarts() == 1


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


def test_deploy_whose_write_probe_the_osd_stops_answering_after_its_reads_did_restarts_nothing_and_the_next_run_does(
    own_stack: Stack, own_gateway: Gateway
) -> None:
    """Reads answered, then writes in radosgw's control pool did not: refused, on demand (the stall's case at random).

    The deploy stops itself right before the probe's first write (tests/freeze.py); the OSD is stalled then.
    """
    served, pem, pid = renewed(own_stack, own_gateway)
    proc = stop_deploy_at(own_gateway.config(), "before the write probe")
    try:
        with stalled(own_stack.ceph, own_stack.ceph.osd):
            os.kill(proc.pid, signal.SIGCONT)
            _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    res = Result(proc.returncode, "", err)
    assert_refused_with_radosgw_serving(own_gateway, res, served, pem, pid)
    host = os.uname().nodename
    assert (
        f"radosgw's pool {RGW_CONTROL} takes no write (a write of rgwtls-probe.{host}.0 beside notify.0: timed out"
        in err
    ), err
    print(f"radosgw's control pool: writes {writes_back(own_stack.ceph, WRITES_BACK)}")
    again = run_cli(own_gateway.config(), "deploy")
    assert again.code == 0, again.stderr
    assert own_gateway.served() == fingerprint_of_pool(own_stack)
    assert own_gateway.restarts() == 2
    # What the probes wrote, they removed: radosgw's own objects only.
    with contextlib.closing(own_stack.ceph.admin().open_ioctx(RGW_CONTROL)) as ioctx:
        names = {o.key for o in ioctx.list_objects()}
    assert names == {f"notify.{i}" for i in range(8)}, names


def test_deploy_user_that_may_only_read_radosgws_control_pool_restarts_after_one_warning_its_reads_checked(
    own_stack: Stack, own_gateway: Gateway
) -> None:
    """The caps of before the write probe: its stats run, its writes are one WARNING, and the restart goes ahead."""
    keyring = own_stack.ceph.create_user(
        "client.rgwtls-deploy-readonly",
        {
            "mon": "allow r",
            "osd": DEPLOY_CAPS["osd"].replace("allow rw pool=default.rgw.control", f"allow r pool={CONTROL}"),
        },
    )
    own_gateway.settings["ceph"].update(user="client.rgwtls-deploy-readonly", keyring=str(keyring))
    renewed(own_stack, own_gateway)
    res = run_cli(own_gateway.config(), "deploy")
    assert res.code == 0, res.stderr
    warnings = [line for line in res.lines if line.startswith("WARNING:")]
    assert warnings == [
        "WARNING: whether a new radosgw could start is not checked before this restart: "
        f"client.rgwtls-deploy-readonly may not write in pool {CONTROL}, so its writes are not checked "
        f"(make its cap there 'allow rw pool={CONTROL}', docs/deploy.md); the restart goes ahead"
    ], res.stderr
    assert own_gateway.served() == fingerprint_of_pool(own_stack)
