"""The command line: a small click group; every RgwtlsError becomes one line and exit 1.

Commands import their modules lazily: `deploy` runs from cron on every
gateway every few minutes and must not pay for the ACME stack.
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

from rgwtls import __version__, deadline
from rgwtls.errors import Interrupted, RgwtlsError, describe
from rgwtls.scrub import LINE, clean

log = logging.getLogger("rgwtls")

TEXTFILE = click.option(
    "--textfile",
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write Prometheus metrics to DIR/rgwtls_COMMAND.prom (node_exporter's textfile collector).",
)


def _fail(message: str) -> NoReturn:
    """The run's one line, cleaned (rgwtls.scrub): no key, no control byte, no codec error's byte (maybe a secret's).

    The log formatter cleans it again; this one holds if the logging set-up is not there yet.
    """
    log.error("%s", clean(message, LINE))
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rgwtls")
@click.option(
    "--config",
    "config_file",
    metavar="PATH",
    envvar="RGWTLS_CONFIG",
    help="Configuration file [default: $RGWTLS_CONFIG, else /etc/rgwtls/rgwtls.toml].",
)
@click.option("-v", "--verbose", count=True, help="Also say what is unchanged, and each step.")
@click.option("--syslog", is_flag=True, help="Also log to syslog (ident rgwtls), every level from INFO.")
@click.option("--debug", is_flag=True, help="Log everything, and show tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, config_file: str | None, verbose: int, syslog: bool, debug: bool) -> None:
    """Let's Encrypt certificates for a Ceph RADOS Gateway fleet."""
    from rgwtls import log as logsetup

    logsetup.setup(verbose, debug, syslog)
    ctx.obj = {"config_file": config_file, "debug": debug}


def _load(ctx: click.Context) -> Any:
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


def _run(
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
        cfg = _load(ctx)
        if bound is not None:
            _arm_bound(cfg, command, bound)
        result = fn(cfg, **kwargs)
        ok = True
        return result
    except RgwtlsError as e:
        if ctx.obj["debug"]:
            log.exception("%s", e)
            sys.exit(1)
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted")
    except Exception as e:  # the last line of defence: cron mail gets one line, not a traceback
        if ctx.obj["debug"]:
            raise
        _fail(f"{describe(e)}; run again with --debug for the traceback")
    finally:
        if bound is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            _hard_stop.clear()
        if textfile is not None and cfg is not None:
            _write_metrics(cfg, command, textfile, ok, started)


def _write_metrics(
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
        log.warning("could not write the metrics to %s: %s", textfile, _describe(e))


def _describe(e: Exception) -> str:
    return clean(str(e), LINE) if isinstance(e, OSError) else describe(e)


@main.command()
@click.option(
    "--staging",
    is_flag=True,
    help="Use the staging CA and a separate account; the result is stored apart "
    "from production and never deployed without deploy --staging.",
)
@click.option("--force", is_flag=True, help="Renew even if the stored certificate is still good.")
@click.option("--cert", "cert_name", metavar="NAME", help="Only this configured certificate.")
@TEXTFILE
@click.pass_context
def issue(ctx: click.Context, staging: bool, force: bool, cert_name: str | None, textfile: Path | None) -> None:
    """Obtain or renew the certificates through ACME DNS-01 and store them in the pool."""
    from rgwtls.issue import issue as run_issue

    _run(
        ctx,
        "issue-staging" if staging else "issue",
        textfile,
        run_issue,
        stoppable=True,
        bound=issue_bound,
        staging=staging,
        force=force,
        only=cert_name,
    )


@main.command()
@click.option("--publish", is_flag=True, help="Create each record an authoritative server lacks, via dns.provider.")
@click.option("--remove", is_flag=True, help="Remove exactly these records, where rgwtls made them.")
@click.option("--staging", is_flag=True, help="The records for the staging CA's account.")
@click.option("--cert", "cert_name", metavar="NAME", help="Only this configured certificate.")
@click.pass_context
def persist(ctx: click.Context, publish: bool, remove: bool, staging: bool, cert_name: str | None) -> None:
    """Print the standing dns-persist-01 records (a zone file's lines); --publish creates them once."""
    from rgwtls.issue import persist_records

    if publish and remove:
        _fail("--publish and --remove exclude each other")
    lines = _run(
        ctx,
        "persist",
        None,
        persist_records,
        stoppable=True,
        staging=staging,
        publish=publish,
        remove=remove,
        only=cert_name,
    )
    click.echo("\n".join(lines))


@main.command()
@click.option("--dry-run", is_flag=True, help="Say what would change, and change nothing.")
@click.option("--staging", is_flag=True, help="Deploy the staging set (from issue --staging) instead.")
@click.option(
    "--allow-older", is_flag=True, help="Deploy the pool's set even if it is older than the installed one (a rollback)."
)
@click.option(
    "--force", is_flag=True, help="Try now a certificate that failed on this host, instead of after its backoff."
)
@click.option(
    "--watch",
    is_flag=True,
    help="Keep running (a systemd service): deploy when the issuer announces a new set, and every deploy.interval.",
)
@TEXTFILE
@click.pass_context
def deploy(
    ctx: click.Context,
    dry_run: bool,
    staging: bool,
    allow_older: bool,
    force: bool,
    watch: bool,
    textfile: Path | None,
) -> None:
    """Install the pool's certificate on this gateway and restart radosgw, only if it changed."""
    if watch:
        from rgwtls.watch import watch as run_watch

        if dry_run:
            _fail("--watch and --dry-run exclude each other")

        def each(cfg: Any, ok: bool, started: float) -> None:
            if textfile is not None:
                _write_metrics(cfg, "deploy", textfile, ok, started)

        _run(ctx, "deploy", None, run_watch, stoppable=True, staging=staging, allow_older=allow_older, after_run=each)
        return
    from rgwtls.recorded import deploy_recorded

    def run(cfg: Any, **kwargs: Any) -> Any:
        """A deploy waiting out its backoff is still failing: a WARNING line, exit 1, a failed run in the metrics."""
        from rgwtls.errors import DeployDeferred

        try:
            return deploy_recorded(cfg, **kwargs)
        except DeployDeferred as e:
            log.warning("%s", e)
            sys.exit(1)

    _run(
        ctx,
        "deploy",
        textfile,
        run,
        stoppable=True,
        dry_run=dry_run,
        staging=staging,
        allow_older=allow_older,
        force=force,
    )


@main.command()
@click.option("--wait", is_flag=True, help="Exit 0 only once every known gateway serves the pool's certificate.")
@click.option("--timeout", type=float, default=600.0, show_default=True, metavar="SECONDS", help="How long to follow.")
@click.option(
    "--forget",
    metavar="HOST",
    help="Remove the deploy records of a retired gateway host, so that rollout stops waiting for it; then exit.",
)
@click.pass_context
def rollout(ctx: click.Context, wait: bool, timeout: float, forget: str | None) -> None:
    """On the issuer: tell the fleet of the pool's certificate now, and follow the wave gateway by gateway."""
    from rgwtls.fleet import forget as forget_host
    from rgwtls.fleet import rollout as run_rollout

    if forget is not None:
        _run(ctx, "rollout", None, forget_host, host=forget)
        return
    _run(ctx, "rollout", None, run_rollout, stoppable=True, wait=wait, timeout=timeout)


# RFC 5280's names, as rgwtls.revoked.REASONS has them (listed here: click needs them before anything is imported).
REVOKE_REASONS = ("keyCompromise", "superseded", "affiliationChanged", "cessationOfOperation", "unspecified")


@main.command()
@click.option("--cert", "cert_name", metavar="NAME", help="The configured certificate to revoke (needed if several).")
@click.option("--reason", required=True, type=click.Choice(REVOKE_REASONS), help="Why (RFC 5280).")
@click.option(
    "--timeout",
    type=float,
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="How long the fleet may take to serve the replacement before the CA revokes the old certificate anyway.",
)
@click.option("--staging", is_flag=True, help="Revoke the staging certificate, at the staging CA.")
@click.option("--again", is_flag=True, help="Revoke the current certificate even if an earlier revoke replaced it.")
@click.pass_context
def revoke(ctx: click.Context, cert_name: str | None, reason: str, timeout: float, staging: bool, again: bool) -> None:
    """On the issuer: replace the certificate now, move the fleet onto it, then revoke the old one at its CA."""
    from rgwtls.revoke import revoke as run_revoke

    def bound(cfg: Any) -> tuple[float, str]:
        seconds, how = issue_bound(cfg)
        ca = 2 * (cfg.acme.retries + 1) * cfg.acme.timeout
        return (
            seconds + timeout + ca + 4 * cfg.ceph.timeout,
            f"{how} + --timeout + {ca:g}s at the CA + 4 x ceph.timeout",
        )

    _run(
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


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Stable JSON instead of the table.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Where each certificate stands: in the pool, on this host, and served."""
    from rgwtls.status import gather, render

    report = _run(ctx, "status", None, gather)
    click.echo(report.to_json() if as_json else render(report))
    if report.error:
        sys.exit(1)


@main.command()
@click.option(
    "-w",
    "--warning",
    metavar="DAYS|PCT%",
    help="WARNING at this many days left, or share of the lifetime left [default: check.warning].",
)
@click.option("-c", "--critical", metavar="DAYS|PCT%", help="CRITICAL threshold [default: check.critical].")
@click.option(
    "--grace",
    type=float,
    metavar="SECONDS",
    help="How long the served certificate may differ from the pool's [default: check.grace].",
)
@click.option(
    "-t",
    "--timeout",
    type=click.FloatRange(min=1.0),
    default=8.0,
    show_default=True,
    metavar="SECONDS",
    help="The plugin's whole answer, UNKNOWN at the latest, within this, whatever ceph.timeout says; "
    "keep it below the monitoring's own (check_nrpe -t, 10 s).",
)
@TEXTFILE
@click.pass_context
def check(
    ctx: click.Context,
    warning: str | None,
    critical: str | None,
    grace: float | None,
    timeout: float,
    textfile: Path | None,
) -> None:
    """A monitoring plugin: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, with one status line."""
    from dataclasses import replace

    from rgwtls.check import UNKNOWN, Threshold, ceph_timeout, judge, since_start, within
    from rgwtls.status import gather

    started = time.monotonic()
    cfg = report = None

    def answer() -> tuple[int, str]:
        nonlocal cfg, report
        try:
            cfg = _load(ctx)
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
    ended, answered = within(max(0.0, timeout - _CHECK_SPARE - since_start()), answer)
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
        _write_metrics(cfg, "check", textfile, state != UNKNOWN, started, report, state)
    sys.exit(state)


# What the plugin keeps of its --timeout for its own start and its UNKNOWN line.
_CHECK_SPARE = 0.5
