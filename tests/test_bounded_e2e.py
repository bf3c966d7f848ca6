"""A bounded run, through the real stack: a CA or a WAPI that trickles its answers cannot hold the issuer lock.

Pebble sits behind a trickling front (devsite/trickle.py) and the WAPI
emulator trickles on request: status line and headers included, one byte a
second, so that every read is in time and only a total deadline ends a
request. Each run ends within its bound, the lock is free for the next run,
which issues, and no challenge record is left in BIND. A SIGTERM while the
cleanup's requests trickle ends the run in seconds; an issuer frozen past its
bound stops as soon as it wakes, and cleans up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devsite.ports import free_port
from devsite.proc import state_of
from devsite.proxy import Tinyproxy
from devsite.site import to_toml
from devsite.tlsca import TestCA
from devsite.trickle import TrickleFront, trickle_front
from rgwtls import config, deadline
from rgwtls.run import issue_bound
from tests.conftest import ZONE, Result, Stack, run_cli
from tests.test_issue_e2e import assert_one_error_line, no_challenge_records, stored_set
from tests.waits import wait_for

RECORD = f"_acme-challenge.{ZONE}"


@pytest.fixture
def front(stack: Stack, test_ca: TestCA) -> Iterator[TrickleFront]:
    with trickle_front(test_ca, stack.pebble.port) as f:
        yield f


def fronted(stack: Stack, front: TrickleFront) -> dict[str, Any]:
    """The stack's settings with the CA behind the front, and short timeouts, so that the tests are short."""
    s = stack.settings()
    s["acme"].update(directory=f"{front.url}/dir", timeout=2, retries=1)
    s["acme"]["staging_directory"] = f"{front.url}/dir?staging"
    s["ceph"]["timeout"] = 2.0
    s["dns"]["infoblox"]["retries"] = 2
    return s


def issue_again(path: Path) -> Result:
    """`issue --force` once the front answers again (the retry schedule would wait an hour).

    With a timeout for a busy machine: the 2 s that keep the failing run short
    cut off a healthy answer through the proxy under load (seen in CI).
    """
    doc = tomllib.loads(path.read_text())
    doc["acme"]["timeout"] = 30
    path.write_text(to_toml(doc))
    return timed_issue(path, "--force")[0]


def bound_of(path: Path) -> float:
    return issue_bound(config.load(path))[0]


def timed_issue(path: Path, *args: str) -> tuple[Result, float]:
    started = time.monotonic()
    res = run_cli(path, "issue", *args, timeout=300)
    return res, time.monotonic() - started


def asked(server: socket.socket) -> bool:
    """Whether a question came to this UDP socket (read, and never answered)."""
    try:
        return bool(server.recv(4096))
    except BlockingIOError:
        return False


