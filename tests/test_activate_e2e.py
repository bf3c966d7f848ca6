"""deploy.activate through the real stack: Debian's HAProxy and nginx before a real radosgw, and a reloading server.

The client that loops requests never retries (devsite/getloop.py: botocore
with `total_max_attempts = 1`, a new connection for each request): a rotation
nobody notices is zero failed requests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devsite.certmaker import pem_file
from devsite.gateway import Gateway
from devsite.getloop import GetLoop
from devsite.haproxy import HAProxy
from devsite.nginx import Nginx
from devsite.reloading import ReloadingServer
from devsite.site import DOMAINS
from rgwtls.probe import served_fingerprint
from tests.conftest import ZONE, Stack, run_cli
from tests.runtime import FakeSocket
from tests.test_deploy_e2e import fingerprint_of_pool, issue
from tests.test_issue_e2e import assert_one_error_line, stored_set

# Not on Tentacle: its root has no HAProxy nor nginx (scripts/tentacle installs only what Ceph's tests need).

HOST = f"anybucket.{ZONE}"


@pytest.fixture
def haproxy(gateway: Gateway, tmp_path: Path) -> Iterator[HAProxy]:
    hx = HAProxy(tmp_path / "haproxy", gateway.rgw.port).start()
    yield hx
    hx.stop()


def tls_host_config(gateway: Gateway, hx: HAProxy, **deploy: object) -> Path:
    """The deploy job of the TLS host: HAProxy's PEM and socket; radosgw's restart command, to prove it never runs."""
    gateway.settings["deploy"].update(hx.deploy_settings(), **deploy)
    return gateway.config()


def served_by(port: int) -> str:
    return served_fingerprint(f"127.0.0.1:{port}", HOST, 5)


def pool_pem(stack: Stack) -> str:
    s = stored_set(stack)
    assert s is not None
    return "".join(
        str(s[k]) if str(s[k]).endswith("\n") else str(s[k]) + "\n" for k in ("key_pem", "cert_pem", "chain_pem")
    )


# -- haproxy: the hot swap -------------------------------------------------------------


def test_haproxy_rotation_loses_no_request_keeps_its_pid_and_never_restarts_radosgw(
    stack: Stack, gateway: Gateway, haproxy: HAProxy
) -> None:
    config = tls_host_config(gateway, haproxy)
    pid, rgw_pid = haproxy.pid, gateway.rgw.radosgw_pid()
    issue(stack)
    loop = GetLoop(haproxy.port, HOST).start().wait_for(5)
    try:
        first = run_cli(config, "deploy")
        assert first.code == 0, first.stderr
        assert served_by(haproxy.port) == fingerprint_of_pool(stack)
        issue(stack, "--force")
        second = run_cli(config, "deploy")
        loop.wait_for(5)
    finally:
        tally = loop.stop()
    assert second.code == 0, second.stderr
    assert "served with no restart (haproxy)" in second.stderr
    assert tally.failed == 0, tally.errors[:5]
    assert tally.keepalive_failed == 0
    assert tally.ok >= 15
    # The new certificate served and on disk; the same HAProxy; radosgw never restarted.
    assert served_by(haproxy.port) == fingerprint_of_pool(stack)
    assert haproxy.pem.read_text() == pool_pem(stack)
    assert haproxy.running()
    assert haproxy.pid == pid
    assert gateway.restarts() == 0
    assert gateway.rgw.radosgw_pid() == rgw_pid
    # The next run is a silent no-op.
    again = run_cli(config, "deploy")
    assert again.code == 0
    assert again.stderr == "", again.stderr
    status = run_cli(config, "status")
    assert "haproxy: swapped in memory through" in status.stdout
    assert "2 haproxy" in status.stdout


def test_a_haproxy_restarted_by_someone_else_loads_the_new_file(
    stack: Stack, gateway: Gateway, haproxy: HAProxy
) -> None:
    config = tls_host_config(gateway, haproxy)
    issue(stack)
    assert run_cli(config, "deploy").code == 0
    haproxy.stop()
    haproxy.start()
    assert served_by(haproxy.port) == fingerprint_of_pool(stack)


# -- haproxy: sockets it cannot use, each one line, nothing changed ------------------------------


@pytest.mark.parametrize(
    "problem",
    ["missing socket", "operator socket", "path not loaded"],
)
def test_a_haproxy_socket_that_cannot_swap_is_one_line_and_changes_nothing(
    stack: Stack, gateway: Gateway, haproxy: HAProxy, tmp_path: Path, problem: str
) -> None:
    before_file, before_served = haproxy.pem.read_bytes(), served_by(haproxy.port)
    other = tmp_path / "elsewhere.pem"
    deploy: dict[str, str] = {
        "missing socket": {"haproxy_socket": str(tmp_path / "no-such.sock")},
        "operator socket": {"haproxy_socket": str(haproxy.operator_socket)},
        "path not loaded": {"path": str(other)},
    }[problem]
    config = tls_host_config(gateway, haproxy, **deploy)
    issue(stack)
    res = run_cli(config, "deploy")
    needles = {
        "missing socket": ("no such socket", "level admin", "nothing was changed"),
        "operator socket": ("level operator", "cephadm", "level admin", "nothing was changed"),
        "path not loaded": (f"has not loaded {other}", f"'crt {other}'", str(haproxy.pem), "nothing was changed"),
    }[problem]
    assert_one_error_line(res, *needles)
    assert haproxy.pem.read_bytes() == before_file
    assert not other.exists()
    assert served_by(haproxy.port) == before_served
    assert gateway.restarts() == 0


# -- haproxy: a swap that is not served is swapped back -------------------------------------------


def test_a_haproxy_swap_that_fails_verification_puts_the_old_certificate_back_in_memory_and_on_disk(
    stack: Stack, gateway: Gateway, haproxy: HAProxy, tmp_path: Path
) -> None:
    """verify_endpoint names the VIP, and the VIP is held by the pair's other HAProxy, which still serves the old one.

    The swap is committed on this HAProxy, but the handshake at verify_endpoint
    never sees the new certificate: deploy swaps the previous PEM back into
    memory and puts the previous file back, and the other HAProxy still serving
    the old one is what lets it see the old one served again.
    """
    old_pem, old_served = haproxy.pem.read_bytes(), served_by(haproxy.port)
    peer_pem = tmp_path / "peer.pem"
    peer_pem.write_bytes(old_pem)
    peer_pem.chmod(0o600)
    peer = HAProxy(tmp_path / "peer", gateway.rgw.port, pem=peer_pem).start()
    try:
        assert served_by(peer.port) == old_served
        config = tls_host_config(gateway, haproxy, verify_endpoint=f"127.0.0.1:{peer.port}", verify_timeout=3.0)
        pid, rgw_pid = haproxy.pid, gateway.rgw.radosgw_pid()
        issue(stack)
        res = run_cli(config, "deploy")
    finally:
        peer.stop()
    new = fingerprint_of_pool(stack)
    assert_one_error_line(
        res,
        f"did not serve certificate {new[:16]}",
        "within 3s of HAProxy's commit",
        f"it serves certificate {old_served[:16]}",
        f"put the previous certificate back in {haproxy.pem} and in HAProxy: it is served again",
        "; failed 1 time(s) in a row on this host: the next attempt is after ",
    )
    # HAProxy serves the old certificate again, from the same process; the old file is back on disk.
    assert served_by(haproxy.port) == old_served
    assert haproxy.pem.read_bytes() == old_pem
    assert haproxy.running()
    assert haproxy.pid == pid
    # radosgw was never restarted.
    assert gateway.restarts() == 0
    assert gateway.rgw.radosgw_pid() == rgw_pid
    assert "activations: none yet" in run_cli(config, "status").stdout
    # The next cron run waits out the backoff: no swap, no write.
    again = run_cli(config, "deploy")
    assert again.code == 1
    assert again.lines[-1].startswith("WARNING:"), again.stderr
    assert "failed on this host 1 time(s) in a row" in again.stderr
    assert served_by(haproxy.port) == old_served
    assert haproxy.pem.read_bytes() == old_pem
    assert haproxy.pid == pid


# -- haproxy: a kill between the file write and the commit ---------------------------------------


class HoldingRelay(FakeSocket):
    """A UNIX socket in front of HAProxy's that relays every command but holds `set ssl cert` unanswered."""

    def __init__(self, path: Path, target: Path) -> None:
        self.target = target
        self.held = threading.Event()
        super().__init__(path)

    def handle(self, conn: socket.socket) -> bool:
        conn.settimeout(None)
        data = conn.recv(65536)
        if data.startswith(b"set ssl cert"):
            self.held.set()  # never answered: the run is killed here
            return True
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as up:
            up.connect(str(self.target))
            up.sendall(data)
            while chunk := up.recv(65536):
                conn.sendall(chunk)
        return False


