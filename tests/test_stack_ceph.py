"""Smoke tests of the test stack's Ceph: a real mon, a memstore OSD and radosgw over HTTPS."""

from __future__ import annotations

import datetime as dt
import grp
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import rados
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from devsite.ceph import (
    RGW_GROUP,
    RGW_USER,
    CephCluster,
    RadosGW,
    ceph_cluster,
    give,
    peer_certificate,
    processes_using,
    readable_by,
    start_radosgw,
)
from devsite.certmaker import make_cert
from devsite.gateway import Gateway

pytestmark = pytest.mark.slow

BIG = os.urandom(8192 * 3 + 17)  # more than one default Ioctx.read


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephCluster]:
    with ceph_cluster(tmp_path_factory.mktemp("ceph")) as c:
        yield c
    # Everything this cluster started is gone: no process names its ceph.conf.
    assert not c.mon.running()
    assert not c.osd.running()
    assert not any(gw.running() for gw in c.gateways)
    assert processes_using(c.conf) == []


def _self_signed(workdir: Path, cn: str) -> tuple[Path, bytes]:
    """A PEM with key and self-signed certificate, and the certificate in DER."""
    now = dt.datetime.now(dt.UTC)
    key_pem, cert_pem = make_cert((cn,), now - dt.timedelta(hours=1), now + dt.timedelta(days=1))
    pem = workdir / f"{cn}.pem"
    pem.write_text(key_pem + cert_pem)
    pem.chmod(0o600)
    return pem, x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def supervised(cluster: CephCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadosGW]:
    """One radosgw under rgwsup.py for the module: each start costs seconds."""
    workdir = tmp_path_factory.mktemp("rgw-sup")
    pem, _ = _self_signed(workdir, "sup.test")
    gw = start_radosgw(cluster, workdir / "rgw", pem, name="sup", supervised=True)
    yield gw
    gw.stop()


def _user_of(pid: int) -> str:
    return subprocess.run(
        ["ps", "-o", "user=", "-p", str(pid)], capture_output=True, text=True, check=True
    ).stdout.strip()


