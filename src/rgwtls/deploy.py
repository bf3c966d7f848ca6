"""`rgwtls deploy`: from the pool to a certificate served by this gateway, safely.

Reads top to bottom: read, validate, build, compare, install, restart,
verify, and roll back if the gateway does not serve the new certificate.
It runs from cron every few minutes on every gateway, so the no-change path
is one RADOS read and one file read, and it never imports the ACME stack.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from rgwtls import restart, scrub
from rgwtls.backoff import Backoff
from rgwtls.config import Config, DeployConfig
from rgwtls.errors import DeployError
from rgwtls.files import host_lock
from rgwtls.log import notice
from rgwtls.store import CertSet, Pool
from rgwtls.targets import Target, make_target

if TYPE_CHECKING:
    from cryptography import x509

    from rgwtls.revoked import RevokedList

log = logging.getLogger(__name__)


def deploy(
    cfg: Config, dry_run: bool = False, staging: bool = False, allow_older: bool = False, force: bool = False
) -> bool:
    """Make this gateway serve the pool's current set; True if it serves a new one (restarted or not).

    Level-triggered: every run compares the pool's set with what is installed
    AND with what the gateway serves, so a run killed between installing and
    verifying is finished by the next one, whatever the kill interrupted.
    A set that failed its restart or check here waits out a backoff
    (`force` tries at once).
    """
    d = cfg.deploy
    cert_cfg = cfg.certificate(d.certificate or cfg.certificates[0].name)[0]
    names = d.names or cert_cfg.domains
    # 0. One run per host: two would restart radosgw twice.
    with host_lock(Path(d.state_dir), "deploy.lock", HOST_LOCK_WAIT) as mine:
        if not mine:
            log.info("another rgwtls deploy runs on this host; it does the work, this one exits")
            return False
        # The handshake that tells what is served runs while the cluster is
        # asked: both wait on the network, and this is every cron run.
        served = _Served(d, names)
        with Pool(cfg.ceph) as pool:
            # 1. Read the set in one atomic read.
            new = pool.read_set(cert_cfg.name, staging)
            if new is None:
                kind = "staging " if staging else ""
                raise DeployError(
                    f"no {kind}certificate {cert_cfg.name} in pool {cfg.ceph.pool} yet; "
                    f"run 'rgwtls issue{' --staging' if staging else ''}' on the issuer"
                )
            scrub.remember(new.key_pem)  # a socket or command that echoes its lines never gets them into a line
            target = make_target(d, pool, cert_cfg.name)
            installed = target.installed()
            # 2. Build what radosgw reads, and 3. compare it with what is
            # installed and with what is served. This is every cron run but
            # one, so it needs no cryptography: one read, one handshake.
            built = target.build(new)
            if built == installed:
                want = _fingerprint_or_none(new)
                now_served = served.result()
                if want is not None and now_served == want:
                    log.info("%s: generation %d is installed and served; nothing to do", cert_cfg.name, new.generation)
                    return False
                revoked = _revoked(pool, staging)
                return _finish(cfg, pool, target, new, names, now_served, dry_run, force, revoked)
            revoked = _revoked(pool, staging)
            return _install(
                cfg, pool, target, new, names, installed, built, served, dry_run, allow_older, force, revoked
            )


def _revoked(pool: Pool, staging: bool) -> RevokedList:
    """The pool's record of revoked certificates, read in this run only when something may be installed."""
    from rgwtls.validate import read_revoked

    return read_revoked(pool, staging)


HOST_LOCK_WAIT = 5.0


def _install(
    cfg: Config,
    pool: Pool,
    target: Target,
    new: CertSet,
    names: tuple[str, ...],
    installed: bytes | None,
    built: bytes,
    served: _Served,
    dry_run: bool,
    allow_older: bool,
    force: bool,
    revoked: RevokedList | None = None,
) -> bool:
    d = cfg.deploy
    # 4. Validate before touching anything.
    from rgwtls.certs import first_cert
    from rgwtls.validate import check_set, trusted_roots

    checked = check_set(
        new,
        names,
        dt.datetime.now(dt.UTC),
        first_cert(installed),
        allow_older,
        roots=trusted_roots(cfg),
        revoked=revoked,
    )
    what = _what(new, checked.cert)
    if dry_run:
        notice(log, "dry run: would install %s to %s and run: %s", what, target.describe(), _activation_line(d))
        return False
    backoff = Backoff(cfg, new, checked.fingerprint)
    backoff.wait_unless(force)
    # 4b. deploy.activate = "haproxy": a runtime API that cannot swap is one line, before anything changes.
    from rgwtls import activate

    activate.preflight(d)
    if d.splay > 0:
        import random

        time.sleep(random.uniform(0, d.splay))  # noqa: S311 - spreading load, not secrecy
    # 5a. A server that takes the new file without a restart takes no restart slot.
    if d.activate != "restart" and activate.install(d, target, built, installed, names, backoff, revoked):
        target.commit()
        backoff.clear()
        notice(
            log,
            "%s: installed %s to %s, and it is served with no restart (%s)",
            new.name,
            what,
            target.describe(),
            d.activate,
        )
        return True  # served anew: recorded for rollout (and revoke), as a restart is
    # 5 to 9. Under a restart slot: the cluster can take it, install, restart, verify, or roll back.
    restart.install_and_restart(
        cfg, pool, target, built, installed, names, checked.fingerprint, served.result, backoff, revoked
    )
    target.commit()
    backoff.clear()
    activate.record(d, "restart" if d.activate == "restart" else "self-then-restart")
    notice(log, "%s: installed %s to %s, restarted radosgw, and it serves it", new.name, what, target.describe())
    return True


