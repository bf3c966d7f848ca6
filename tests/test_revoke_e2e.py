"""`rgwtls revoke` through the real stack: a new key on every gateway, then the old certificate revoked at Pebble.

Pebble's management API says what the CA holds (`cert-status-by-serial`).
The run is held at a step's end by tests/hold.py, and killed or
frozen there: the next `revoke` resumes, with no second replacement and no
second revocation.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from devsite.certmaker import make_cert
from devsite.gateway import Gateway
from devsite.haproxy import HAProxy
from devsite.ports import free_port
from rgwtls.check import CRITICAL
from rgwtls.probe import served_fingerprint
from rgwtls.revoke import STEPS, Journal, journal_object
from rgwtls.revoked import REVOKED_OBJECT, RevokedList, serial_hex, spki_sha256
from tests import waits
from tests.conftest import ZONE, Result, Stack, run_cli
from tests.fleet import gateways
from tests.test_issue_e2e import assert_one_error_line, stored, stored_set
from tests.test_revocation_e2e import check
from tests.test_watch_e2e import Watcher, serves_pool, wait_for


def leaf(s: dict[str, Any] | None) -> x509.Certificate:
    assert s is not None
    return x509.load_pem_x509_certificate(str(s["cert_pem"]).encode())


def serial_of(s: dict[str, Any] | None) -> str:
    return serial_hex(leaf(s))


def record(stack: Stack) -> RevokedList:
    return RevokedList.from_bytes(stored(stack, REVOKED_OBJECT), "test")


def journal(stack: Stack) -> dict[str, Any] | None:
    raw = stored(stack, journal_object(ZONE, False), ns="acme")
    return json.loads(raw) if raw else None


def assert_revoked_once(stack: Stack, old: dict[str, Any], reason: str, code: int) -> dict[str, Any]:
    """Generation 2 is the one replacement, with a new key; the pool and Pebble hold the old one as revoked."""
    new = stored_set(stack)
    assert new is not None
    assert new["generation"] == 2
    assert spki_sha256(leaf(new)) != spki_sha256(leaf(old))
    entry = record(stack).by_serial(serial_of(old))
    assert entry is not None
    assert (entry.reason, entry.spki_sha256, entry.certificate) == (reason, spki_sha256(leaf(old)), ZONE)
    assert entry.at_ca
    assert stack.pebble.revoked_reason(serial_of(old)) == code
    assert stack.pebble.revoked_reason(serial_of(new)) is None
    done = journal(stack)
    assert done is not None
    assert done["done"]
    assert done["key_pem"] == ""  # the revoked key is kept only until the CA revoked with it
    return new


@pytest.fixture
def fleet(stack: Stack, deploy_keyring: Path, tmp_path: Path) -> Iterator[list[Gateway]]:
    with gateways(stack, deploy_keyring, tmp_path, 2) as f:
        yield f


def test_key_compromise_puts_a_new_key_on_two_watching_gateways_and_pebble_revokes_the_old_for_reason_1(
    stack: Stack, fleet: list[Gateway]
) -> None:
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    old = stored_set(stack)
    assert old is not None
    watchers = [Watcher(gw) for gw in fleet]
    try:
        for w in watchers:
            wait_for("the first deploy", lambda w=w: serves_pool(stack, w.gw), w)  # type: ignore[misc]
            wait_for("the watch", lambda w=w: w.said("watching pool"), w)  # type: ignore[misc]
        started = time.monotonic()
        res = run_cli(issuer, "revoke", "--reason", "keyCompromise")
        took = time.monotonic() - started
        print(f"revoke --reason keyCompromise, 2 watching gateways: {took:.1f}s")
        assert res.code == 0, res.stderr
        assert took < 60  # the issue's functional bound, from one command
        assert "2/2 gateways serve the pool's certificate" in res.stderr
        assert all(serves_pool(stack, gw) for gw in fleet)
        assert_revoked_once(stack, old, "keyCompromise", 1)
        # The same command again resumes a finished revoke: nothing replaced, nothing revoked twice.
        again = run_cli(issuer, "revoke", "--reason", "keyCompromise")
        assert again.code == 0, again.stderr
        assert_revoked_once(stack, old, "keyCompromise", 1)
    finally:
        for w in watchers:
            w.stop()


def test_haproxy_frontends_that_swap_with_no_restart_are_followed_to_the_new_key(
    stack: Stack, fleet: list[Gateway], tmp_path: Path
) -> None:
    """A hot swap is a deploy that changed what is served: recorded, so that revoke (and rollout) see it."""
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    old = stored_set(stack)
    assert old is not None
    fronts = [HAProxy(tmp_path / f"hx{i}", gw.rgw.port).start() for i, gw in enumerate(fleet)]
    watchers: list[Watcher] = []
    try:
        for gw, hx in zip(fleet, fronts, strict=True):
            gw.settings["deploy"].update(hx.deploy_settings(), restart_command="false")
        watchers = [Watcher(gw) for gw in fleet]
        for w in watchers:
            wait_for("the watch", lambda w=w: w.said("watching pool"), w)  # type: ignore[misc]
        wait_for("the first swap", lambda: all(front_serves(hx, old) for hx in fronts), watchers[0])
        res = run_cli(issuer, "revoke", "--reason", "keyCompromise", "--timeout", "60")
        assert res.code == 0, res.stderr
        new = assert_revoked_once(stack, old, "keyCompromise", 1)
        assert all(front_serves(hx, new) for hx in fronts)
        assert [gw.restarts() for gw in fleet] == [0, 0]
    finally:
        for w in watchers:
            w.stop()
        for hx in fronts:
            hx.stop()


def front_serves(hx: HAProxy, s: dict[str, Any]) -> bool:
    try:
        return served_fingerprint(f"127.0.0.1:{hx.port}", f"anybucket.{ZONE}", 5) == x509_fingerprint(s)
    except OSError:
        return False


def test_a_gateway_whose_cron_does_not_run_is_named_the_old_certificate_revoked_anyway_and_its_deploy_converges(
    stack: Stack, fleet: list[Gateway]
) -> None:
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    old = stored_set(stack)
    assert old is not None
    gw = fleet[0]
    assert run_cli(gw.config(), "deploy").code == 0  # known to the pool; its cron then stops
    started = time.monotonic()
    res = run_cli(issuer, "revoke", "--reason", "superseded", "--timeout", "15")
    took = time.monotonic() - started
    assert_one_error_line(
        res, "revoked at the CA", "1 of 1 gateways do not serve", gw.settings["deploy"]["verify_endpoint"]
    )
    assert 15 <= took < 60
    assert stack.pebble.revoked_reason(serial_of(old)) == 4
    # That gateway still serves the revoked certificate: its check says so.
    code, line = check(gw)
    assert code == CRITICAL, line
    assert line.startswith(f"RGWTLS CRITICAL - {ZONE}: the served certificate is revoked"), line
    # Its next deploy converges; the next revoke then finds every step done.
    assert run_cli(gw.config(), "deploy").code == 0
    assert serves_pool(stack, gw)
    res = run_cli(issuer, "revoke", "--reason", "superseded", "--timeout", "15")
    assert res.code == 0, res.stderr
    assert_revoked_once(stack, old, "superseded", 4)


def test_every_ca_dead_is_one_line_and_nothing_is_stored_or_revoked(stack: Stack) -> None:
    settings = stack.settings()
    issuer = stack.write_config(settings)
    assert run_cli(issuer, "issue").code == 0
    old = stored_set(stack)
    assert old is not None
    dead = f"https://127.0.0.1:{free_port()}/dir"
    settings["acme"].update(directory=dead, retries=1)
    settings["acme"]["fallback"] = [{"directory": f"https://127.0.0.1:{free_port()}/dir"}]
    res = run_cli(stack.write_config(settings, "dead.toml"), "revoke", "--reason", "keyCompromise")
    assert_one_error_line(res, "no replacement stored, so nothing is revoked")
    assert stored_set(stack) == old
    assert stored(stack, REVOKED_OBJECT) is None
    assert stack.pebble.revoked_reason(serial_of(old)) is None
    # That revoke is closed, not left to be resumed one day: the next one starts anew, and revokes.
    closed = journal(stack)
    assert closed is not None
    assert closed["done"]
    assert not closed["replacement"]
    res = run_cli(issuer, "revoke", "--reason", "keyCompromise")
    assert res.code == 0, res.stderr
    assert_revoked_once(stack, old, "keyCompromise", 1)


def test_an_unfinished_revoke_whose_certificate_expired_since_is_not_resumed(stack: Stack) -> None:
    """A revoke killed long ago and never run again must not stand in for the one the operator means now."""
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    old = stored_set(stack)
    assert old is not None
    now = dt.datetime.now(dt.UTC)
    key, cert = make_cert(("cog.example.org",), now - dt.timedelta(days=100), now - dt.timedelta(days=10))
    gone = x509.load_pem_x509_certificate(cert.encode())
    stale = Journal(ZONE, serial_hex(gone), spki_sha256(gone), "superseded", "", cert, key, "2026-01-01T00:00:00+00:00")
    ioctx = stack.ceph.admin().open_ioctx("rgwtls")
    try:
        ioctx.set_namespace("acme")
        ioctx.write_full(journal_object(ZONE, False), stale.to_bytes())
    finally:
        ioctx.close()
    res = run_cli(issuer, "revoke", "--reason", "keyCompromise")
    assert res.code == 0, res.stderr
    assert "was never finished" in res.stderr
    assert_revoked_once(stack, old, "keyCompromise", 1)
    assert record(stack).by_serial(serial_hex(gone)) is None


def test_an_unknown_reason_is_a_usage_error_and_nothing_changes(stack: Stack) -> None:
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    old = stored_set(stack)
    res = run_cli(issuer, "revoke", "--reason", "privilegeWithdrawn")
    assert res.code == 2
    assert "privilegeWithdrawn" in res.stderr
    assert stored_set(stack) == old
    assert journal(stack) is None


def held_revoke(config: Path, step: str, held: Path, *args: str) -> subprocess.Popen[str]:
    """`rgwtls revoke` that stops at the end of `step` until `held` is removed."""
    held.unlink(missing_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.hold", step, str(held), *args],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RGWTLS_CONFIG": str(config)},
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> Result:
    code = proc.wait(timeout)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    return Result(code, "", err)


@pytest.mark.parametrize("step", STEPS)
def test_revoke_killed_after_each_step_is_resumed_by_the_next(stack: Stack, tmp_path: Path, step: str) -> None:
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    old = stored_set(stack)
    assert old is not None
    held = tmp_path / "held"
    proc = held_revoke(issuer, step, held, "--reason", "keyCompromise")
    try:
        waits.wait_for(
            f"the revoke at the end of {step}", held.exists, waits.issue_run_bound(issuer), proc, why="the run's bound"
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        finish(proc)
    res = run_cli(issuer, "revoke", "--reason", "keyCompromise")
    assert res.code == 0, res.stderr
    assert_revoked_once(stack, old, "keyCompromise", 1)


@pytest.mark.parametrize("step", STEPS)
def test_revoke_frozen_past_its_lock_after_each_step_writes_nothing_more_and_the_next_resumes(
    stack: Stack, tmp_path: Path, step: str
) -> None:
    settings = stack.settings()
    settings["ceph"]["lock_duration"] = 4.0
    issuer = stack.write_config(settings)
    assert run_cli(issuer, "issue").code == 0
    old = stored_set(stack)
    assert old is not None
    held = tmp_path / "held"
    frozen = held_revoke(issuer, step, held, "--reason", "keyCompromise")
    try:
        waits.wait_for(
            f"the revoke at the end of {step}",
            held.exists,
            waits.issue_run_bound(issuer),
            frozen,
            why="the run's bound",
        )
        os.killpg(frozen.pid, signal.SIGSTOP)
        # Another revoke takes over once the frozen one's lock lapsed (alive, on this host: only time frees it).
        res = until_the_lock_lapses(issuer, "revoke", "--reason", "keyCompromise")
        assert res.code == 0, res.stderr
        assert_revoked_once(stack, old, "keyCompromise", 1)
    finally:
        held.unlink(missing_ok=True)
        os.killpg(frozen.pid, signal.SIGCONT)
        woke = finish(frozen)
    assert_one_error_line(woke, "no longer ours", "wrote nothing more")
    assert_revoked_once(stack, old, "keyCompromise", 1)


def until_the_lock_lapses(config: Path, *args: str, bound: float = 60) -> Result:
    """The command, again while it finds the issuer lock held, within `bound` (lock_duration and a loaded OSD)."""
    started = time.monotonic()
    while True:
        res = run_cli(config, *args)
        if "another issuer holds the lock" not in res.stderr or time.monotonic() - started > bound:
            return res
        time.sleep(0.5)


# -- never again: deploy ----------------------------------------------------------------


def revoked_and_redeployed(stack: Stack, gw: Gateway) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """A gateway served generation 1, revoke ran while its cron did not: generation 1 revoked, 2 not yet served."""
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    old = stored_set(stack)
    assert old is not None
    assert run_cli(gw.config(), "deploy").code == 0
    res = run_cli(issuer, "revoke", "--reason", "keyCompromise", "--timeout", "0")
    assert res.code == 1, res.stderr
    new = stored_set(stack)
    assert new is not None
    return issuer, old, new


def put_back_as_current(stack: Stack, s: dict[str, Any]) -> None:
    """What a hand restore of an old set does: the pool's `current` holds it again."""
    ioctx = stack.ceph.admin().open_ioctx("rgwtls")
    try:
        ioctx.write_full(f"{ZONE}/current", json.dumps(s).encode())
    finally:
        ioctx.close()


