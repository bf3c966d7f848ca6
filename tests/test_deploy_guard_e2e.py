"""What deploy asks before it restarts radosgw, through the real stack: a mon that answers, a slot still ours,
and no backoff running for a set that already failed here.

Another gateway holds the only restart slot, by the same RADOS lock a deploy
takes, from a librados handle of its own that survives the mon's stop:
freeing a slot is an OSD operation and needs no mon.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devsite.certmaker import pem_file
from devsite.gateway import Gateway
from devsite.ports import free_port
from rgwtls.config import load
from rgwtls.store import HOLDER_XATTR, NS_DEPLOY, Holder
from tests import waits
from tests.conftest import POOL, Result, Stack, run_cli
from tests.test_deploy_e2e import fingerprint_of_pool, issue
from tests.test_issue_e2e import assert_one_error_line

SLOT, SLOT_LOCK = "restart-slot.0", "rgwtls-restart"


class OtherGateway:
    """Another gateway's deploy holding restart slot 0, through a connection of its own."""

    def __init__(self, stack: Stack) -> None:
        self._handle: Any = stack.ceph.connect(keyring=stack.ceph.admin_keyring)
        self._ioctx: Any = self._handle.open_ioctx(POOL)
        self._ioctx.set_namespace(NS_DEPLOY)

    def take(self, duration: int = 600) -> bool:
        import rados

        try:
            self._ioctx.lock_exclusive(SLOT, SLOT_LOCK, "other-gateway", desc="rgw-elsewhere", duration=duration)
        except rados.ObjectBusy:
            return False
        return True

    def free(self) -> None:
        self._ioctx.unlock(SLOT, SLOT_LOCK, "other-gateway")

    def holder_pid(self) -> int | None:
        import rados

        try:
            holder = Holder.from_bytes(bytes(self._ioctx.get_xattr(SLOT, HOLDER_XATTR)))
        except rados.Error:
            return None
        return None if holder is None else holder.pid

    def close(self) -> None:
        self._ioctx.close()
        self._handle.shutdown()


@pytest.fixture
def other(stack: Stack) -> Iterator[OtherGateway]:
    o = OtherGateway(stack)
    yield o
    o.close()


class Deploy:
    """`rgwtls -v deploy` in the background, its stderr read as it comes."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rgwtls", "-v", "deploy"],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "RGWTLS_CONFIG": str(config)},
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, text: str) -> None:
        """Until the deploy says `text`, within its own bound; at once if it ends first."""
        said = lambda: any(text in line for line in self.lines)  # noqa: E731
        waits.wait_for(repr(text), said, waits.deploy_bound(self.config), self.proc, lambda: "".join(self.lines))

    def result(self, timeout: float = 180) -> Result:
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return Result(self.proc.returncode, "", "".join(self.lines))


def renewed(stack: Stack, gateway: Gateway) -> tuple[str, bytes, str]:
    """Gateway serving generation 1, the pool holding generation 2: what it serves, its file, radosgw's pid."""
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    issue(stack, "--force")
    return gateway.served(), gateway.pem.read_bytes(), gateway.rgw.supervisor("pid")


def test_mon_stopped_while_waiting_for_the_slot_leaves_radosgw_serving_and_the_next_run_converges(
    stack: Stack, gateway: Gateway, other: OtherGateway
) -> None:
    served, pem, pid = renewed(stack, gateway)
    gateway.settings["ceph"]["timeout"] = 3.0
    assert other.take()
    deploy = Deploy(gateway.config())
    try:
        deploy.wait_for("waiting for a restart slot")
        stack.ceph.stop_mon()
        other.free()  # an OSD operation: no mon needed
        res = deploy.result()
    finally:
        stack.ceph.start_mon()
    assert_one_error_line(
        res,
        "ceph: no mon answered within 3s",
        "radosgw would not come back after a restart, so nothing was installed",
        f"the gateway keeps serving certificate {served[:16]}",
        "the next run tries again",
    )
    assert gateway.rgw.supervisor("pid") == pid
    assert gateway.served() == served
    assert gateway.pem.read_bytes() == pem
    assert gateway.restarts() == 1
    # The mon is back: the next cron run deploys.
    again = run_cli(gateway.config(), "deploy")
    assert again.code == 0, again.stderr
    assert gateway.served() == fingerprint_of_pool(stack)


