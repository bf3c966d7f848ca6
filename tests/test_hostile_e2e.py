"""What a gateway can write and what a runtime socket can answer, through the real stack (issue 25, findings 1-4).

A deploy-only user (docs/deploy.md's caps, as a compromised gateway has
them) writes hostile records, a 1 MiB record and a name that is not UTF-8
into the real pool; the real `rgwtls rollout` must print no control byte,
go on for the rest of the fleet, and forget what it cannot read. A fake
"HAProxy" runtime socket, the test's own, echoes what it was sent or answers
random bytes: neither the deploy's line nor the gateway's pool record may
hold a line of the key or a control byte.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devsite.ceph import CephCluster
from devsite.gateway import Gateway
from devsite.site import POOL
from tests.conftest import Stack, run_cli
from tests.runtime import FakeSocket, read_command
from tests.test_issue_e2e import stored_set

CERT = "cog.example.org"
# Any C0 control byte but the newline that ends each line, DEL, and a C1 control as UTF-8 encodes it.
CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")
ESC = "\x1b]0;owned\x07\x1b[2J\x1b[H"


def run_raw(config: Path, *args: str, timeout: float = 120) -> tuple[int, bytes]:
    """The real command as cron runs it; its output as the bytes a terminal or cron mail would get."""
    res = subprocess.run(
        [sys.executable, "-m", "rgwtls", *args],
        capture_output=True,
        timeout=timeout,
        env={**os.environ, "RGWTLS_CONFIG": str(config)},
        check=False,
    )
    return res.returncode, res.stdout + res.stderr


def assert_printable(out: bytes) -> str:
    assert not CONTROL.search(out), out
    return out.decode("utf-8")  # strictly: no byte that is not UTF-8 either


@contextlib.contextmanager
def as_deploy_user(stack: Stack, keyring: Path) -> Iterator[Any]:
    """An I/O context on the deploy namespace with the deploy user's caps: what a compromised gateway can do."""
    handle = stack.ceph.connect(name="client.rgwtls-deploy", keyring=keyring)
    try:
        ioctx = handle.open_ioctx(POOL)
        ioctx.set_namespace("deploy")
        try:
            yield ioctx
        finally:
            ioctx.close()
    finally:
        handle.shutdown()


def record(host: str, endpoint: str, **more: object) -> bytes:
    doc = {"host": host, "endpoint": endpoint, "certificate": CERT, "served": "x", "ok": True, "error": None}
    return json.dumps({"at": "2026-01-01T00:00:00+00:00", **doc, **more}).encode()


def hold_slot(ioctx: Any, holder: bytes) -> None:
    """Take restart slot 0 as the deploy user could, with `holder` as its holder record."""
    ioctx.write_full("restart-slot.0", b"")
    ioctx.lock_exclusive("restart-slot.0", "rgwtls-restart", "c0ffee", duration=120)
    ioctx.set_xattr("restart-slot.0", "holder", holder)


def test_a_hostile_record_and_slot_holder_written_by_the_deploy_user_reach_rollout_escaped(
    stack: Stack, deploy_keyring: Path
) -> None:
    """Finding 1: one record put 8 ESC and 2 BEL bytes on the issuer operator's terminal."""
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    with as_deploy_user(stack, deploy_keyring) as ioctx:
        ioctx.write_full(
            "host.gw7.10.0.0.7:443",
            record(f"gw7{ESC}", f"10.0.0.7:443{ESC}", ok=False, error=f"boom\x1b[8m{ESC}", at=f"9999{ESC}"),
        )
        ioctx.write_full("host.gw5.10.0.0.5:443", record("gw5", "10.0.0.5:443"))
        ioctx.write_full(f"host.gw6{ESC}.e", f"not json{ESC}".encode())
        holder = {"host": "gw5", "boot_id": "b", "pid": 1, "start": 1, "since": f"9999{ESC}", "cookie": "c0ffee"}
        hold_slot(ioctx, json.dumps({**holder, "label": "10.0.0.5:443"}).encode())
    code, out = run_raw(issuer, "rollout", "--timeout", "0")
    text = assert_printable(out)
    assert code == 0, text
    shown = ESC.replace("\x1b", "\\x1b").replace("\x07", "\\x07")
    assert f"rollout: gw7{shown} (10.0.0.7:443{shown}): failed (boom\\x1b[8m{shown})" in text
    assert f"rollout: gw5 (10.0.0.5:443): restarting (holds a restart slot since 9999{shown})" in text
    warnings = [line for line in text.splitlines() if line.startswith("WARNING:")]
    assert warnings == [
        f"WARNING: rollout: skipped deploy/host.gw6{shown}.e: it is not JSON; it shows no gateway until its "
        "gateway's next deploy rewrites it or 'rgwtls rollout --forget HOST' removes it"
    ]


