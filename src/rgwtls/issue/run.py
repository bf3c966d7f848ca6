"""`rgwtls issue`: from the configured names to a stored certificate set.

Reads top to bottom as the protocol: lock, decide, account, order, present,
propagate, answer, finalize, store, clean up. The set is stored before the
records are removed, and if the pool cannot take it, it is kept in a private
file on this host for the next run to store: a certificate the CA issued is
never thrown away.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from typing import Any

from rgwtls import certs, privileges
from rgwtls.config import CertificateConfig, Config, check_secrets
from rgwtls.errors import Interrupted, IssuerBusy, LockHeld, RgwtlsError, describe
from rgwtls.issue import clock
from rgwtls.issue.decide import decide
from rgwtls.issue.earlier import collect_order, read_kept, store_earlier
from rgwtls.issue.journal import Records, clean_journal
from rgwtls.issue.kept import kept_path, order_path, store
from rgwtls.issue.order import CAs, obtain_from_any
from rgwtls.issue.schedule import config_digest, held_back, next_attempt, read_attempt, record_attempt
from rgwtls.log import notice
from rgwtls.store import IssuerLock, Pool

# The name the log format shows: a line of `issue` reads as it always has, whichever room wrote it.
log = logging.getLogger("rgwtls.issue")


def issue(cfg: Config, staging: bool = False, force: bool = False, only: str | None = None) -> int:
    """Issue what is due; return the number of certificates issued.

    Every issuer host runs this from cron: the one that takes the lock
    decides from the pool, and the others, finding it held by a live issuer,
    have nothing to do. Only an operator's `--force` is told that as an error.
    """
    privileges.check_issuer(cfg)
    wanted = cfg.certificate(only)
    started = clock.now()
    check_secrets(cfg, staging)  # a bad secret is one line before anything is locked or ordered
    with Pool(cfg.ceph) as pool, contextlib.ExitStack() as held:
        try:
            lock = held.enter_context(pool.issuer_lock())
        except IssuerBusy as e:
            if force:
                raise
            log.info("%s; this issuer has nothing to do", e)
            return 0
        issued, failures = _issue_all(cfg, pool, lock, wanted, staging, force, started)
    if failures:
        raise RgwtlsError(f"{len(failures)} of {len(wanted)} certificates failed: {', '.join(failures)}")
    return issued


def replace_now(cfg: Config, pool: Pool, lock: IssuerLock, cert: CertificateConfig, staging: bool) -> None:
    """`revoke`'s replacement: `issue --force` for one certificate under a lock the caller holds (rgwtls.revoke)."""
    _issue_all(cfg, pool, lock, (cert,), staging, True, clock.now())


def _issue_all(
    cfg: Config,
    pool: Pool,
    lock: IssuerLock,
    wanted: tuple[CertificateConfig, ...],
    staging: bool,
    force: bool,
    started: dt.datetime,
) -> tuple[int, list[str]]:
    """Under the lock: each certificate in turn, each attempt recorded; the count issued and the names that failed."""
    issued = 0
    failures: list[str] = []
    # A killed run may have left challenge records: remove them first.
    clean_journal(pool, cfg)
    cas = CAs(cfg, pool, staging)
    for cert in wanted:
        attempt = read_attempt(pool, cert.name, staging)
        try:
            done = _issue_one(cfg, pool, lock, cas, cert, staging, force, attempt)
            if done is None:
                continue  # held back by the retry schedule: the last failure stays recorded
            issued += done
            record_attempt(pool, cert.name, staging, None, cas.warnings.pop(cert.name, None))
        except Exception as e:
            # Every failure, ours or not, is recorded where every gateway
            # can read it, so that `rgwtls check` sees it.
            said = describe(e)
            # A stop or a lost lock is no failure to wait after: the next run goes on.
            retry = None
            if not isinstance(e, Interrupted | LockHeld):
                retry = next_attempt(pool, cert, staging, attempt, started)
            if retry is not None:
                said += f"; next attempt after {retry[1]:%Y-%m-%d %H:%M} UTC ('rgwtls issue --force' tries now)"
                e.args = (said,) if isinstance(e, RgwtlsError) else e.args
            if not isinstance(e, LockHeld):
                # A run that lost the lock (or was fenced) no longer speaks for the pool: the
                # record belongs to the issuer that holds it, whose success must not read as failed.
                record_attempt(pool, cert.name, staging, said, cas.warnings.pop(cert.name, None), retry, cfg)
            if isinstance(e, Interrupted) or len(wanted) == 1:
                raise  # the operator asked the run to stop: not on to the next certificate
            log.error("%s: %s", cert.name, said)
            failures.append(cert.name)
    return issued, failures


def _issue_one(
    cfg: Config,
    pool: Pool,
    lock: IssuerLock,
    cas: CAs,
    cert: CertificateConfig,
    staging: bool,
    force: bool,
    attempt: dict[str, Any],
) -> bool | None:
    """Decide, and renew if due; True if a new certificate was stored, None if the retry schedule held it back."""
    # The lease first, then the read: whatever this run decides from, no
    # other issuer can replace before this run's fenced write, or after it lost the lock.
    lock.claim(pool.set_namespace(staging), f"{cert.name}/current")
    basis = pool.basis(cert.name, staging)
    if basis.problem is not None:
        log.warning("%s; it will be replaced", basis.problem)
    current = basis.current
    kept = kept_path(cfg, cert.name, staging)
    earlier = collect_order(cfg, cas, cert, kept, basis.next_generation) or read_kept(cert, kept)
    if earlier is not None and store_earlier(cfg, pool, lock, cert, basis, staging, cas, earlier, kept):
        return True
    # Judged by the CA that issued it (its ARI, its profile): a set from a
    # fallback CA is no reason to renew by itself.
    judge = (cas.find(current.directory) if current else None) or cas.primary
    profile = judge.cert_for(cert).wanted_profile(judge.cfg.acme)
    decision = decide(cert, current, cas.session(judge), force, cas.directories, profile)
    if not decision.due:
        log.info("%s: %s; nothing to do", cert.name, decision.reason)
        return False
    waiting = None if force or decision.urgent else held_back(attempt, config_digest(cfg))
    if waiting is not None:
        log.info("%s: due (%s), but %s", cert.name, decision.reason, waiting)
        return None
    log.info("%s: renewing: %s", cert.name, decision.reason)
    with Records(cfg, pool, cert.name) as records:
        new = obtain_from_any(cas, records, cert, current, basis.next_generation, decision, order_path(kept))
        # Stored before the records are removed: nothing that may fail
        # afterwards can cost the certificate the CA has just issued.
        store(cfg, pool, lock, new, staging, kept)
    pool.announce(new.name, new.generation, staging)
    info = certs.cert_info(new.cert_pem)
    notice(
        log,
        "%s: renewed (%s); stored generation %d in pool %s%s: %s, valid until %s%s",
        cert.name,
        decision.reason,
        new.generation,
        cfg.ceph.pool,
        " (staging)" if staging else "",
        ", ".join(new.domains),
        info.not_after.strftime("%Y-%m-%d %H:%M UTC"),
        "" if new.directory == cas.primary.directory else f", issued by fallback CA {new.directory}",
    )
    return True
