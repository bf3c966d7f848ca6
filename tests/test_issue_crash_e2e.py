"""`rgwtls issue` killed at each step, then run again, as cron would: the next run finishes what the killed one began.

The step boundaries are found from outside: a dehydrated hook publishes the
record with nsupdate, as a site's hook does, and then signals its parent
(rgwtls) at once, or from a background child while rgwtls waits for
propagation; or it holds rgwtls at the hook until the test has stopped the
OSD, so that storing fails after the CA issued.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from devsite.ports import free_port
from devsite.tlsca import TestCA
from rgwtls import certs
from tests.conftest import ZONE, Result, Stack, run_cli
from tests.test_issue_e2e import assert_one_error_line, stored, stored_set, write_hook
from tests.waits import issue_run_bound, wait_for

RECORD = f"_acme-challenge.{ZONE}"


class Site:
    """A hook-driven config, this test's own state dir, and the hook's switches."""

    def __init__(self, stack: Stack, lock_duration: float | None = None) -> None:
        self.stack = stack
        self.state = stack.dir / "state"
        self.calls = stack.dir / "calls"
        self.arm = stack.dir / "arm"  # "<call number> <action>": what the hook does at that deploy_challenge
        self.reached = stack.dir / "reached"
        self.gate = stack.dir / "gate"
        secret = stack.secret_file("hook-tsig", stack.bind.tsig_secret)
        nsupdate = (
            f"printf 'server 127.0.0.1 {stack.bind.port}\\nupdate %s {RECORD}. 60 TXT \"%s\"\\nsend\\n' "
            f'"$op" "$4" | nsupdate -y "{stack.bind.tsig_algorithm}:{stack.bind.tsig_name}:$(cat {secret})"'
        )
        hook = write_hook(
            stack.dir / "hook.sh",
            f"""echo "$@" >> {self.calls}
case "$1" in
  deploy_challenge) op=add ;;
  clean_challenge) op=delete ;;
  *) exit 0 ;;
esac
{nsupdate}
[ "$1" = deploy_challenge ] && [ -e {self.arm} ] || exit 0
read at action signame < {self.arm}
[ "$(grep -c deploy_challenge {self.calls})" -ge "$at" ] || exit 0
rm -f {self.arm}
touch {self.reached}
case "$action" in
  now) kill -s "$signame" $PPID ;;
  later) (sleep 1; kill -s "$signame" $PPID) </dev/null >/dev/null 2>&1 & ;;
  hold) while [ -e {self.gate} ]; do sleep 0.05; done ;;
  sleep) sleep "$signame" ;;
esac
exit 0
""",
        )
        settings = stack.settings("hook")
        settings["dns"]["hook"] = {"command": str(hook)}
        settings["deploy"]["state_dir"] = str(self.state)
        settings["ceph"]["timeout"] = 2.0
        if lock_duration is not None:
            settings["ceph"]["lock_duration"] = lock_duration
        self.config = stack.write_config(settings)
        # The same, with a nameserver that never answers: rgwtls waits for propagation until killed.
        settings["dns"]["nameservers"] = [f"127.0.0.1:{stack.bind.port}", f"127.0.0.1:{free_port()}"]
        self.config_stuck = stack.write_config(settings, "stuck.toml")

    def arm_hook(self, at: int, action: str, arg: str = "") -> None:
        self.calls.unlink(missing_ok=True)
        self.reached.unlink(missing_ok=True)
        self.arm.write_text(f"{at} {action} {arg}\n")

    def start(self, config: Path | None = None) -> subprocess.Popen[str]:
        """`rgwtls issue` as cron starts it, in its own session so that a signal can reach all of it."""
        return subprocess.Popen(
            [sys.executable, "-m", "rgwtls", "issue"],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "RGWTLS_CONFIG": str(config or self.config)},
            start_new_session=True,
        )

    def kept(self) -> list[Path]:
        issued = self.state / "issued"
        return sorted(issued.glob("*.json")) if issued.exists() else []

    def noted_orders(self) -> list[Path]:
        issued = self.state / "issued"
        return sorted(issued.glob("*.order")) if issued.exists() else []

    def bound(self, config: Path | None = None) -> float:
        """How long an issue with this site's config may take: what a wait for one of its steps may take."""
        return issue_run_bound(config or self.config)

    def run(self) -> tuple[Result, float]:
        started = time.monotonic()
        res = run_cli(self.config, "issue")
        return res, time.monotonic() - started


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    code = proc.wait(timeout)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    return code, err