def test_a_slot_holder_record_that_is_not_json_reaches_no_restart_slot_free_line_escaped(
    stack: Stack, gateway: Gateway, deploy_keyring: Path
) -> None:
    assert run_cli(stack.write_config(stack.settings()), "issue").code == 0
    gateway.settings["deploy"]["restart_wait"] = 1.0
    with as_deploy_user(stack, deploy_keyring) as ioctx:
        hold_slot(ioctx, f"not json{ESC}".encode())
    code, out = run_raw(gateway.config(), "deploy")
    text = assert_printable(out)
    assert code == 1, text
    assert "no restart slot free within 1s: 1 gateway(s) restarting (not json\\x1b]0;owned\\x07" in text
    assert gateway.restarts() == 0
    # The gateway's own record of the failure holds it escaped too.
    doc = json.loads(own_record(stack, gateway))
    assert "no restart slot free" in doc["error"]
    assert not CONTROL.search(doc["error"].encode())


def own_record(stack: Stack, gw: Gateway) -> bytes:
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    try:
        ioctx.set_namespace("deploy")
        return bytes(ioctx.read(f"host.{os.uname().nodename}.{gw.settings['deploy']['verify_endpoint']}", 1 << 20))
    finally:
        ioctx.close()


def test_a_1mib_record_and_a_name_not_utf8_are_one_warning_each_and_rollout_follows_the_rest_of_the_fleet(
    stack: Stack, gateway: Gateway, deploy_keyring: Path, tmp_path: Path
) -> None:
    """Findings 2 and 3: each once stopped every rollout; --forget failed on the very record it should remove."""
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    assert run_cli(gateway.config(), "deploy").code == 0
    big, odd = "host.gw8.10.0.0.8:443", b"host.gw9.\xff\xfe\x1b:443"
    with as_deploy_user(stack, deploy_keyring) as ioctx:
        ioctx.write_full(big, b"x" * (1 << 20))
    # python-rados names objects in str only; the rados CLI takes any bytes, as a gateway's deploy user may.
    (tmp_path / "odd.json").write_bytes(record("gw9", "10.0.0.9:443"))
    rados_cli(stack.ceph, deploy_keyring, b"put", odd, str(tmp_path / "odd.json").encode())
    try:
        code, out = run_raw(issuer, "rollout", "--wait", "--timeout", "60")
        text = assert_printable(out)
        assert code == 0, text
        assert "rollout: 1/1 gateways serve the pool's certificate" in text
        warnings = [line for line in text.splitlines() if line.startswith("WARNING:")]
        assert len(warnings) == 2, text
        assert warnings[0].startswith(f"WARNING: rollout: skipped deploy/{big}: it is larger than 1048576 bytes")
        remove = f"rados -N deploy -p {POOL} rm $'host.gw9.\\xff\\xfe\\x1b:443'"
        assert warnings[1] == (
            "WARNING: rollout: skipped deploy/host.gw9.\\xff\\xfe\\x1b:443: its name is not UTF-8, which python-rados "
            f"cannot name; remove it with: {remove}"
        )
        res = run_cli(issuer, "rollout", "--forget", "gw8")
        assert (res.code, res.stderr) == (0, "rollout: forgot gw8.10.0.0.8:443\n")
        code, out = run_raw(issuer, "rollout", "--forget", "gw9")
        assert code == 1
        assert assert_printable(out).endswith(f"; remove it with: {remove}\n")
        # The command the line gives removes it, run by bash as an operator would paste it.
        connect = f"rados -c {stack.ceph.conf} --id rgwtls-deploy --keyring {deploy_keyring} "
        subprocess.run(["bash", "-c", connect + remove.removeprefix("rados ")], check=True, timeout=60)
        assert b"host.gw" not in rados_cli(stack.ceph, deploy_keyring, b"ls")
        res = run_cli(issuer, "rollout", "--wait", "--timeout", "60")
        assert res.code == 0, res.stderr
        assert "WARNING" not in res.stderr
    finally:
        # The tests' pool emptying lists names with python-rados: a name it cannot decode must not outlive this test.
        rados_cli(stack.ceph, deploy_keyring, b"rm", odd, check=False)