def _ids_of(pid: int) -> dict[str, list[str]]:
    """Uid, Gid and Groups lines of /proc/PID/status."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.split() for k, _, v in (line.partition(":") for line in lines) if k in ("Uid", "Gid", "Groups")}


def _wait_serving(gw: RadosGW, timeout: float = 30.0) -> None:
    def handshake() -> bool:
        peer_certificate(gw.port, timeout=1.0)
        return True

    gw.server.wait_until(handshake, timeout, "serving HTTPS again")


def _write_and_read(ioctx: rados.Ioctx, obj: str, data: bytes) -> bytes:
    with rados.WriteOpCtx() as op:
        op.write_full(data)
        ioctx.operate_write_op(op, obj)
    return bytes(ioctx.read(obj, len(data) + 1))


def test_pool_takes_a_write_and_gives_back_more_than_8k_in_one_read(cluster: CephCluster) -> None:
    with cluster.admin().open_ioctx("rgwtls") as ioctx:
        assert _write_and_read(ioctx, "big", BIG) == BIG


def test_restricted_user_can_lock_and_write_in_the_pool(cluster: CephCluster) -> None:
    caps = {"mon": "allow r", "osd": "allow rwx pool=rgwtls"}
    keyring = cluster.create_user("client.rgwtls", caps)
    assert keyring.stat().st_mode & 0o777 == 0o600
    assert cluster.create_user("client.rgwtls", caps).read_text() == keyring.read_text()

    handle = cluster.connect("client.rgwtls", keyring)
    try:
        with handle.open_ioctx("rgwtls") as ioctx:
            ioctx.lock_exclusive("lockme", "issuer", "cookie-1", duration=30)
            assert _write_and_read(ioctx, "lockme", b"locked write") == b"locked write"
            ioctx.unlock("lockme", "issuer", "cookie-1")
    finally:
        handle.shutdown()


def test_osd_restart_keeps_the_data(cluster: CephCluster) -> None:
    with cluster.admin().open_ioctx("rgwtls") as ioctx:
        _write_and_read(ioctx, "survivor", BIG)
    old_pid = cluster.osd.pid
    cluster.stop_osd()
    cluster.start_osd()
    assert cluster.osd.pid != old_pid
    with cluster.admin().open_ioctx("rgwtls") as ioctx:
        assert bytes(ioctx.read("survivor", len(BIG) + 1)) == BIG


def test_radosgw_serves_https_with_the_given_pem_and_restarts(cluster: CephCluster, tmp_path: Path) -> None:
    pem, der = _self_signed(tmp_path, "rgw-a.test")
    gw = start_radosgw(cluster, tmp_path / "rgw-a", pem, name="a")
    assert isinstance(gw, RadosGW)
    assert peer_certificate(gw.port) == der

    old_pid = gw.pid
    gw.restart()
    assert gw.pid != old_pid
    assert gw.certificate() == der
    gw.stop()
    assert not gw.running()


def test_radosgw_start_fails_clearly_when_the_pem_key_does_not_match(cluster: CephCluster, tmp_path: Path) -> None:
    pem_a, _ = _self_signed(tmp_path, "one.test")
    pem_b, _ = _self_signed(tmp_path, "two.test")
    # Key of one, certificate of the other.
    key_a = pem_a.read_text().split("-----BEGIN CERTIFICATE-----")[0]
    cert_b = "-----BEGIN CERTIFICATE-----" + pem_b.read_text().split("-----BEGIN CERTIFICATE-----")[1]
    bad = tmp_path / "bad.pem"
    bad.write_text(key_a + cert_b)
    with pytest.raises(RuntimeError, match="not serving HTTPS") as err:
        start_radosgw(cluster, tmp_path / "rgw-bad", bad, name="bad", timeout=3)
    assert "TLS" in str(err.value)
    assert not cluster.gateways[-1].running()


def test_connect_fails_fast_while_the_mon_is_down(cluster: CephCluster) -> None:
    cluster.stop_mon()
    try:
        started = time.monotonic()
        handle = rados.Rados(
            conffile=str(cluster.conf),
            name="client.admin",
            conf={"keyring": str(cluster.admin_keyring), "client_mount_timeout": "2"},
        )
        try:
            with pytest.raises(rados.Error):
                handle.connect(timeout=2)
        finally:
            handle.shutdown()
        assert time.monotonic() - started < 5
    finally:
        cluster.start_mon()
    assert "rgwtls" in cluster.mon_command({"prefix": "osd pool ls"})


def test_radosgw_reads_its_files_as_root_then_serves_as_the_ceph_user_alone(supervised: RadosGW) -> None:
    pid = supervised.radosgw_pid()
    assert pid != supervised.pid  # radosgw itself, not its supervisor
    assert _user_of(pid) == RGW_USER == supervised.user
    uid, gid = pwd.getpwnam(RGW_USER).pw_uid, grp.getgrnam(RGW_GROUP).gr_gid
    ids = _ids_of(pid)
    assert set(ids["Uid"]) == {str(uid)}  # real, effective, saved, fs: no way back to root
    assert set(ids["Gid"]) == {str(gid)}
    assert ids["Groups"] == []  # not root's group 0, as systemd starts it
    # Its PEM is 0600 root and it serves it: it read it before this drop.
    assert f"set uid:gid to {uid}:{gid} ({RGW_USER}:{RGW_GROUP})" in supervised.log.read_text()
    assert stat.S_IMODE(supervised.keyring.stat().st_mode) == 0o640
    assert supervised.keyring.stat().st_gid == gid


def test_unsupervised_radosgw_runs_as_the_ceph_user_too(cluster: CephCluster, tmp_path: Path) -> None:
    pem, _ = _self_signed(tmp_path, "plain.test")
    gw = start_radosgw(cluster, tmp_path / "rgw", pem, name="plain")
    try:
        assert _user_of(gw.pid) == RGW_USER
    finally:
        gw.stop()


def test_readable_by_gateway_really_reads_as_the_gateway_group(supervised: RadosGW) -> None:
    pem = supervised.workdir / "probe.pem"
    pem.write_text("secret")
    assert not supervised.readable_by_gateway(give(pem, 0o600, "root", "root"))
    assert not supervised.readable_by_gateway(give(pem, 0o640, "root", "root"))
    assert not supervised.readable_by_gateway(give(pem, 0o604, "root", RGW_GROUP))  # others, not the group
    assert supervised.readable_by_gateway(give(pem, 0o640, "root", RGW_GROUP))
    assert supervised.readable_by_gateway(give(pem, 0o400, RGW_USER, "root"))
    assert not readable_by(supervised.workdir / "missing.pem", RGW_USER, RGW_GROUP)


def test_supervisor_finishes_a_restart_whose_client_hung_up_at_once(supervised: RadosGW) -> None:
    before, count = supervised.radosgw_pid(), int(supervised.supervisor("count"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(supervised.sup_sock))
        s.sendall(b"restart")
    # Answered after the restart: the supervisor takes one request at a time.
    assert int(supervised.supervisor("count")) == count + 1
    assert supervised.running()
    assert supervised.radosgw_pid() != before
    _wait_serving(supervised)
    assert _user_of(supervised.radosgw_pid()) == RGW_USER


def test_two_restarts_asked_at_once_are_done_one_after_the_other(supervised: RadosGW) -> None:
    count = int(supervised.supervisor("count"))
    ctls = [subprocess.Popen(supervised.restart_command.split(), stdout=subprocess.PIPE, text=True) for _ in range(2)]
    answers = [c.communicate(timeout=120)[0].split() for c in ctls]
    assert [c.returncode for c in ctls] == [0, 0]
    # Each was answered with the radosgw its restart started: two, the last one running.
    assert answers[0][0] == answers[1][0] == "ok"
    assert answers[0][1] != answers[1][1]
    assert int(supervised.supervisor("count")) == count + 2
    started = {int(answers[0][1]), int(answers[1][1])}
    assert supervised.radosgw_pid() in started
    # The one the second restart stopped is reaped, not left a zombie.
    assert not Path(f"/proc/{(started - {supervised.radosgw_pid()}).pop()}").exists()
    _wait_serving(supervised)


def test_supervisor_finishes_a_restart_whose_ctl_was_killed_during_it(supervised: RadosGW) -> None:
    before, count = supervised.radosgw_pid(), int(supervised.supervisor("count"))
    log_start = supervised.log.stat().st_size
    # As a deploy's restart command runs it, in the deploy's process group.
    ctl = subprocess.Popen(supervised.restart_command.split(), stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        # The old radosgw got its SIGTERM: the restart is under way.
        while "received  signal: Terminated" not in supervised.log.read_text()[log_start:]:
            assert ctl.poll() is None, "ctl returned before the restart was seen under way"
            assert time.monotonic() < deadline, "the restart did not begin"
            time.sleep(0.01)
        os.killpg(ctl.pid, signal.SIGKILL)
    finally:
        ctl.kill()
        ctl.wait()
    assert ctl.returncode == -signal.SIGKILL
    assert int(supervised.supervisor("count")) == count + 1
    assert supervised.radosgw_pid() != before
    _wait_serving(supervised)


def test_gateway_pem_starts_as_a_site_keeps_it_readable_by_the_gateway_group(gateway: Gateway) -> None:
    st = gateway.pem.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, grp.getgrnam(gateway.group).gr_gid)
    assert gateway.user == RGW_USER
    assert gateway.readable_by_gateway(gateway.pem)
    gateway.pem.chmod(0o600)
    assert not gateway.readable_by_gateway(gateway.pem)


_HOLD_A_CONNECTION = """
import sys, time, rados
conf, name, keyring = sys.argv[1:]
handle = rados.Rados(conffile=conf, name=name, conf={"keyring": keyring})
handle.connect(timeout=10)
print("connected", flush=True)
sys.stdin.read()  # until the test has both connected
handle.shutdown()
"""


def test_two_clients_of_one_user_at_once_print_nothing_about_their_admin_sockets(cluster: CephCluster) -> None:
    keyring = cluster.create_user("client.twice", {"mon": "allow r"})
    argv = [sys.executable, "-c", _HOLD_A_CONNECTION, str(cluster.conf), "client.twice", str(keyring)]
    procs = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline() == "connected\n"  # both hold a connection now
    finally:
        outs = [p.communicate(timeout=30) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "AdminSocket" not in err
        assert err == ""