def _finish(
    cfg: Config,
    pool: Pool,
    target: Target,
    new: CertSet,
    names: tuple[str, ...],
    served: str,
    dry_run: bool,
    force: bool,
    revoked: RevokedList | None = None,
) -> bool:
    """The set is installed but not served: an earlier run was stopped before its restart or check ended."""
    d = cfg.deploy
    from rgwtls.validate import check_set, trusted_roots

    checked = check_set(new, names, dt.datetime.now(dt.UTC), None, True, roots=trusted_roots(cfg), revoked=revoked)
    what = _what(new, checked.cert)
    seen = f"serves certificate {served[:16]}" if restart.is_fingerprint(served) else served
    if dry_run:
        notice(
            log, "dry run: %s is installed but %s %s; would run: %s", what, d.verify_endpoint, seen, _activation_line(d)
        )
        return False
    backoff = Backoff(cfg, new, checked.fingerprint)
    backoff.wait_unless(force)
    previous = target.previous()
    # deploy.activate haproxy or self: a run killed after the install is finished the way it began, never by a restart.
    if d.activate != "restart":
        from rgwtls import activate

        activate.preflight(d)
        notice(log, "%s is installed but %s %s; activating it (%s)", what, d.verify_endpoint, seen, d.activate)
        built = target.build(new)
        from rgwtls.validate import unless_revoked

        put_back = unless_revoked(previous, revoked, partial(target.restore, previous))
        if activate.without_restart(d, names, built, previous, put_back, backoff.failed):
            activate.record(d, d.activate)
            target.commit()
            backoff.clear()
            notice(log, "%s: %s serves %s with no restart (%s)", new.name, d.verify_endpoint, what, d.activate)
            return True
    notice(log, "%s is installed but %s %s; restarting radosgw to finish the deploy", what, d.verify_endpoint, seen)
    restart.restart_installed(cfg, pool, target, previous, names, checked.fingerprint, served, backoff, revoked)
    target.commit()
    backoff.clear()
    from rgwtls import activate as counted

    counted.record(d, "restart" if d.activate == "restart" else "self-then-restart")
    notice(log, "%s: restarted radosgw onto %s, and it serves it", new.name, what)
    return True


def _what(new: CertSet, cert: x509.Certificate) -> str:
    return f"{new.name} generation {new.generation} (expires {cert.not_valid_after_utc:%Y-%m-%d})"


def _fingerprint_or_none(s: CertSet) -> str | None:
    from rgwtls.probe import pem_fingerprint

    try:
        return pem_fingerprint(s.cert_pem)
    except ValueError:
        return None


class _Served:
    """The fingerprint the gateway serves now, or what went wrong asking it, found in a thread."""

    def __init__(self, d: DeployConfig, names: tuple[str, ...]) -> None:
        import threading

        self._d, self._names = d, names
        self._answer = "no handshake tried"
        self._thread = threading.Thread(target=self._ask, name="served", daemon=True)
        self._thread.start()

    def _ask(self) -> None:
        from rgwtls.probe import served_fingerprint, server_name

        d = self._d
        try:
            self._answer = served_fingerprint(
                d.verify_endpoint, server_name(d, self._names), min(5.0, d.verify_timeout)
            )
        except (OSError, ValueError) as e:
            self._answer = f"answers no TLS handshake ({e})"

    def result(self) -> str:
        self._thread.join()
        return self._answer


def _activation_line(d: DeployConfig) -> str:
    """What a dry run says step 6 would do, by deploy.activate."""
    from rgwtls import activate

    return activate.plan(d, restart.restart_line(d))
