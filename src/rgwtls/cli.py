"""The command line: a small click group; every RgwtlsError becomes one line and exit 1.

Commands import their modules lazily: `deploy` runs from cron on every
gateway every few minutes and must not pay for the ACME stack.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, NoReturn

import click

from rgwtls import __version__
from rgwtls.errors import RgwtlsError

log = logging.getLogger("rgwtls")


def _fail(message: str) -> NoReturn:
    log.error("%s", message)
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
@click.option("-v", "--verbose", count=True, help="Also say what is unchanged and each step.")
@click.option("--debug", is_flag=True, help="Log everything, and show tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, config_file: str | None, verbose: int, debug: bool) -> None:
    """Let's Encrypt certificates for a Ceph RADOS Gateway fleet."""
    from rgwtls import log as logsetup

    logsetup.setup(verbose, debug)
    ctx.obj = {"config_file": config_file, "debug": debug}


def _run(ctx: click.Context, fn: Any, *args: Any, **kwargs: Any) -> Any:
    from rgwtls import config

    try:
        cfg = config.load(config.config_path(ctx.obj["config_file"]))
        return fn(cfg, *args, **kwargs)
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
        _fail(f"unexpected {type(e).__name__}: {e}; run again with --debug for the traceback")


@main.command()
@click.option(
    "--staging",
    is_flag=True,
    help="Use the staging CA and a separate account; the result is stored apart "
    "from production and never deployed without deploy --staging.",
)
@click.option("--force", is_flag=True, help="Renew even if the stored certificate is still good.")
@click.option("--cert", "cert_name", metavar="NAME", help="Only this configured certificate.")
@click.pass_context
def issue(ctx: click.Context, staging: bool, force: bool, cert_name: str | None) -> None:
    """Obtain or renew the certificates through ACME DNS-01 and store them in the pool."""
    from rgwtls.issue import issue as run_issue

    _run(ctx, run_issue, staging=staging, force=force, only=cert_name)


@main.command()
@click.option("--dry-run", is_flag=True, help="Say what would change, and change nothing.")
@click.option("--staging", is_flag=True, help="Deploy the staging set (from issue --staging) instead.")
@click.option(
    "--allow-older",
    is_flag=True,
    help="Deploy the pool's set even if it is older than the installed one (a rollback).",
)
@click.pass_context
def deploy(ctx: click.Context, dry_run: bool, staging: bool, allow_older: bool) -> None:
    """Install the pool's certificate on this gateway and restart radosgw, only if it changed."""
    from rgwtls.deploy import deploy as run_deploy

    _run(ctx, run_deploy, dry_run=dry_run, staging=staging, allow_older=allow_older)
