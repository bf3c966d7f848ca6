"""Renewal that outlives one issuer and one frozen process, through the real stack (Pebble, BIND, Ceph).

An issuer is frozen with SIGSTOP (what a VM freeze or a swap storm does)
while the CA issues, past its lock; another issuer, with a state directory of
its own as a second host has, renews meanwhile. The frozen one, woken, must
not overwrite the newer set, and generations only grow. A failing renewal is
retried on its schedule, not at every cron run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import tomllib
from collections.abc import Callable
from typing import Any

from rgwtls.config import load
from tests.conftest import Result, Stack, run_cli
from tests.test_issue_crash_e2e import Site, Verbose, last_issue
from tests.test_issue_e2e import assert_one_error_line, no_challenge_records, stored_set
from tests.waits import issue_run_bound, wait_for

CLI = Callable[..., Result]


def frozen_then_woken(stack: Stack, frozen: Verbose, settings: dict[str, Any]) -> dict[str, Any]:
    """Freeze the issuer while the CA issues, let a standby renew past its lock, then wake it and let it finish."""
    frozen.wait_for("asking again for the certificate")
    os.killpg(frozen.proc.pid, signal.SIGSTOP)
    try:
        # The standby: another host's state directory, the same pool and CA.
        settings["acme"]["poll_interval"] = 0.1
        settings["deploy"]["state_dir"] = str(stack.dir / "standby-state")
        standby_config = stack.write_config(settings, "standby.toml")
        # The lock lapses after ceph.lock_duration; each try is a whole issue run, within its bound.
        bound = load(standby_config).ceph.lock_duration + issue_run_bound(standby_config)
        wait_for(
            "the frozen issuer's lock to lapse",
            lambda: run_cli(standby_config, "issue", "--force").code == 0,
            bound,
            why="ceph.lock_duration and one issue run's bound",
        )
    finally:
        os.killpg(frozen.proc.pid, signal.SIGCONT)
    standby = stored_set(stack)
    assert standby is not None
    assert standby["generation"] == 2
    assert frozen.wait() == 1
    return standby


def test_issuer_frozen_past_its_lock_never_overwrites_the_set_a_standby_stored(stack: Stack) -> None:
    site = Site(stack, lock_duration=3.0)
    assert run_cli(site.config, "issue").code == 0
    first = stored_set(stack)
    assert first is not None
    settings = tomllib.loads(site.config.read_text())
    settings["acme"]["poll_interval"] = 10.0  # a CA that says "processing": a window to freeze it in
    frozen = Verbose(stack.write_config(settings, "frozen.toml"), "--force")
    try:
        standby = frozen_then_woken(stack, frozen, settings)
    finally:
        if frozen.proc.poll() is None:
            os.killpg(frozen.proc.pid, signal.SIGKILL)
            frozen.wait()
    errors = [line for line in frozen.lines if line.startswith("ERROR:")]
    assert len(errors) == 1, frozen.lines
    assert "was issued" in errors[0]
    assert "but not stored" in errors[0]
    assert "kept in" in errors[0]
    # Nothing was overwritten: the standby's set is current, the first one previous.
    assert stored_set(stack) == standby
    assert stored_set(stack, "previous") == first
    # The loser's failure is not recorded over the standby's success: `check` stays OK on every gateway,
    # and no retry schedule holds back the next run.
    record = last_issue(stack)
    assert record["ok"], record
    assert record["next_attempt"] is None
    # The frozen run's certificate was issued before the standby's: its next run drops it, and the pool keeps
    # the newer set.
    res = run_cli(site.config, "issue")
    assert res.code == 0, res.stderr
    assert "the pool holds a newer one" in res.stderr
    assert stored_set(stack) == standby
    assert site.kept() == []
    assert no_challenge_records(stack)


def test_failed_renewal_waits_for_its_next_attempt_and_force_tries_at_once(stack: Stack, cli: CLI) -> None:
    config = stack.write_config(stack.settings())
    stack.wapi.fail(503, methods={"POST"})  # the records cannot be made; nothing is left to clean up
    res = cli(config, "issue")
    stack.wapi.fail(None)
    assert_one_error_line(res, "infoblox:", "HTTP 503", "next attempt after", "'rgwtls issue --force' tries now")
    record = last_issue(stack)
    assert record["failures"] == 1
    due = dt.datetime.fromisoformat(record["next_attempt"])
    assert dt.timedelta(minutes=55) < due - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=1)
    # The next cron run, minutes later: held back, silent, and nothing asked of the WAPI.
    before = len(stack.wapi.requests_log)
    held = cli(config, "issue")
    assert held.code == 0, held.stderr
    assert held.stderr == ""
    assert len(stack.wapi.requests_log) == before
    assert stored_set(stack) is None
    status = cli(config, "status")
    assert "1 failure(s) in a row; next attempt" in status.stdout
    # An operator does not wait.
    forced = cli(config, "issue", "--force")
    assert forced.code == 0, forced.stderr
    assert stored_set(stack) is not None
    record = last_issue(stack)
    assert record["ok"]
    assert record["failures"] == 0
    assert record["next_attempt"] is None


def test_fixed_configuration_is_tried_at_once_despite_the_schedule(stack: Stack, cli: CLI) -> None:
    settings = stack.settings()
    right = settings["dns"]["infoblox"]["password_file"]
    settings["dns"]["infoblox"]["password_file"] = str(stack.secret_file("bad-pw", "wrong"))
    config = stack.write_config(settings)
    assert cli(config, "issue").code == 1
    settings["dns"]["infoblox"]["password_file"] = right
    res = cli(stack.write_config(settings), "issue")
    assert res.code == 0, res.stderr
    assert stored_set(stack) is not None
    assert json.loads(json.dumps(last_issue(stack)))["ok"]
