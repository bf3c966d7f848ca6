"""The command line: a small click group, each command a few lines that call into rgwtls.run.

rgwtls.run turns every RgwtlsError into one line and exit 1. Commands import
their modules lazily: `deploy` runs from cron on every gateway every few
minutes and must not pay for the ACME stack.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rgwtls import __version__, run

TEXTFILE = click.option(
    "--textfile",
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write Prometheus metrics to DIR/rgwtls_COMMAND.prom (node_exporter's textfile collector).",
)


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

    run.command(
        ctx,
        "issue-staging" if staging else "issue",
        textfile,
        run_issue,
        stoppable=True,
        bound=run.issue_bound,
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
        run.fail("--publish and --remove exclude each other")
    lines = run.command(
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
    if not watch:
        run.deploy(ctx, dry_run, staging, allow_older, force, textfile)
    elif dry_run:
        run.fail("--watch and --dry-run exclude each other")
    else:
        run.watch(ctx, staging, allow_older, textfile)


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
        run.command(ctx, "rollout", None, forget_host, host=forget)
        return
    run.command(ctx, "rollout", None, run_rollout, stoppable=True, wait=wait, timeout=timeout)


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
    run.revoke(ctx, cert_name, reason, timeout, staging, again)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Stable JSON instead of the table.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Where each certificate stands: in the pool, on this host, and served."""
    from rgwtls.status import gather, render

    report = run.command(ctx, "status", None, gather)
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
    run.check(ctx, warning, critical, grace, timeout, textfile)