def test_deploy_frozen_past_its_slots_hold_does_not_restart_while_another_gateway_holds_it(
    stack: Stack, gateway: Gateway, other: OtherGateway
) -> None:
    """SIGSTOP the deploy after it took the slot, until the slot lapses and another gateway takes it."""
    served, pem, pid = renewed(stack, gateway)
    # hold = restart_timeout + 2 * verify_timeout + 60 = 63 s; the mon check may wait longer than that.
    gateway.settings["deploy"].update(restart_timeout=1.0, verify_timeout=1.0)
    gateway.settings["ceph"]["timeout"] = 200.0
    assert other.take()
    deploy = Deploy(gateway.config())
    mon = stack.ceph.mon.pid
    try:
        deploy.wait_for("waiting for a restart slot")
        # A frozen mon holds the deploy in its mon check, right after it took the slot.
        waits.sigstop(mon)
        other.free()
        waits.wait_for(
            "the deploy holding the slot",
            lambda: other.holder_pid() == deploy.proc.pid,
            waits.deploy_bound(deploy.config),
            deploy.proc,
            lambda: "".join(deploy.lines),
            "deploy's bound",
        )
        # Anywhere from here to the mon's answer is after the slot and before its fence.
        os.kill(deploy.proc.pid, signal.SIGSTOP)
        os.kill(mon, signal.SIGCONT)
        frozen = time.monotonic()
        hold = load(deploy.config).deploy.slot_hold
        while not other.take():  # the frozen deploy's slot lapses
            assert time.monotonic() - frozen < 2 * hold, f"the frozen deploy's slot outlived twice its hold ({hold:g}s)"
            time.sleep(0.5)
        assert time.monotonic() - frozen > 50
        os.kill(deploy.proc.pid, signal.SIGCONT)
        res = deploy.result()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(mon, signal.SIGCONT)
        with contextlib.suppress(ProcessLookupError):
            os.kill(deploy.proc.pid, signal.SIGCONT)
    assert_one_error_line(
        res, "restart slot 0 is no longer ours", "radosgw was not restarted", "the previous file is back in place"
    )
    assert gateway.rgw.supervisor("pid") == pid
    assert gateway.served() == served
    assert gateway.pem.read_bytes() == pem
    assert gateway.restarts() == 1
    other.free()
    # The next cron run, with the gateway's own timeouts again: 1 s was for the slot's hold, and a
    # restart on a busy machine takes longer.
    gateway.settings["deploy"].update(restart_timeout=120.0, verify_timeout=20.0)
    again = run_cli(gateway.config(), "deploy")
    assert again.code == 0, again.stderr
    assert gateway.served() == fingerprint_of_pool(stack)


@contextlib.contextmanager
def another_tls_service(tmp_path: Path) -> Iterator[int]:
    """A TLS server that is not this gateway (a wrong deploy.verify_endpoint points at it); its port."""
    import socket
    import ssl

    pem = tmp_path / "other-service.pem"
    pem.write_text(pem_file(("other.example.org",)))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem)
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(2)
                with ctx.wrap_socket(conn, server_side=True):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_set_that_failed_verification_waits_out_its_backoff_unless_forced_renewed_or_the_config_is_fixed(
    stack: Stack, gateway: Gateway, tmp_path: Path
) -> None:
    served, pem, _ = renewed(stack, gateway)
    right = gateway.settings["deploy"]["verify_endpoint"]
    with another_tls_service(tmp_path) as port:
        gateway.settings["deploy"].update(verify_endpoint=f"127.0.0.1:{port}", verify_timeout=2.0)
        config = gateway.config()
        # 1. Installs, restarts, fails to verify, rolls back and restarts again: one line, saying when it tries next.
        first = run_cli(config, "deploy")
        assert_one_error_line(
            first, "did not serve certificate", "failed 1 time(s) in a row on this host", "(in 5 min)", "--force"
        )
        assert gateway.restarts() == 3
        assert gateway.served() == served
        assert gateway.pem.read_bytes() == pem
        # 2. The next cron run waits: one WARNING line, exit 1, no install, no restart.
        pid = gateway.rgw.supervisor("pid")
        waiting = run_cli(config, "deploy")
        assert waiting.code == 1, waiting.stderr
        assert len(waiting.lines) == 1, waiting.stderr
        line = waiting.lines[0]
        assert line.startswith("WARNING: "), line
        for needle in ("failed on this host 1 time(s) in a row", "next attempt is after", "rgwtls deploy --force"):
            assert needle in line, line
        assert gateway.rgw.supervisor("pid") == pid
        assert gateway.restarts() == 3
        # 3. --force tries at once, and the wait doubles.
        forced = run_cli(config, "deploy", "--force")
        assert_one_error_line(forced, "failed 2 time(s) in a row on this host", "(in 10 min)")
        assert gateway.restarts() == 5
        # 4. A new set in the pool tries at once, counting from one.
        issue(stack, "--force")
        newer = run_cli(config, "deploy")
        assert_one_error_line(newer, "failed 1 time(s) in a row on this host")
        assert gateway.restarts() == 7
        assert run_cli(config, "deploy").code == 1
        assert gateway.restarts() == 7
    # 5. The config fixed (its digest changed): tries at once, and succeeds.
    gateway.settings["deploy"].update(verify_endpoint=right, verify_timeout=20.0)
    fixed = run_cli(gateway.config(), "deploy")
    assert fixed.code == 0, fixed.stderr
    assert gateway.served() == fingerprint_of_pool(stack)
    assert gateway.restarts() == 8
    assert list(Path(gateway.settings["deploy"]["state_dir"]).glob("*.deploy-failed")) == []
    done = run_cli(gateway.config(), "deploy")
    assert (done.code, done.stderr) == (0, "")