def test_a_deploy_killed_between_the_file_write_and_the_commit_is_finished_by_a_swap(
    stack: Stack, gateway: Gateway, haproxy: HAProxy, tmp_path: Path
) -> None:
    old_served, pid = served_by(haproxy.port), haproxy.pid
    relay = HoldingRelay(tmp_path / "relay.sock", haproxy.admin_socket)
    try:
        config = tls_host_config(gateway, haproxy, haproxy_socket=str(relay.path))
        issue(stack)
        env = {**os.environ, "RGWTLS_CONFIG": str(config)}
        proc = subprocess.Popen([sys.executable, "-m", "rgwtls", "deploy"], env=env, stderr=subprocess.PIPE, text=True)
        try:
            assert relay.held.wait(60), "deploy never reached set ssl cert"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        relay.close()
    # The file is right but not served.
    assert haproxy.pem.read_text() == pool_pem(stack)
    assert served_by(haproxy.port) == old_served
    # The next run swaps it in; nothing restarts.
    config = tls_host_config(gateway, haproxy, haproxy_socket=str(haproxy.admin_socket))
    res = run_cli(config, "deploy")
    assert res.code == 0, res.stderr
    assert "activating it (haproxy)" in res.stderr
    assert served_by(haproxy.port) == fingerprint_of_pool(stack)
    assert haproxy.pid == pid
    assert gateway.restarts() == 0
    assert run_cli(config, "deploy").stderr == ""