def test_deploy_allow_older_refuses_a_revoked_set_with_one_line(stack: Stack, fleet: list[Gateway]) -> None:
    gw = fleet[0]
    _, old, new = revoked_and_redeployed(stack, gw)
    assert run_cli(gw.config(), "deploy").code == 0
    put_back_as_current(stack, old)
    res = run_cli(gw.config(), "deploy", "--allow-older")
    assert_one_error_line(res, "is recorded as revoked (keyCompromise", "not even with --allow-older")
    assert gw.served() == x509_fingerprint(new)


def test_rollback_never_puts_a_revoked_certificate_back(stack: Stack, fleet: list[Gateway]) -> None:
    gw = fleet[0]
    revoked_and_redeployed(stack, gw)
    before = gw.pem.read_bytes()
    gw.settings["deploy"]["restart_command"] = "/bin/false"
    res = run_cli(gw.config(), "deploy")
    assert_one_error_line(res, "the previous certificate is not put back", "the new one stays installed")
    assert gw.pem.read_bytes() != before
    new = stored_set(stack)
    assert new is not None
    assert str(new["cert_pem"]) in gw.pem.read_text()


def test_corrupt_record_installs_nothing_until_a_revoke_writes_it_anew(stack: Stack, fleet: list[Gateway]) -> None:
    gw = fleet[0]
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    before = gw.pem.read_bytes()
    ioctx = stack.ceph.admin().open_ioctx("rgwtls")
    try:
        ioctx.write_full(REVOKED_OBJECT, b"{not json")
    finally:
        ioctx.close()
    res = run_cli(gw.config(), "deploy")
    assert_one_error_line(res, "not a valid record of revoked certificates")
    assert gw.pem.read_bytes() == before
    # As the line says, a revoke on the issuer writes it anew; then the gateway deploys again.
    old = stored_set(stack)
    assert old is not None
    res = run_cli(issuer, "revoke", "--reason", "superseded", "--timeout", "0")  # the gateway's cron does not run
    assert "rewriting it with this revocation" in res.stderr
    assert_one_error_line(res, "1 of 1 gateways do not serve")
    assert run_cli(gw.config(), "deploy").code == 0
    assert serves_pool(stack, gw)
    res = run_cli(issuer, "revoke", "--reason", "superseded")
    assert res.code == 0, res.stderr
    assert_revoked_once(stack, old, "superseded", 4)


def x509_fingerprint(s: dict[str, Any]) -> str:
    from rgwtls.probe import pem_fingerprint

    return pem_fingerprint(str(s["cert_pem"]))