def leaf_fingerprint(cert_pem: str) -> bytes:
    from cryptography.hazmat.primitives import hashes

    return x509.load_pem_x509_certificate(cert_pem.encode()).fingerprint(hashes.SHA256())


def ordered_again(site: Site) -> bool:
    """Whether the hook published anything since the calls were cleared (cleaning up what is left is fine)."""
    return site.calls.exists() and "deploy_challenge" in site.calls.read_text()


def last_issue(stack: Stack) -> dict[str, Any]:
    raw = stored(stack, f"{ZONE}/last-issue")
    assert raw is not None
    doc: dict[str, Any] = json.loads(raw)
    return doc


def assert_next_runs_recover(site: Site, killed_pid: int, signame: str, expect_kept: bool = False) -> None:
    """Run two, at once and whole; run three, a no-op. What the issue asks of every killed run."""
    res, took = site.run()
    assert res.code == 0, res.stderr
    assert took < 10, (took, res.stderr)
    if signame == "KILL":
        # The lock of the dead run was taken over at once, and the message says whose it was.
        assert f"took over the issuer lock from {os.uname().nodename} pid {killed_pid}" in res.stderr, res.stderr
    assert not site.stack.bind.txt(RECORD), "a challenge record was left in DNS"
    assert stored(site.stack, "challenges.journal", ns="acme") is None
    assert site.kept() == []
    assert site.noted_orders() == []
    s = stored_set(site.stack)
    assert s is not None
    assert s["generation"] == 1
    if expect_kept:
        assert "nothing ordered" in res.stderr, res.stderr
    third = run_cli(site.config, "issue")
    assert third.code == 0, third.stderr
    assert third.stderr == ""
    assert stored_set(site.stack) == s
    assert last_issue(site.stack)["ok"] is True


@pytest.fixture
def site(stack: Stack) -> Site:
    return Site(stack)


# -- killed while publishing, and while waiting for propagation ----------------------


@pytest.mark.parametrize("signame", ["KILL", "TERM"])
def test_issuer_killed_while_publishing_is_recovered_by_the_next_run(site: Site, signame: str) -> None:
    site.arm_hook(1, "now", signame)  # after the first of the two values is published
    proc = site.start()
    code, err = finish(proc)
    assert code != 0, err
    assert_next_runs_recover(site, proc.pid, signame)


@pytest.mark.parametrize("signame", ["KILL", "TERM"])
def test_issuer_killed_while_waiting_for_propagation_is_recovered_by_the_next_run(site: Site, signame: str) -> None:
    site.arm_hook(2, "later", signame)
    proc = site.start(site.config_stuck)
    code, err = finish(proc)
    assert code != 0, err
    assert site.reached.exists()
    assert_next_runs_recover(site, proc.pid, signame)


# -- the CA issued, the pool cannot take it -----------------------------------------


def hold_at_the_hook_and_stop_the_osd(site: Site) -> subprocess.Popen[str]:
    """Start an issue, and stop the OSD while the hook holds it: storing fails after finalize."""
    site.gate.touch()
    site.arm_hook(2, "hold")
    proc = site.start()
    wait_for("the hook", site.reached.exists, site.bound(), proc, why="issue's run bound")
    site.stack.ceph.stop_osd()
    site.gate.unlink()
    return proc


def test_certificate_the_pool_cannot_take_is_kept_and_stored_by_the_next_run(site: Site) -> None:
    try:
        proc = hold_at_the_hook_and_stop_the_osd(site)
        code, err = finish(proc, 120)
    finally:
        site.stack.ceph.start_osd()
    errors = [line for line in err.splitlines() if line.startswith("ERROR:")]
    assert code == 1, err
    assert len(errors) == 1, err
    assert "a certificate was issued (valid until" in errors[0]
    assert "kept in" in errors[0]
    assert "the next run stores it" in errors[0]
    [kept] = site.kept()
    assert kept.stat().st_mode & 0o777 == 0o600
    assert (site.state / "issued").stat().st_mode & 0o777 == 0o700
    issued = json.loads(kept.read_text())
    assert not site.stack.bind.txt(RECORD)  # removed after the failed store, all the same
    site.calls.unlink()
    res, _ = site.run()
    assert res.code == 0, res.stderr
    assert "nothing ordered" in res.stderr
    assert not ordered_again(site)
    s = stored_set(site.stack)
    assert s is not None
    # The pool's set is exactly what the CA issued to the killed run.
    assert s["cert_pem"] == issued["cert_pem"]
    assert s["key_pem"] == issued["key_pem"]
    assert site.kept() == []
    third = run_cli(site.config, "issue")
    assert third.code == 0, third.stderr
    assert third.stderr == ""


