"""Smoke tests of the test stack's Ceph: a real mon, a memstore OSD and radosgw over HTTPS."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import rados
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.certmaker import make_cert
from tests.stack.ceph import (
    CephCluster,
    RadosGW,
    ceph_cluster,
    peer_certificate,
    processes_using,
    start_radosgw,
)

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