# -- self: a server that re-reads its file (a real radosgw that does not: tests/test_self_reload_e2e.py) --


def test_self_against_a_server_that_reloads_is_served_within_the_wait_and_never_restarted(
    stack: Stack, gateway: Gateway, tmp_path: Path
) -> None:
    pem = tmp_path / "standin.pem"
    pem.write_text(pem_file(DOMAINS, days_before=30))
    pem.chmod(0o600)
    marker = tmp_path / "restarted"
    standin = ReloadingServer(tmp_path, pem).start()
    try:
        gateway.settings["deploy"].update(
            activate="self",
            self_reload_wait=15.0,
            path=str(pem),
            verify_endpoint=f"127.0.0.1:{standin.port}",
            restart_command=f"touch {marker}",
        )
        issue(stack)
        res = run_cli(gateway.config(), "deploy")
        assert res.code == 0, res.stderr
        assert "served with no restart (self)" in res.stderr
        assert "did not pick up" not in res.stderr
        assert not marker.exists()
        assert served_by(standin.port) == fingerprint_of_pool(stack)
    finally:
        standin.stop()


# -- nginx: a graceful reload is a restart command too -------------------------------------------


def test_nginx_graceful_reload_as_restart_command_loses_no_request(
    stack: Stack, gateway: Gateway, tmp_path: Path
) -> None:
    nx = Nginx(tmp_path / "nginx", gateway.rgw.port).start()
    try:
        gateway.settings["deploy"].update(
            path=str(nx.pem), restart_command=nx.reload_command, verify_endpoint=f"127.0.0.1:{nx.port}"
        )
        config = gateway.config()
        pid, rgw_pid = nx.pid, gateway.rgw.radosgw_pid()
        issue(stack)
        loop = GetLoop(nx.port, HOST).start().wait_for(5)
        try:
            res = run_cli(config, "deploy")
            loop.wait_for(5)
        finally:
            tally = loop.stop()
        assert res.code == 0, res.stderr
        assert tally.failed == 0, tally.errors[:5]
        assert tally.ok >= 10
        # The new certificate served and on disk; the same nginx master; radosgw never restarted.
        assert served_by(nx.port) == fingerprint_of_pool(stack)
        assert nx.pem.read_text() == pool_pem(stack)
        assert nx.running()
        assert nx.pid == pid
        assert gateway.restarts() == 0
        assert gateway.rgw.radosgw_pid() == rgw_pid
        # The next run is a silent no-op.
        again = run_cli(config, "deploy")
        assert again.code == 0
        assert again.stderr == "", again.stderr
    finally:
        nx.stop()
