"""`rgwtls issue`: from the configured names to a stored certificate set.

Reads top to bottom as the protocol: lock, decide, account, order, present,
propagate, answer, finalize, store, clean up. The set is stored before the
records are removed, and if the pool cannot take it, it is kept in a private
file on this host for the next run to store: a certificate the CA issued is
never thrown away.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from rgwtls import certs, privileges
from rgwtls.config import CertificateConfig, Config, check_secrets
from rgwtls.errors import Interrupted, IssuerBusy, LockHeld, RgwtlsError, describe
from rgwtls.issue import clock
from rgwtls.issue.decide import Decision
from rgwtls.issue.decide import decide as _decide
from rgwtls.issue.journal import JOURNAL
from rgwtls.issue.journal import Records as _Records
from rgwtls.issue.journal import clean_journal as _clean_journal
from rgwtls.issue.kept import ORDER_FORMAT
from rgwtls.issue.kept import discard as _discard
from rgwtls.issue.kept import keep as _keep
from rgwtls.issue.kept import kept_path as _kept_path
from rgwtls.issue.kept import order_path as _order_path
from rgwtls.issue.kept import store as _store
from rgwtls.issue.order import CAs as _CAs
from rgwtls.issue.order import build_set as _build_set
from rgwtls.issue.order import obtain_from_any as _obtain_from_any
from rgwtls.issue.persist import persist_records
from rgwtls.issue.schedule import RETRY_EARLY, RETRY_FIRST, RETRY_MAX, RETRY_MIN
from rgwtls.issue.schedule import config_digest as _config_digest
from rgwtls.issue.schedule import held_back as _held_back
from rgwtls.issue.schedule import next_attempt as _next_attempt
from rgwtls.issue.schedule import read_attempt as _read_attempt
from rgwtls.issue.schedule import record_attempt as _record_attempt
from rgwtls.issue.session import account_object
from rgwtls.log import notice
from rgwtls.store import Basis, CertSet, IssuerLock, Pool
from rgwtls.validate import check_issued

log = logging.getLogger(__name__)

# What the rest of rgwtls and its tests import from here, wherever it lives now.
__all__ = [
    "JOURNAL",
    "ORDER_FORMAT",
    "RETRY_EARLY",
    "RETRY_FIRST",
    "RETRY_MAX",
    "RETRY_MIN",
    "Decision",
    "_CAs",
    "_decide",
    "_held_back",
    "_next_attempt",
    "_obtain_from_any",
    "account_object",
    "issue",
    "persist_records",
]


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
    _clean_journal(pool, cfg)
    cas = _CAs(cfg, pool, staging)
    for cert in wanted:
        attempt = _read_attempt(pool, cert.name, staging)
        try:
            done = _issue_one(cfg, pool, lock, cas, cert, staging, force, attempt)
            if done is None:
                continue  # held back by the retry schedule: the last failure stays recorded
            issued += done
            _record_attempt(pool, cert.name, staging, None, cas.warnings.pop(cert.name, None))
        except Exception as e:
            # Every failure, ours or not, is recorded where every gateway
            # can read it, so that `rgwtls check` sees it.
            said = describe(e)
            # A stop or a lost lock is no failure to wait after: the next run goes on.
            retry = None
            if not isinstance(e, Interrupted | LockHeld):
                retry = _next_attempt(pool, cert, staging, attempt, started)
            if retry is not None:
                said += f"; next attempt after {retry[1]:%Y-%m-%d %H:%M} UTC ('rgwtls issue --force' tries now)"
                e.args = (said,) if isinstance(e, RgwtlsError) else e.args
            if not isinstance(e, LockHeld):
                # A run that lost the lock (or was fenced) no longer speaks for the pool: the
                # record belongs to the issuer that holds it, whose success must not read as failed.
                _record_attempt(pool, cert.name, staging, said, cas.warnings.pop(cert.name, None), retry, cfg)
            if isinstance(e, Interrupted) or len(wanted) == 1:
                raise  # the operator asked the run to stop: not on to the next certificate
            log.error("%s: %s", cert.name, said)
            failures.append(cert.name)
    return issued, failures


def _issue_one(
    cfg: Config,
    pool: Pool,
    lock: IssuerLock,
    cas: _CAs,
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
    kept = _kept_path(cfg, cert.name, staging)
    earlier = _collect_order(cfg, cas, cert, kept, basis.next_generation) or _read_kept(cert, kept)
    if earlier is not None and _store_earlier(cfg, pool, lock, cert, basis, staging, cas, earlier, kept):
        return True
    # Judged by the CA that issued it (its ARI, its profile): a set from a
    # fallback CA is no reason to renew by itself.
    judge = (cas.find(current.directory) if current else None) or cas.primary
    profile = judge.cert_for(cert).wanted_profile(judge.cfg.acme)
    decision = _decide(cert, current, cas.session(judge), force, cas.directories, profile)
    if not decision.due:
        log.info("%s: %s; nothing to do", cert.name, decision.reason)
        return False
    held_back = None if force or decision.urgent else _held_back(attempt, _config_digest(cfg))
    if held_back is not None:
        log.info("%s: due (%s), but %s", cert.name, decision.reason, held_back)
        return None
    log.info("%s: renewing: %s", cert.name, decision.reason)
    with _Records(cfg, pool, cert.name) as records:
        new = _obtain_from_any(cas, records, cert, current, basis.next_generation, decision, _order_path(kept))
        # Stored before the records are removed: nothing that may fail
        # afterwards can cost the certificate the CA has just issued.
        _store(cfg, pool, lock, new, staging, kept)
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


# -- the issued set: stored at once, else kept on this host -------------------------


def _read_kept(cert: CertificateConfig, path: Path) -> CertSet | None:
    """The set an earlier run issued but could not store, if it left one; an unreadable one is dropped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("%s: cannot read the certificate kept in %s (%s); ordering as usual", cert.name, path, e.strerror)
        return None
    try:
        return CertSet.from_bytes(data, str(path))
    except (RgwtlsError, ValueError) as e:
        log.warning("%s: dropping %s: %s", cert.name, path, e)
        _discard(path)
        return None


