"""`rgwtls issue`: from the configured names to a stored certificate set.

Reads top to bottom as the protocol: lock, decide, account, order, present,
propagate, answer, finalize, store, clean up.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rgwtls import certs
from rgwtls.config import CertificateConfig, Config
from rgwtls.dns import Challenge, DnsProvider, make_provider
from rgwtls.errors import AcmeError, RgwtlsError
from rgwtls.log import notice
from rgwtls.store import NS_ISSUER, CertSet, Pool

if TYPE_CHECKING:
    from rgwtls.acmeflow import Acme

log = logging.getLogger(__name__)
JOURNAL = "challenges.journal"


@dataclass(frozen=True)
class Decision:
    due: bool
    reason: str
    replaces: str | None = None


def issue(cfg: Config, staging: bool = False, force: bool = False, only: str | None = None) -> int:
    """Issue what is due; return the number of certificates issued."""
    wanted = cfg.certificate(only)
    directory = cfg.acme.staging_directory if staging else cfg.acme.directory
    issued = 0
    failures: list[str] = []
    with Pool(cfg.ceph) as pool, pool.issuer_lock():
        # A crashed run may have left challenge records: remove them first.
        _clean_journal(pool, cfg)
        session = _Session(cfg, pool, directory, staging)
        for cert in wanted:
            try:
                if _issue_one(cfg, pool, session, cert, staging, force, directory):
                    issued += 1
                _record_attempt(pool, cert.name, staging, None)
            except RgwtlsError as e:
                # Recorded where every gateway can read it, for `rgwtls check`.
                _record_attempt(pool, cert.name, staging, str(e))
                if len(wanted) == 1:
                    raise
                log.error("%s: %s", cert.name, e)
                failures.append(cert.name)
    if failures:
        raise RgwtlsError(f"{len(failures)} of {len(wanted)} certificates failed: {', '.join(failures)}")
    return issued


def _issue_one(
    cfg: Config,
    pool: Pool,
    session: _Session,
    cert: CertificateConfig,
    staging: bool,
    force: bool,
    directory: str,
) -> bool:
    """Decide, and renew if due; True if a new certificate was stored."""
    try:
        current = pool.read_set(cert.name, staging)
    except RgwtlsError as e:
        log.warning("%s; it will be replaced", e)
        current = None
    decision = _decide(cert, current, session, force, directory)
    if not decision.due:
        log.info("%s: %s; nothing to do", cert.name, decision.reason)
        return False
    log.info("%s: renewing: %s", cert.name, decision.reason)
    new = _obtain(cfg, pool, session, cert, current, decision)
    pool.write_set(new, staging, legacy=cert is cfg.certificates[0])
    info = certs.cert_info(new.cert_pem)
    notice(
        log,
        "%s: renewed (%s); stored generation %d in pool %s%s: %s, valid until %s",
        cert.name,
        decision.reason,
        new.generation,
        cfg.ceph.pool,
        " (staging)" if staging else "",
        ", ".join(new.domains),
        info.not_after.strftime("%Y-%m-%d %H:%M UTC"),
    )
    return True


def _record_attempt(pool: Pool, name: str, staging: bool, error: str | None) -> None:
    """Keep the last attempt, success and failure of `issue` beside the set."""
    ns = pool.set_namespace(staging)
    obj = f"{name}/last-issue"
    now = _now().isoformat(timespec="seconds")
    try:
        raw = pool.read(ns, obj)
        doc = json.loads(raw) if raw else {}
        if not isinstance(doc, dict):
            doc = {}
    except (RgwtlsError, ValueError):
        doc = {}
    doc.update(at=now, host=socket.gethostname(), ok=error is None, error=error)
    doc["last_success" if error is None else "last_failure"] = now
    try:
        pool.write(ns, obj, json.dumps(doc).encode())
    except RgwtlsError as e:
        log.warning("could not record this attempt in the pool: %s", e)


class _Session:
    """The ACME session, opened only when a decision needs the CA."""

    def __init__(self, cfg: Config, pool: Pool, directory: str, staging: bool) -> None:
        self.cfg, self.pool, self.directory, self.staging = cfg, pool, directory, staging
        self._acme: Acme | None = None
        self._registered = False

    def acme(self) -> Acme:
        from rgwtls.acmeflow import Acme, new_account_key

        if self._acme is None:
            obj = f"account.{'staging' if self.staging else 'production'}"
            raw = self.pool.read(NS_ISSUER, obj)
            doc = json.loads(raw) if raw else {}
            if doc.get("directory") != self.directory or not doc.get("key"):
                # A first run, or the CA changed: a new account key, kept in the
                # issuer-only namespace so that another issuer can take over.
                doc = {
                    "directory": self.directory,
                    "key": new_account_key(),
                    "created": _now().isoformat(timespec="seconds"),
                    "created_by": socket.gethostname(),
                }
                self.pool.write(NS_ISSUER, obj, json.dumps(doc).encode())
                log.info("created a new ACME account key for %s", self.directory)
            self._acme = Acme(self.cfg.acme, self.directory, doc["key"])
        return self._acme

    def registered(self) -> Acme:
        acme = self.acme()
        if not self._registered:
            acme.register(self.cfg.acme.email)
            self._registered = True
        return acme


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _decide(
    cert: CertificateConfig, current: CertSet | None, session: _Session, force: bool, directory: str
) -> Decision:
    """Renew when asked, when names or CA changed, in the ARI window, or with a third of the life left."""
    if current is None:
        return Decision(True, "no certificate in the pool yet")
    info = certs.cert_info(current.cert_pem)
    now = _now()
    if force:
        return Decision(True, "--force", info.ari_id)
    if info.names != set(cert.domains):
        added = sorted(set(cert.domains) - info.names)
        dropped = sorted(info.names - set(cert.domains))
        return Decision(True, f"names changed (add {added or 'none'}, drop {dropped or 'none'})")
    if current.directory != directory:
        return Decision(True, f"it was issued by another CA ({current.directory})")
    if info.not_after <= now:
        return Decision(True, f"it expired at {info.not_after:%Y-%m-%d %H:%M} UTC")
    days_left = info.remaining(now).total_seconds() / 86400
    try:
        ari = session.acme().renewal_time(current.cert_pem)
    except AcmeError as e:
        # A CA that is down on a day nothing is due is no failure of ours; if
        # the lifetime rule says renew, obtaining will report it.
        log.warning("renewal info unavailable, deciding by the lifetime: %s", e)
        ari = None
    if ari is not None:
        if now >= ari:
            return Decision(True, f"the CA's renewal window (ARI) opened at {ari:%Y-%m-%d %H:%M} UTC", info.ari_id)
        return Decision(
            False,
            f"valid until {info.not_after:%Y-%m-%d} ({days_left:.0f} days left); "
            f"the CA's renewal window (ARI) opens {ari:%Y-%m-%d %H:%M} UTC",
        )
    renew_at = info.not_after - info.lifetime / 3
    if now >= renew_at:
        return Decision(True, f"less than a third of its lifetime left ({days_left:.1f} days)", info.ari_id)
    return Decision(
        False,
        f"valid until {info.not_after:%Y-%m-%d} ({days_left:.0f} days left); renewal due {renew_at:%Y-%m-%d}",
    )


def _obtain(
    cfg: Config,
    pool: Pool,
    session: _Session,
    cert: CertificateConfig,
    current: CertSet | None,
    decision: Decision,
) -> CertSet:
    from rgwtls.propagation import wait_for_values

    # A new key for every certificate, made while the CA and the DNS work:
    # only finalizing needs it, and RSA 4096 takes some 0.4 s to make.
    keygen = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keygen")
    new_key = keygen.submit(certs.new_private_key, cert.key_type or cfg.acme.key_type)
    keygen.shutdown(wait=False)
    acme = session.registered()
    deadline = time.monotonic() + cfg.acme.order_timeout
    # One order for all names: `x` and `*.x` share one TXT name, two values.
    replaces = decision.replaces if acme.has_ari else None
    order = acme.new_order(cert.domains, replaces)
    pending = acme.dns_challenges(order)
    provider = make_provider(cfg) if pending else None
    attempted: list[Challenge] = []
    try:
        if provider is not None:
            # The journal is written before the first record exists, so a
            # crash at any point leaves a list of what to clean up.
            _write_journal(pool, [p.challenge for p in pending])
            for p in pending:
                attempted.append(p.challenge)
                provider.present(p.challenge)
                log.info("%s: published TXT %s via %s", cert.name, p.challenge.record_name, provider.name)
            expected: dict[str, set[str]] = {}
            for p in pending:
                expected.setdefault(p.challenge.record_name, set()).add(p.challenge.value)
            wait_for_values(expected, cfg.dns)
            acme.answer_and_wait(pending, deadline)
        key = new_key.result()
        fullchain = acme.finalize(order, certs.make_csr(key, cert.domains), deadline)
    finally:
        if provider is not None and _cleanup(provider, attempted):
            pool.remove(NS_ISSUER, JOURNAL)
    return _build_set(cert, key, fullchain, current, session.directory)


def _build_set(
    cert: CertificateConfig, key: certs.PrivateKey, fullchain: str, current: CertSet | None, directory: str
) -> CertSet:
    leaf, chain = certs.split_pem_chain(fullchain)
    if not certs.public_key_matches(key, leaf):
        raise RgwtlsError(f"{cert.name}: the CA's certificate does not match our key; nothing stored")
    names = certs.cert_info(leaf).names
    if names != set(cert.domains):
        raise RgwtlsError(
            f"{cert.name}: the CA's certificate names {sorted(names)}, not the ones ordered; nothing stored"
        )
    return CertSet(
        name=cert.name,
        generation=(current.generation + 1) if current else 1,
        key_pem=certs.private_pem(key),
        cert_pem=leaf,
        chain_pem=chain,
        domains=tuple(cert.domains),
        issued_at=_now().isoformat(timespec="seconds"),
        issued_by=socket.gethostname(),
        directory=directory,
    )


def _cleanup(provider: DnsProvider, challenges: list[Challenge]) -> bool:
    """Remove every record; log failures without hiding the error that got us here."""
    clean = True
    for ch in challenges:
        try:
            provider.cleanup(ch)
        except RgwtlsError as e:
            log.warning("cleanup: %s; remove it by hand", e)
            clean = False
    return clean


def _write_journal(pool: Pool, challenges: list[Challenge]) -> None:
    doc = [{"domain": c.domain, "token": c.token, "value": c.value} for c in challenges]
    pool.write(NS_ISSUER, JOURNAL, json.dumps(doc).encode())


def _clean_journal(pool: Pool, cfg: Config) -> None:
    raw = pool.read(NS_ISSUER, JOURNAL)
    if not raw:
        return
    try:
        left = [Challenge(**c) for c in json.loads(raw)]
    except (ValueError, TypeError):
        log.warning("the challenge journal in pool %s is unreadable; removing it", cfg.ceph.pool)
        pool.remove(NS_ISSUER, JOURNAL)
        return
    notice(log, "removing %d challenge record(s) left by an earlier run", len(left))
    if _cleanup(make_provider(cfg), left):
        pool.remove(NS_ISSUER, JOURNAL)
