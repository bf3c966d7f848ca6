"""The run around every command: its bound, its signals, its hard stop, its metrics, its one line.

The command line (rgwtls.cli) is click only; each command calls `command`
here with the function that does its work, so that a stop, a run past its
bound or any failure ends the same way whatever the command: one line on
stderr and exit status 1, after the work's own cleanup ran.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from rgwtls import deadline
from rgwtls.errors import Interrupted, RgwtlsError, describe
from rgwtls.scrub import LINE, clean

log = logging.getLogger("rgwtls")


def fail(message: str) -> NoReturn:
    """The run's one line, cleaned (rgwtls.scrub): no key, no control byte, no codec error's byte (maybe a secret's).

    The log formatter cleans it again; this one holds if the logging set-up is not there yet.
    """
    log.error("%s", clean(message, LINE))
    sys.exit(1)


def load(ctx: click.Context) -> Any:
    from rgwtls import config

    return config.load(config.config_path(ctx.obj["config_file"]))


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class PastBound(Interrupted):
    """The run passed its bound (SIGALRM): it unwinds as from a signal, cleaning up and releasing the lock."""

    def __init__(self, text: str) -> None:
        RgwtlsError.__init__(self, text)
        self.signame = "SIGALRM"


def issue_bound(cfg: Any) -> tuple[float, str]:
    """How long an `issue` run may take, from the configured timeouts, and the formula in words.

    Every wait of a run has its own limit; the bound is their sum, so that
    only a run that crawls at every step, or a process frozen past it,
    reaches it. Per certificate: the order's polling (acme.order_timeout),
    propagation (dns.propagation_timeout), two ACME requests that exhaust
    every retry at their full deadline, and three DNS calls per name
    (present, clean up, and a killed run's journal), each with its retries;
    for the run, four Ceph operations at ceph.timeout. See
    docs/configuration.md, "The run's bound".
    """
    acme, dns = cfg.acme, cfg.dns
    acme_request = (acme.retries + 1) * acme.timeout + sum(
        min(60.0, acme.retry_backoff * 2**i) for i in range(acme.retries)
    )
    if dns.provider == "infoblox":
        attempts = max(1, dns.infoblox.retries)
        dns_call = attempts * dns.infoblox.timeout + sum(min(8.0, 0.5 * 2**i) for i in range(attempts - 1))
    elif dns.provider == "uddi":
        attempts = max(1, dns.uddi.retries)
        dns_call = attempts * dns.uddi.timeout + (attempts - 1) * min(8.0, dns.uddi.max_retry_after)
    elif dns.provider == "rfc2136":
        dns_call = dns.rfc2136.timeout
    else:
        dns_call = dns.hook.timeout
    names = sum(len(c.domains) for c in cfg.certificates)
    # A CA that cannot issue hands the certificate to the next [[acme.fallback]] in the same run:
    # each CA asked is a whole order again, with its own challenges.
    cas = 1 + len(acme.fallback)
    seconds = (
        4 * cfg.ceph.timeout
        + len(cfg.certificates) * cas * (acme.order_timeout + dns.propagation_timeout + 2 * acme_request)
        + 3 * names * cas * dns_call
    )
    per_ca = f" x {cas} CA(s)" if cas > 1 else ""
    how = (
        f"4 x ceph.timeout + {len(cfg.certificates)} certificate(s){per_ca} x (acme.order_timeout + "
        f"dns.propagation_timeout + 2 x {acme_request:g}s per ACME request with retries) + "
        f"3 x {names} name(s){per_ca} x {dns_call:g}s per {dns.provider} call"
    )
    return seconds, how


# Set by a run that has a bound: after a stop, its cleanup gets this long before the process gives up.
_hard_stop: dict[str, Any] = {}


def _interrupt(signum: int, frame: object) -> None:
    """Unwind the run from where it is, so that its finally blocks clean up and roll back.

    A second signal finds the default action back and ends the process at
    once: the next run recovers from whatever that leaves. Every call the
    cleanup makes is capped (rgwtls.deadline): a hanging WAPI cannot hold
    the run.
    """
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_DFL)
    name = signal.Signals(signum).name
    _stopping(f"interrupted by {name}")
    raise Interrupted(name)


def _stopping(why: str) -> None:
    """Cap every later call; a bounded run also gets a last deadline, past which it exits at once."""
    deadline.wind_down(why)
    if not _hard_stop:
        return
    grace = float(_hard_stop["grace"])
    command = _hard_stop["command"]

    def give_up(signum: int, frame: object) -> None:
        log.error(
            "%s: %s, and its cleanup did not end within %gs; exiting now: the next run removes the records "
            "its journal lists and takes over the lock of this dead process",
            command,
            why,
            grace,
        )
        logging.shutdown()
        os._exit(1)

    signal.signal(signal.SIGALRM, give_up)
    signal.setitimer(signal.ITIMER_REAL, grace)


def _arm_bound(cfg: Any, command: str, bound: Any) -> None:
    seconds, how = bound(cfg)
    # The cleanup's calls, then the Ceph operations after them (the journal, the attempt's record, the lock).
    _hard_stop.update(command=command, grace=deadline.CLEANUP + 4 * cfg.ceph.timeout + 2)
    text = (
        f"{command}: the run passed its bound of {seconds:g}s ({how}); stopped, its challenge records removed "
        "(what could not be is journaled for the next run), the lock released; the next run starts over"
    )

    def past(signum: int, frame: object) -> None:
        _stopping(f"past its bound of {seconds:g}s")
        raise PastBound(text)

    signal.signal(signal.SIGALRM, past)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    log.debug("%s: the run's bound is %gs (%s)", command, seconds, how)


def command(
    ctx: click.Context,
    command: str,
    textfile: Path | None,
    fn: Any,
    stoppable: bool = False,
    bound: Any = None,
    **kwargs: Any,
) -> Any:
    started = time.monotonic()
    cfg = None
    ok = False
    if stoppable:
        for s in STOP_SIGNALS:
            signal.signal(s, _interrupt)
    try:
        cfg = load(ctx)
        if bound is not None:
            _arm_bound(cfg, command, bound)
        result = fn(cfg, **kwargs)
        ok = True
        return result
    except RgwtlsError as e:
        if ctx.obj["debug"]:
            log.exception("%s", e)
            sys.exit(1)
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted")
    except Exception as e:  # the last line of defence: cron mail gets one line, not a traceback
        if ctx.obj["debug"]:
            raise
        fail(f"{describe(e)}; run again with --debug for the traceback")
    finally:
        if bound is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            _hard_stop.clear()
        if textfile is not None and cfg is not None:
            write_metrics(cfg, command, textfile, ok, started)


def write_metrics(
    cfg: Any, command: str, textfile: Path, ok: bool, started: float, report: Any = None, check_state: int | None = None
) -> None:
    from rgwtls import metrics, status

    try:
        if report is None:
            # issue writes the pool's side, deploy this host's: see metrics.py, one series, one owner.
            here = command not in ("issue", "issue-staging")
            # Without the dns-persist-01 records' DNS queries, nor the CRL or ARI: cron runs deploy every few minutes.
            report = status.gather(cfg, served=here, deployed=here, persist=False, revocation=False)
        metrics.write(textfile, command, ok, started, report, check_state)
    except Exception as e:  # metrics never turn a run into a traceback, nor a success into a failure
        log.warning("could not write the metrics to %s: %s", textfile, describe_error(e))


def describe_error(e: Exception) -> str:
    return clean(str(e), LINE) if isinstance(e, OSError) else describe(e)


def deploy(
    ctx: click.Context, dry_run: bool, staging: bool, allow_older: bool, force: bool, textfile: Path | None
) -> None:
    """One deploy, as cron runs it, recorded in the pool for rollout."""
    from rgwtls.recorded import deploy_recorded

    def once(cfg: Any, **kwargs: Any) -> Any:
        """A deploy waiting out its backoff is still failing: a WARNING line, exit 1, a failed run in the metrics."""
        from rgwtls.errors import DeployDeferred

        try:
            return deploy_recorded(cfg, **kwargs)
        except DeployDeferred as e:
            log.warning("%s", e)
            sys.exit(1)

    command(
        ctx,
        "deploy",
        textfile,
        once,
        stoppable=True,
        dry_run=dry_run,
        staging=staging,
        allow_older=allow_older,
        force=force,
    )


def watch(ctx: click.Context, staging: bool, allow_older: bool, textfile: Path | None) -> None:
    """deploy --watch: the metrics written after each deploy the watcher makes, not once at its end."""
    from rgwtls.watch import watch as run_watch

    def each(cfg: Any, ok: bool, started: float) -> None:
        if textfile is not None:
            write_metrics(cfg, "deploy", textfile, ok, started)

    command(ctx, "deploy", None, run_watch, stoppable=True, staging=staging, allow_older=allow_older, after_run=each)


def revoke(ctx: click.Context, cert_name: str | None, reason: str, timeout: float, staging: bool, again: bool) -> None:
    """A revoke, bounded as an issue is, plus the wait for the fleet (--timeout), the CA and the records."""
    from rgwtls.revoke import revoke as run_revoke

    def bound(cfg: Any) -> tuple[float, str]:
        seconds, how = issue_bound(cfg)
        ca = 2 * (cfg.acme.retries + 1) * cfg.acme.timeout
        return (
            seconds + timeout + ca + 4 * cfg.ceph.timeout,
            f"{how} + --timeout + {ca:g}s at the CA + 4 x ceph.timeout",
        )

    command(
        ctx,
        "revoke",
        None,
        run_revoke,
        stoppable=True,
        bound=bound,
        reason=reason,
        only=cert_name,
        timeout=timeout,
        staging=staging,
        again=again,
    )


def check(
    ctx: click.Context,
    warning: str | None,
    critical: str | None,
    grace: float | None,
    timeout: float,
    textfile: Path | None,
) -> NoReturn:
    """The monitoring plugin's whole answer within `timeout`, UNKNOWN at the latest; exits with its state."""
    from dataclasses import replace

    from rgwtls.check import UNKNOWN, Threshold, ceph_timeout, judge, since_start, within
    from rgwtls.status import gather

    started = time.monotonic()
    cfg = report = None

    def answer() -> tuple[int, str]:
        nonlocal cfg, report
        try:
            cfg = load(ctx)
            cfg = replace(cfg, ceph=replace(cfg.ceph, timeout=ceph_timeout(cfg.ceph.timeout, timeout)))
            warn = Threshold.parse(warning or cfg.check.warning, "--warning")
            crit = Threshold.parse(critical or cfg.check.critical, "--critical")
            report = gather(cfg)
            return judge(report, warn, crit, cfg.check.grace if grace is None else grace)
        except RgwtlsError as e:
            return UNKNOWN, f"RGWTLS UNKNOWN - {describe(e)}"
        except Exception as e:  # a plugin answers UNKNOWN, whatever happened
            if ctx.obj["debug"]:
                raise
            return UNKNOWN, f"RGWTLS UNKNOWN - {describe(e)}"

    # The metrics need the report: they are written only when it came in time.
    ended, answered = within(max(0.0, timeout - CHECK_SPARE - since_start()), answer)
    if not ended or answered is None:
        click.echo(
            f"RGWTLS UNKNOWN - no answer within {timeout:g}s (--timeout): the Ceph cluster or the gateway's "
            "TLS handshake hangs; see 'rgwtls status' and 'ceph -s'"
        )
        # A thread stuck in librados would hold the interpreter's exit past any deadline.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(UNKNOWN)
    state, line = answered
    click.echo(line)
    if textfile is not None and cfg is not None and report is not None:
        write_metrics(cfg, "check", textfile, state != UNKNOWN, started, report, state)
    sys.exit(state)


# What the plugin keeps of its --timeout for its own start and its UNKNOWN line.
CHECK_SPARE = 0.5