def _store_earlier(
    cfg: Config,
    pool: Pool,
    lock: IssuerLock,
    cert: CertificateConfig,
    basis: Basis,
    staging: bool,
    cas: _CAs,
    kept: CertSet,
    path: Path,
) -> bool:
    """Store the set an earlier run obtained but did not store, instead of ordering again; True if it was stored."""
    try:
        info = certs.cert_info(kept.cert_pem)
        matches = certs.key_matches_cert(kept.key_pem, kept.cert_pem)
    except (RgwtlsError, ValueError) as e:
        log.warning("%s: dropping %s: %s", cert.name, path, e)
        _discard(path)
        return False
    until = info.not_after.strftime("%Y-%m-%d %H:%M UTC")
    now = clock.now()
    current = basis.current
    stale = None
    if not matches:
        stale = "its key does not match its certificate"
    elif info.names != set(cert.domains) or kept.name != cert.name:
        stale = "its names are no longer the configured ones"
    elif (issuer := cas.find(kept.directory)) is None:
        stale = f"a CA no longer configured issued it ({kept.directory})"
    elif issuer.cert_for(cert).wanted_profile(issuer.cfg.acme) not in ("", kept.profile):
        stale = f"its profile is no longer the configured one ({kept.profile or 'none recorded'})"
    elif info.not_after <= now:
        stale = f"it expired at {until}"
    elif current is not None:
        stored = certs.cert_info(current.cert_pem)
        if stored.fingerprint == info.fingerprint:
            # The pool got it before the run was stopped; only the legacy objects may be missing.
            if cert.name == cfg.certificates[0].name:
                pool.write_legacy(current, staging)
            log.info("%s: the certificate kept in %s is already in the pool", cert.name, path)
            _discard(path)
            return False
        if stored.not_before >= info.not_before:
            stale = "the pool holds a newer one"
    if stale is not None:
        log.warning("%s: dropping the certificate kept in %s (valid until %s): %s", cert.name, path, until, stale)
        _discard(path)
        return False
    new = dataclasses.replace(kept, generation=basis.next_generation)
    _store(cfg, pool, lock, new, staging, path)
    pool.announce(new.name, new.generation, staging)
    notice(
        log,
        "%s: stored generation %d in pool %s%s, the certificate an earlier run issued and kept in %s "
        "(valid until %s); nothing ordered",
        cert.name,
        new.generation,
        cfg.ceph.pool,
        " (staging)" if staging else "",
        path,
        until,
    )
    return True


# -- a finalized order: the next run fetches its certificate ------------------------


def _collect_order(cfg: Config, cas: _CAs, cert: CertificateConfig, kept: Path, generation: int) -> CertSet | None:
    """The certificate of an order an earlier run finalized but never kept, fetched from the CA and kept now.

    None if there is no such order, or it gives no certificate any more:
    then the note goes, and the run orders as usual.
    """
    path = _order_path(kept)
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("%s: dropping the order noted in %s (%s); ordering as usual", cert.name, path, e)
        _discard(path)
        return None
    if kept.exists():
        log.info("%s: the set of the order noted in %s is kept in %s already", cert.name, path, kept)
        _discard(path)
        return None
    stale = _stale_order(doc, cas.directories)
    if stale is not None:
        log.warning("%s: dropping the order noted in %s: %s", cert.name, path, stale)
        _discard(path)
        return None
    order_url = doc["order"]
    log.info("%s: an earlier run finalized order %s and was stopped; fetching its certificate", cert.name, order_url)
    ca = cas.find(doc["directory"]) or cas.primary
    fullchain = cas.session(ca).registered().collect(order_url, time.monotonic() + cfg.acme.order_timeout)
    if fullchain is None:
        # The earlier run said why it failed; this one orders anew.
        log.info("%s: order %s gives no certificate; ordering as usual", cert.name, order_url)
        _discard(path)
        return None
    try:
        key = certs.load_private_key(doc["key_pem"])
        new = _build_set(cert, key, fullchain, generation, ca.directory, doc["profile"])
        check_issued(new, cfg, path)
    except (RgwtlsError, ValueError) as e:
        log.warning("%s: dropping the order noted in %s: %s; ordering as usual", cert.name, path, e)
        _discard(path)
        return None
    not_kept = _keep(kept, new)
    if not_kept is None:
        _discard(path)
    else:
        log.info("%s: cannot keep the fetched set in %s (%s); storing it without that net", cert.name, kept, not_kept)
    return new


def _stale_order(doc: object, directories: Collection[str]) -> str | None:
    """Why a noted order must not be fetched, or None; its certificate is judged like any kept set once fetched."""
    fields = {"format": str, "directory": str, "order": str, "profile": str, "key_pem": str}
    if not isinstance(doc, dict) or any(not isinstance(doc.get(k), t) for k, t in fields.items()):
        return "it is not an order note of this rgwtls"
    if doc["format"] != ORDER_FORMAT:
        return f"unknown format {doc['format']!r}"
    if doc["directory"] not in directories:
        # Its URL is a CA's this run has no account with.
        return f"it was placed with another CA ({doc['directory']})"
    return None
