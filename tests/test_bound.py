"""`issue` has a bound from its timeouts: past it, the run unwinds with one line; a cleanup that hangs is cut."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import click
import pytest

from rgwtls import cli, config, deadline, run
from rgwtls.errors import Interrupted

CONFIG = """
[ceph]
timeout = 0.1

[[certificate]]
name = "cog.example.org"
domains = ["cog.example.org", "*.cog.example.org"]
"""


def write(tmp_path: Path, text: str = CONFIG) -> Path:
    p = tmp_path / "rgwtls.toml"
    p.write_text(text)
    p.chmod(0o644)
    return p


def test_the_default_bound_is_the_sum_of_every_wait_an_issue_run_may_make(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, CONFIG.replace("timeout = 0.1", "timeout = 10")))
    seconds, how = run.issue_bound(cfg)
    acme_request = 5 * 30 + (1 + 2 + 4 + 8)  # acme.retries 4, at acme.timeout 30, and the backoff between
    infoblox_call = 3 * 30 + 0.5 + 1  # dns.infoblox.retries 3, at its timeout 30, and the backoff between
    assert seconds == 4 * 10 + (300 + 300 + 2 * acme_request) + 3 * 2 * infoblox_call
    assert how == (
        "4 x ceph.timeout + 1 certificate(s) x (acme.order_timeout + dns.propagation_timeout + "
        "2 x 165s per ACME request with retries) + 3 x 2 name(s) x 91.5s per infoblox call"
    )


def test_each_fallback_ca_counts_a_whole_order_again_so_a_run_that_falls_back_is_not_cut_off(tmp_path: Path) -> None:
    alone = run.issue_bound(config.load(write(tmp_path)))[0]
    text = CONFIG + "\n[[acme.fallback]]\ndirectory = 'https://acme.zerossl.example/v2/DV90'\n"
    text += "\n[[acme.fallback]]\ndirectory = 'https://acme.other.example/directory'\n"
    seconds, how = run.issue_bound(config.load(write(tmp_path, text)))
    ceph = 4 * 0.1
    assert seconds - ceph == pytest.approx(3 * (alone - ceph))  # the primary and two fallbacks
    assert "1 certificate(s) x 3 CA(s) x (acme.order_timeout" in how
    assert "3 x 2 name(s) x 3 CA(s) x" in how


def test_each_back_end_counts_its_own_call(tmp_path: Path) -> None:
    base = CONFIG + "\n[dns]\nprovider = '{0}'\n[dns.{0}]\ntimeout = 7\n"
    rfc = run.issue_bound(config.load(write(tmp_path, base.format("rfc2136"))))[0]
    hook = run.issue_bound(config.load(write(tmp_path, base.format("hook"))))[0]
    assert hook == rfc  # one call each, at its timeout
    uddi = run.issue_bound(config.load(write(tmp_path, base.format("uddi"))))[0]
    assert uddi - rfc == pytest.approx(3 * 2 * (4 * 7 + 3 * 8 - 7))  # four attempts, up to 8 s apart


def test_a_run_past_its_bound_unwinds_with_one_line_and_is_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path)
    unwound: list[BaseException] = []

    def crawl(cfg: config.Config) -> None:
        try:
            time.sleep(10)
        except Interrupted as e:
            unwound.append(e)
            # The cleanup that follows sees the wind-down.
            assert deadline.stopping() == "past its bound of 0.3s"
            raise

    ctx = click.Context(cli.main, obj={"config_file": str(path), "debug": False})
    started = time.monotonic()
    try:
        with caplog.at_level(logging.ERROR, "rgwtls"), pytest.raises(SystemExit) as exit:
            run.command(ctx, "issue", None, crawl, stoppable=True, bound=lambda cfg: (0.3, "test formula"))
    finally:
        deadline.reset()
        for s in run.STOP_SIGNALS:
            signal.signal(s, signal.SIG_DFL)
    assert time.monotonic() - started < 2
    assert exit.value.code == 1
    assert isinstance(unwound[0], run.PastBound)
    assert [r.getMessage() for r in caplog.records] == [
        "issue: the run passed its bound of 0.3s (test formula); stopped, its challenge records removed "
        "(what could not be is journaled for the next run), the lock released; the next run starts over"
    ]
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # disarmed


def test_a_cleanup_that_hangs_after_the_bound_ends_the_process_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path)
    script = textwrap.dedent(
        f"""
        import time, click
        from rgwtls import cli, deadline, log, run
        log.setup(0, False, False)
        deadline.CLEANUP = 0.2

        def hang(cfg):
            try:
                time.sleep(10)
            finally:
                time.sleep(30)  # a cleanup stuck where nothing caps it

        ctx = click.Context(cli.main, obj={{"config_file": {str(path)!r}, "debug": False}})
        run.command(ctx, "issue", None, hang, stoppable=True, bound=lambda cfg: (0.3, "test"))
        """
    )
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    took = time.monotonic() - started
    # The grace: the cleanup's 0.2 s, four Ceph operations at 0.1 s, and 2 s.
    assert 2.9 < took < 6, res.stderr
    assert res.returncode == 1
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].endswith(
        "issue: past its bound of 0.3s, and its cleanup did not end within 2.6s; exiting now: the next run removes "
        "the records its journal lists and takes over the lock of this dead process"
    )


def test_a_hook_call_after_the_cleanups_time_is_not_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rgwtls.config import HookConfig
    from rgwtls.dns import Challenge
    from rgwtls.dns.hook import Hook
    from rgwtls.errors import DnsError

    hook = tmp_path / "hook.sh"
    hook.write_text('#!/bin/sh\necho "$@" >> ' + str(tmp_path / "calls") + "\n")
    hook.chmod(0o755)
    h = Hook(HookConfig(command=str(hook), timeout=120), tmp_path / "rgwtls.toml")
    ch = Challenge("cog.example.org", "token", "value")
    monkeypatch.setattr(deadline, "CLEANUP", 0.0)
    deadline.wind_down("interrupted by SIGTERM")
    try:
        with pytest.raises(DnsError) as err:
            h.cleanup(ch)
    finally:
        deadline.reset()
    assert str(err.value) == (
        f"hook: {hook} clean_challenge cog.example.org not made: the run is stopping (interrupted by SIGTERM) "
        "and its 0s for cleanup are used up"
    )
    assert not (tmp_path / "calls").exists()
    h.cleanup(ch)  # a run that is not stopping calls it as ever
    assert (tmp_path / "calls").read_text() == "clean_challenge cog.example.org token value\n"