@pytest.mark.parametrize("signame", ["KILL", "TERM"])
def test_issuer_killed_while_storing_loses_no_certificate(site: Site, signame: str) -> None:
    try:
        proc = hold_at_the_hook_and_stop_the_osd(site)
        # The set is kept before it is stored, and the order's note removed last of all: the
        # store begins then, and hangs on the stopped OSD.
        wait_for(
            "the kept set, and its order's note gone",
            lambda: bool(site.kept()) and not site.noted_orders(),
            site.bound(),
            proc,
            why="issue's run bound",
        )
        issued = json.loads(site.kept()[0].read_text())
        os.killpg(proc.pid, getattr(signal, f"SIG{signame}"))
        finish(proc, 120)
    finally:
        site.stack.ceph.start_osd()
    site.calls.unlink()
    assert_next_runs_recover(site, proc.pid, signame, expect_kept=True)
    s = stored_set(site.stack)
    assert s is not None
    assert leaf_fingerprint(str(s["cert_pem"])) == leaf_fingerprint(issued["cert_pem"])
    assert not ordered_again(site)


def test_kept_set_the_pool_already_holds_is_only_removed(site: Site) -> None:
    assert site.run()[0].code == 0
    s = stored_set(site.stack)
    assert s is not None
    # The first run made the directory, keeping its set there until the pool had it.
    kept = site.state / "issued" / f"{ZONE}.json"
    kept.write_text(json.dumps({"format": "rgwtls-set/1", **s}))
    res, _ = site.run()
    assert res.code == 0, res.stderr
    assert res.stderr == ""
    assert not kept.exists()
    assert stored_set(site.stack) == s


# -- killed while the CA issues -----------------------------------------------------------


class Verbose:
    """`rgwtls -v issue` in its own session, its stderr lines gathered as they come."""

    def __init__(self, config: Path, *args: str) -> None:
        self.config = config
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rgwtls", "-v", "issue", *args],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "RGWTLS_CONFIG": str(config)},
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._gather, daemon=True)
        self._reader.start()

    def _gather(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                self.lines.append(line)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def wait_for(self, text: str) -> None:
        """Until the run says `text`, within its own bound; at once if it ends first."""
        wait_for(
            repr(text),
            lambda: self.said(text),
            issue_run_bound(self.config),
            self.proc,
            lambda: "".join(self.lines),
            "issue's run bound",
        )

    def wait(self) -> int:
        code = self.proc.wait(60)
        self._reader.join(10)
        return code


@pytest.mark.parametrize("signame", ["KILL", "TERM"])
def test_issuer_killed_while_the_ca_issues_gets_that_certificate_on_the_next_run(site: Site, signame: str) -> None:
    """The CSR is sent, the CA is issuing, the run is killed: the next run fetches that certificate, orders nothing."""
    settings = tomllib.loads(site.config.read_text())
    settings["acme"]["poll_interval"] = 30.0  # a CA that says "processing": rgwtls waits before asking again
    run = Verbose(site.stack.write_config(settings, "slow-ca.toml"))
    run.wait_for("asking again for the certificate")
    note = site.state / "issued" / f"{ZONE}.order"
    assert note.stat().st_mode & 0o777 == 0o600
    noted = json.loads(note.read_text())
    os.killpg(run.proc.pid, getattr(signal, f"SIG{signame}"))
    assert run.wait() != 0
    assert stored_set(site.stack) is None
    assert note.exists()
    site.calls.unlink()
    assert_next_runs_recover(site, run.proc.pid, signame, expect_kept=True)
    assert not ordered_again(site)
    assert not note.exists()
    s = stored_set(site.stack)
    assert s is not None
    # The certificate of the killed run's order, with the key it noted.
    assert s["key_pem"] == noted["key_pem"]


def test_noted_order_that_gives_no_certificate_is_dropped_and_the_run_orders(site: Site) -> None:
    """An order the CA no longer gives (gone, or another account's) costs one INFO line, never a failed run."""
    issued = site.state / "issued"
    issued.mkdir(parents=True, mode=0o700)
    note = issued / f"{ZONE}.order"
    pebble = site.stack.pebble.directory_url
    note.write_text(
        json.dumps(
            {
                "format": "rgwtls-order/1",
                "directory": pebble,
                "order": pebble.removesuffix("/dir") + "/my-order/no-such-order",
                "profile": "",
                "key_pem": certs.private_pem(certs.new_private_key("ec256")),
            }
        )
    )
    note.chmod(0o600)
    res = run_cli(site.config, "-v", "issue")
    assert res.code == 0, res.stderr
    assert "gives no certificate; ordering as usual" in res.stderr or "no longer gives the order" in res.stderr
    assert "WARNING" not in res.stderr, res.stderr
    assert not note.exists()
    assert ordered_again(site)
    assert stored_set(site.stack) is not None


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{not json", "dropping the order noted in"),
        ('{"format": "rgwtls-order/1"}', "is not an order note of this rgwtls"),
        (
            json.dumps(
                {
                    "format": "rgwtls-order/1",
                    "directory": "https://acme.other.test/dir",
                    "order": "https://acme.other.test/order/1",
                    "profile": "",
                    "key_pem": "-----BEGIN PRIVATE KEY-----",
                }
            ),
            "it was placed with another CA (https://acme.other.test/dir)",
        ),
    ],
    ids=["corrupt", "incomplete", "another-ca"],
)
def test_order_note_that_cannot_be_used_is_one_warning_and_the_run_orders(site: Site, content: str, why: str) -> None:
    issued = site.state / "issued"
    issued.mkdir(parents=True, mode=0o700)
    note = issued / f"{ZONE}.order"
    note.write_text(content)
    note.chmod(0o600)
    res = run_cli(site.config, "issue")
    assert res.code == 0, res.stderr
    [warning] = [line for line in res.stderr.splitlines() if line.startswith("WARNING:")]
    assert why in warning
    assert "acme.other.test/order" not in res.stderr.replace(why, "")  # never asked the other CA
    assert not note.exists()
    assert ordered_again(site)
    assert stored_set(site.stack) is not None