def test_the_listing_goes_on_past_every_name_that_is_not_utf8(
    ceph: CephCluster, pool: str, deploy_keyring: Path, tmp_path: Path
) -> None:
    """python-rados raises on such a name after its cursor moved on: each one is kept as bytes, none hides another.

    Only Ceph (no Pebble): it runs in the Tentacle root too, on that release's binding.
    """
    from rgwtls.config import CephConfig
    from rgwtls.store import Pool

    empty = tmp_path / "empty"
    empty.write_bytes(b"{}")
    odd = [f"host.odd{i}.".encode() + bytes([0xFF - i]) for i in range(5)]
    plain = [f"host.plain{i}.e" for i in range(5)]
    try:
        for name in [*odd, *(p.encode() for p in plain)]:
            rados_cli(ceph, deploy_keyring, b"put", name, str(empty))
        cfg = CephConfig(conf=str(ceph.conf), user="client.rgwtls-deploy", keyring=str(deploy_keyring), pool=pool)
        with Pool(cfg) as store:
            assert sorted(map(str, store.names("deploy", "host."))) == sorted(map(str, [*odd, *plain]))
    finally:
        for name in odd:
            rados_cli(ceph, deploy_keyring, b"rm", name, check=False)


def rados_cli(ceph: CephCluster, keyring: Path, *args: str | bytes, check: bool = True) -> bytes:
    """The rados CLI as the deploy user, in the deploy namespace of the pool; its output."""
    argv = [
        "rados",
        "-c",
        str(ceph.conf),
        "--id",
        "rgwtls-deploy",
        "--keyring",
        str(keyring),
        "-p",
        POOL,
        "-N",
        "deploy",
    ]
    res = subprocess.run([*argv, *args], capture_output=True, timeout=60, check=False)
    assert res.returncode == 0 or not check, res.stderr
    return res.stdout


class HostileRuntime(FakeSocket):
    """A UNIX socket where deploy expects HAProxy's: a HAProxy until `set ssl cert`, which it answers with `answer`."""

    def __init__(self, path: Path, loaded: str, answer: Callable[[bytes], bytes]) -> None:
        self.loaded, self.answer = loaded, answer
        self.sets = 0
        super().__init__(path)

    def handle(self, conn: socket.socket) -> bool:
        conn.settimeout(10)
        data = read_command(conn)
        if data.startswith(b"show cli level"):
            reply = b"admin\n"
        elif data.startswith(b"show ssl cert"):
            reply = f"# filename\n{self.loaded}\n".encode()
        elif data.startswith(b"set ssl cert"):
            self.sets += 1
            reply = self.answer(data)
        else:
            reply = b"\n"
        with contextlib.suppress(OSError):
            conn.sendall(reply + b"\n")
        return False


def key_lines(pem: str) -> list[str]:
    key = pem[pem.index("-----BEGIN") : pem.index("PRIVATE KEY-----", pem.index("-----END")) + 16]
    return [line for line in key.splitlines() if line and not line.startswith("-----")]


def echo(data: bytes) -> bytes:
    return b"\x1b]0;owned\x07" + data


def echo_without_markers(data: bytes) -> bytes:
    return b"\n".join(line for line in data.splitlines() if b"-----" not in line and b"<<" not in line) + b"\x1b[2J"


def random_bytes(data: bytes) -> bytes:
    return random.Random(len(data)).randbytes(8192)


@pytest.mark.parametrize("answer", [echo, echo_without_markers, random_bytes], ids=lambda f: f.__name__)
def test_a_runtime_socket_that_echoes_or_answers_random_bytes_puts_no_key_and_no_control_byte_in_line_or_record(
    stack: Stack, gateway: Gateway, tmp_path: Path, answer: Callable[[bytes], bytes]
) -> None:
    """Finding 4: all 26 base64 lines of the key once appeared in one line of 6,115 characters."""
    assert run_cli(stack.write_config(stack.settings()), "issue").code == 0
    previous = gateway.pem.read_text()
    fake = HostileRuntime(tmp_path / "admin.sock", str(gateway.pem), answer)
    try:
        gateway.settings["deploy"].update(activate="haproxy", haproxy_socket=str(fake.path), verify_timeout=3.0)
        code, out = run_raw(gateway.config(), "deploy")
    finally:
        fake.close()
    text = assert_printable(out)
    assert code == 1, text
    assert fake.sets == 2  # the new PEM, then the previous one swapped back
    errors = [line for line in text.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, text
    assert "HAProxy refused the new PEM for" in errors[0]
    assert len(errors[0]) < 2000
    new = stored_set(stack)
    assert new is not None
    doc = json.loads(own_record(stack, gateway))
    assert "HAProxy refused the new PEM for" in doc["error"]
    assert not CONTROL.search(doc["error"].encode())
    for line in key_lines(str(new["key_pem"])) + key_lines(previous):
        assert line[:24] not in text
        assert line[:24] not in doc["error"]
    assert gateway.restarts() == 0