def start_issue(path: Path, freeze: str = "") -> subprocess.Popen[str]:
    """`rgwtls issue`; with `freeze`, one that stops itself there (tests/freeze.py)."""
    return subprocess.Popen(
        [sys.executable, "-m", *(("tests.freeze", freeze) if freeze else ("rgwtls",)), "issue"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RGWTLS_CONFIG": str(path)},
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> Result:
    code = proc.wait(timeout)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    return Result(code, "", err)


def test_a_ca_that_trickles_every_answer_ends_the_run_within_its_bound_and_the_next_run_issues(
    stack: Stack, front: TrickleFront
) -> None:
    path = stack.write_config(fronted(stack, front))
    front.trickle(1.0)
    res, took = timed_issue(path)
    assert_one_error_line(res, f"ACME: could not fetch the directory {front.url}/dir: no complete answer from")
    assert "within 2s (directly; acme.timeout bounds each request)" in res.lines[-1]
    # Two tries at 2 s each and the backoff between them: far inside the bound.
    assert took < 15 < bound_of(path)
    # acme.retries = 1: at most two tries, each trickled. A try whose request the front
    # had not read when its deadline came is not in the front's log, so not "exactly two".
    hows = [how for _, _, how in front.requests_log]
    assert 1 <= len(hows) <= 2, front.requests_log
    assert set(hows) == {"trickle"}, front.requests_log
    front.clear()
    res = issue_again(path)
    assert res.code == 0, res.stderr  # the lock was released
    assert stored_set(stack) is not None


def test_a_ca_that_trickles_its_challenge_answers_stops_the_run_and_its_records_are_removed(
    stack: Stack, front: TrickleFront
) -> None:
    path = stack.write_config(fronted(stack, front))
    front.trickle(1.0, paths=r"^/chalZ/")
    res, took = timed_issue(path)
    assert_one_error_line(res, "ACME: could not answer the challenge for", "no complete answer from", "within 2s")
    assert took < bound_of(path)
    assert any(how == "trickle" for _, _, how in front.requests_log), front.requests_log
    assert no_challenge_records(stack)
    assert stored_set(stack) is None
    front.clear()
    res = issue_again(path)
    assert res.code == 0, res.stderr
    assert no_challenge_records(stack)


def test_sigterm_while_the_wapi_trickles_the_cleanup_ends_the_run_in_seconds_with_one_line(stack: Stack) -> None:
    settings = stack.settings()
    settings["ceph"]["timeout"] = 2.0
    settings["dns"]["infoblox"].update(timeout=30.0, retries=3)  # a cleanup request would hang 90 s uncapped
    good = stack.write_config(settings, "good.toml")
    # A nameserver that never answers: the run waits for propagation until the signal comes.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        port = free_port()
        silent.bind(("127.0.0.1", port))
        silent.setblocking(False)
        settings["dns"]["nameservers"] = [f"127.0.0.1:{stack.bind.port}", f"127.0.0.1:{port}"]
        settings["dns"]["propagation_timeout"] = 120.0
        stuck = stack.write_config(settings, "stuck.toml")
        proc = start_issue(stuck)
        try:
            bound = bound_of(stuck)
            wait_for("both records published", lambda: len(stack.wapi.records()) == 2, bound, proc, why="its bound")
            stack.wapi.trickle(1.0)  # every answer from now on, the cleanup's DELETEs too
            # A question to the silent nameserver: the run is in its wait for propagation.
            wait_for("a question to the silent nameserver", lambda: asked(silent), bound, proc, why="its bound")
            os.killpg(proc.pid, signal.SIGTERM)
            signalled = time.monotonic()
            res = finish(proc, timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    took = time.monotonic() - signalled
    assert took < deadline.CLEANUP + 3, res.stderr
    assert_one_error_line(res, "interrupted by SIGTERM")
    assert any("cleanup:" in line and "capped while the run is stopping" in line for line in res.lines), res.stderr
    stack.wapi.trickle(None)
    res, _ = timed_issue(good)
    assert res.code == 0, res.stderr  # the lock is free; what the cleanup missed, the journal handed on
    assert no_challenge_records(stack)


def test_an_issuer_frozen_past_its_bound_stops_when_it_wakes_and_removes_its_records(stack: Stack) -> None:
    settings = stack.settings("rfc2136")
    settings["ceph"]["timeout"] = 1.0
    settings["acme"].update(timeout=1, retries=0, order_timeout=3.0)
    settings["dns"]["rfc2136"]["timeout"] = 1.0
    good = stack.write_config(settings, "good.toml")
    settings["dns"]["nameservers"] = [f"127.0.0.1:{stack.bind.port}", f"127.0.0.1:{free_port()}"]
    settings["dns"]["propagation_timeout"] = 4.0
    stuck = stack.write_config(settings, "stuck.toml")
    bound = bound_of(stuck)
    assert bound == 4 * 1 + 3 + 4 + 2 * 1 + 3 * 2 * 1
    # Frozen, as a VM pause or a swap storm would, past the run's bound: where its records are
    # published and it is about to wait for them, so that no other of its limits runs out first.
    proc = start_issue(stuck, freeze="before the propagation wait")
    try:
        wait_for("the issuer's freeze", lambda: state_of(proc.pid) == "T", bound, proc, why="its bound")
        assert len(stack.bind.txt(RECORD)) == 2
        time.sleep(bound + 1)  # its bound's timer, armed before the freeze, has run out by then
        os.kill(proc.pid, signal.SIGCONT)
        woke = time.monotonic()
        res = finish(proc, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert time.monotonic() - woke < 5, res.stderr
    assert_one_error_line(
        res,
        f"issue: the run passed its bound of {bound:g}s (4 x ceph.timeout + 1 certificate(s)",
        "stopped, its challenge records removed",
        "the lock released; the next run starts over",
    )
    assert not stack.bind.txt(RECORD)
    res, _ = timed_issue(good)
    assert res.code == 0, res.stderr
    assert stored_set(stack) is not None


def test_a_trickling_ca_behind_the_proxy_is_cut_off_at_the_deadline_too(
    stack: Stack, front: TrickleFront, proxy: Tinyproxy
) -> None:
    settings = fronted(stack, front)
    settings["acme"].update(proxy=proxy.url, proxy_password_file=str(stack.secret_file("pw", proxy.password)))
    path = stack.write_config(settings)
    front.trickle(1.0, paths=r"^/dir")
    res, took = timed_issue(path)
    assert_one_error_line(res, f"no complete answer from {front.url}/dir within 2s (through proxy {proxy.bare_url}")
    assert took < 15
    front.clear()
    res = issue_again(path)
    assert res.code == 0, res.stderr