# -- the lock of a live issuer -----------------------------------------------------------


def test_long_issue_keeps_its_lock_past_lock_duration_and_a_second_issuer_is_refused(stack: Stack) -> None:
    site = Site(stack, lock_duration=3.0)
    site.gate.touch()  # the first issue holds at its hook until the others have tried
    site.arm_hook(2, "hold")
    first = site.start()
    try:
        wait_for("the hook", site.reached.exists, site.bound(), first, why="issue's run bound")
        time.sleep(4)  # time must pass: past the lock's 3 s, only renewal keeps it
        # A standby's cron run: nothing to do, and nothing for cron to mail.
        standby = run_cli(site.config, "-v", "issue")
        # An operator's --force: told, as an error.
        forced = run_cli(site.config, "issue", "--force")
    finally:
        site.gate.unlink(missing_ok=True)
    code, err = finish(first)
    assert code == 0, err
    assert standby.code == 0, standby.stderr
    assert "another issuer holds the lock" in standby.stderr
    assert "this issuer has nothing to do" in standby.stderr
    assert "ERROR" not in standby.stderr
    assert "WARNING" not in standby.stderr
    assert_one_error_line(forced, "another issuer holds the lock", f"pid {first.pid}", "still running on this host")
    s = stored_set(stack)
    assert s is not None
    assert s["generation"] == 1


# -- every failure is recorded and one line -----------------------------------------------


class _BrokenWapi(BaseHTTPRequestHandler):
    """An appliance behind a proxy that answers a create with 201 and not the reference."""

    body = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(201)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def do_GET(self) -> None:
        self._json(b"[]")

    def do_DELETE(self) -> None:
        self._json(b'"deleted"')

    def _json(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def broken_wapi(test_ca: TestCA) -> Iterator[tuple[str, type[_BrokenWapi]]]:
    import ssl

    cert, key = test_ca.issue("broken-wapi")
    handler = type("Handler", (_BrokenWapi,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(
    "body",
    [b"<html><body>Created</body></html>", b'"record:txt/ZG5z', b'{"_ref": "record:txt/x"}'],
    ids=["html", "truncated-json", "not-a-reference"],
)
def test_wapi_answer_that_is_not_a_reference_is_one_recorded_line(
    stack: Stack, test_ca: TestCA, broken_wapi: tuple[str, type[_BrokenWapi]], body: bytes
) -> None:
    server, handler = broken_wapi
    handler.body = body
    settings = stack.settings()
    settings["dns"]["infoblox"]["server"] = server
    settings["dns"]["infoblox"]["ca_bundle"] = str(test_ca.ca_pem)
    res = run_cli(stack.write_config(settings), "issue")
    assert_one_error_line(res, "infoblox: could not create TXT record", "POST record:txt answered 201 with")
    assert "unexpected" not in res.stderr
    doc = last_issue(stack)
    assert doc["ok"] is False
    assert "POST record:txt answered 201" in doc["error"]
