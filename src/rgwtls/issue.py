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
import os
import socket
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rgwtls import certs, privileges
from rgwtls.config import CertificateConfig, Config, check_secrets
from rgwtls.dns import Challenge, DnsProvider
from rgwtls.dns.backends import make_provider
from rgwtls.errors import (
    AcmeError,
    CaUnavailable,
    ConfigError,
    Fenced,
    Interrupted,
    IssuerBusy,
    LockHeld,
    RgwtlsError,
    StoreError,
    describe,
)
from rgwtls.log import notice
from rgwtls.store import NS_ISSUER, Basis, CertSet, IssuerLock, Pool
from rgwtls.validate import check_issued

if TYPE_CHECKING:
    from rgwtls.acmeflow import Acme
    from rgwtls.persist import Record

log = logging.getLogger(__name__)
JOURNAL = "challenges.journal"


@dataclass(frozen=True)
class Decision:
    due: bool
    reason: str
    replaces: str | None = None
    # Revoked, or the CA asks for it now: due whatever the retry schedule says.
    urgent: bool = False


def issue(cfg: Config, staging: bool = False, force: bool = False, only: str | None = None) -> int:
    """Issue what is due; return the number of certificates issued.

    Every issuer host runs this from cron: the one that takes the lock
    decides from the pool, and the others, finding it held by a live issuer,
    have nothing to do. Only an operator's `--force` is told that as an error.
    """
    privileges.check_issuer(cfg)
    wanted = cfg.certificate(only)
    started = _now()
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
    _issue_all(cfg, pool, lock, (cert,), staging, True, _now())


def revoking_acme(cfg: Config, pool: Pool, directory: str, staging: bool, key_pem: str | None) -> Acme | None:
    """A session with the configured CA at `directory`: signed by `key_pem` with no account, else the account's.

    None if no configured CA has that directory any more.
    """
    from rgwtls.acmeflow import Acme

    cas = _CAs(cfg, pool, staging)
    ca = cas.find(directory)
    if ca is None:
        return None
    return Acme(ca.cfg.acme, directory, key_pem, cfg.path) if key_pem else cas.session(ca).registered()


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


@dataclass(frozen=True)
class _Ca:
    """One CA a run may ask: acme.directory, or an [[acme.fallback]], with the configuration as it sees it."""

    directory: str
    cfg: Config
    fallback: bool

    def cert_for(self, cert: CertificateConfig) -> CertificateConfig:
        """A [[certificate]]'s profile is the primary CA's: a fallback issues under its own (its profile key)."""
        return dataclasses.replace(cert, profile="") if self.fallback else cert


class _CAs:
    """The CAs of this run, in the order they are asked, and one session with each, opened when first needed.

    Every run starts again with acme.directory. Staging has no fallback: it
    is there to try the one CA.
    """

    def __init__(self, cfg: Config, pool: Pool, staging: bool) -> None:
        self.pool, self.staging = pool, staging
        primary = cfg.acme.staging_directory if staging else cfg.acme.directory
        self.order = [_Ca(primary, cfg, False)]
        if not staging:
            for fb in cfg.acme.fallback:
                self.order.append(_Ca(fb.directory, dataclasses.replace(cfg, acme=cfg.acme.as_fallback(fb)), True))
        self.directories = frozenset(ca.directory for ca in self.order)
        # What a certificate's attempt worked around, for its last-issue record.
        self.warnings: dict[str, str] = {}
        self._sessions: dict[str, _Session] = {}

    @property
    def primary(self) -> _Ca:
        return self.order[0]

    def find(self, directory: str) -> _Ca | None:
        return next((ca for ca in self.order if ca.directory == directory), None)

    def session(self, ca: _Ca) -> _Session:
        if ca.directory not in self._sessions:
            self._sessions[ca.directory] = _Session(ca.cfg, self.pool, ca.directory, self.staging, self.warnings)
        return self._sessions[ca.directory]


def _obtain_from_any(
    cas: _CAs,
    records: _Records,
    cert: CertificateConfig,
    current: CertSet | None,
    generation: int,
    decision: Decision,
    noted: Path,
) -> CertSet:
    """The certificate from the first CA that can issue it; only the CA's own failures move on to the next one.

    `replaces` goes only to the CA that issued the certificate it names. A
    validation that fails on our side, or a bad configuration, stops here:
    another CA would fail the same way.
    """
    failed: list[tuple[_Ca, CaUnavailable]] = []
    for ca in cas.order:
        ours = current is not None and current.directory == ca.directory
        asked = decision if ours else dataclasses.replace(decision, replaces=None)
        try:
            new = _obtain(ca.cfg, cas.session(ca), records, ca.cert_for(cert), generation, asked, noted)
        except CaUnavailable as e:
            if len(cas.order) == 1:
                raise
            failed.append((ca, e))
            if ca is not cas.order[-1]:
                log.info("%s: %s cannot issue now (%s); trying the next CA", cert.name, ca.directory, e)
            continue
        if failed:
            said = "; ".join(f"{f.directory} could not issue ({e})" for f, e in failed)
            warning = f"{said}; issued by fallback CA {ca.directory}"
            log.warning("%s: %s", cert.name, warning)
            cas.warnings[cert.name] = warning
        return new
    raise CaUnavailable(
        f"{cert.name}: no CA could issue it, nothing stored: " + "; ".join(f"{ca.directory}: {e}" for ca, e in failed)
    )


# The retry schedule of a failing renewal: 1 hour after the first failure,
# doubling to at most 6 hours, and never more than a quarter of the time the
# current certificate has left, so that at least four attempts fit before it
# expires. A run up to RETRY_EARLY before its time counts as on time: cron
# starts each run at the same minute, a little before the last one's end plus
# the wait.
RETRY_FIRST = dt.timedelta(hours=1)
RETRY_MAX = dt.timedelta(hours=6)
RETRY_MIN = dt.timedelta(minutes=5)
RETRY_EARLY = dt.timedelta(minutes=5)


def _read_attempt(pool: Pool, name: str, staging: bool) -> dict[str, Any]:
    """The certificate's last-issue record; {} if there is none or it is unreadable (it is rewritten whole)."""
    try:
        raw = pool.read(pool.set_namespace(staging), f"{name}/last-issue")
        doc = json.loads(raw) if raw else {}
    except Interrupted:
        raise
    except (RgwtlsError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _next_attempt(
    pool: Pool, cert: CertificateConfig, staging: bool, attempt: dict[str, Any], started: dt.datetime
) -> tuple[int, dt.datetime]:
    """Failures in a row, counting this one, and when the next attempt is due."""
    failures = attempt.get("failures") if not attempt.get("ok", True) else 0
    failures = (failures if type(failures) is int and failures > 0 else 0) + 1
    wait = _retry_wait(failures)
    try:
        current = pool.read_set(cert.name, staging)
    except RgwtlsError:
        current = None
    if current is not None:
        left = certs.cert_info(current.cert_pem).not_after - _now()
        wait = min(wait, max(left / 4, RETRY_MIN))
    return failures, started + wait


def _retry_wait(failures: int) -> dt.timedelta:
    return min(RETRY_FIRST * (1 << min(failures - 1, 8)), RETRY_MAX)


def _config_digest(cfg: Config) -> str:
    """What the retry schedule compares: a changed configuration (a fix) tries at once."""
    import hashlib

    try:
        return hashlib.sha256(Path(cfg.path).read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


def _held_back(attempt: dict[str, Any], config: str) -> str | None:
    """Why the retry schedule holds this renewal back now, or None if it may go."""
    if attempt.get("ok", True) or not isinstance(attempt.get("next_attempt"), str):
        return None
    if attempt.get("config") != config:
        return None
    try:
        due = dt.datetime.fromisoformat(attempt["next_attempt"])
    except ValueError:
        return None
    failures = attempt.get("failures", 1)
    left = due - _now() if due.tzinfo is not None else dt.timedelta(0)
    # A wall time (issuers on other hosts read it): one further away than its schedule sets means a clock went back.
    if left <= RETRY_EARLY or left > _retry_wait(failures if type(failures) is int and failures > 0 else 1):
        return None
    return (
        f"its last {failures} attempt(s) failed; the next is due after {due:%Y-%m-%d %H:%M} UTC "
        "('rgwtls issue --force' tries now)"
    )


def _record_attempt(
    pool: Pool,
    name: str,
    staging: bool,
    error: str | None,
    warning: str | None = None,
    retry: tuple[int, dt.datetime] | None = None,
    cfg: Config | None = None,
) -> None:
    """Keep the last attempt, success and failure of `issue` beside the set, what it worked around, and the retry."""
    ns = pool.set_namespace(staging)
    obj = f"{name}/last-issue"
    now = _now().isoformat(timespec="seconds")
    doc = _read_attempt(pool, name, staging)
    doc.update(at=now, host=socket.gethostname(), ok=error is None, error=error, warning=warning)
    doc["last_success" if error is None else "last_failure"] = now
    failures, next_attempt = retry if retry is not None else (0, None)
    doc.update(failures=failures, next_attempt=next_attempt.isoformat(timespec="seconds") if next_attempt else None)
    doc["config"] = _config_digest(cfg) if cfg is not None and retry is not None else None
    try:
        pool.write(ns, obj, json.dumps(doc).encode())
    except Interrupted:
        raise
    except RgwtlsError as e:
        log.warning("could not record this attempt in the pool: %s", e)


class _Session:
    """The ACME session, opened only when a decision needs the CA.

    Accounts are kept per CA, keyed by directory (`account_object`): going
    back to a CA finds its account, and a run against a mistyped directory
    replaces nobody's. A new account's key is written to the pool only once
    the CA has answered and registered it.
    """

    def __init__(
        self, cfg: Config, pool: Pool, directory: str, staging: bool, warnings: dict[str, str] | None = None
    ) -> None:
        self.cfg, self.pool, self.directory, self.staging = cfg, pool, directory, staging
        self._acme: Acme | None = None
        self._registered = False
        self._unsaved: dict[str, str] | None = None
        # What a certificate's attempt worked around, for its last-issue record (shared by the run's CAs).
        self.warnings: dict[str, str] = {} if warnings is None else warnings

    def acme(self) -> Acme:
        from rgwtls.acmeflow import Acme, new_account_key

        if self._acme is None:
            doc, obj = self._account()
            if doc is None:
                # A first run with this CA: a new key, saved once the CA registered it.
                doc = {
                    "directory": self.directory,
                    "key": new_account_key(),
                    "created": _now().isoformat(timespec="seconds"),
                    "created_by": socket.gethostname(),
                }
                self._unsaved = doc
            try:
                self._acme = Acme(self.cfg.acme, self.directory, doc["key"], self.cfg.path)
            except (ValueError, TypeError):
                raise _unusable_account(self.pool, obj, "its key does not load as a private key") from None
        return self._acme

    def _account(self) -> tuple[dict[str, str] | None, str]:
        """This CA's account document and its object; None if there is none yet."""
        obj = account_object(self.directory)
        raw = self.pool.read(NS_ISSUER, obj)
        if raw is None:
            # Before accounts were kept per CA, each side had one object.
            legacy = f"account.{'staging' if self.staging else 'production'}"
            raw = self.pool.read(NS_ISSUER, legacy)
            doc = _account_doc(self.pool, legacy, raw) if raw is not None else None
            if doc is None or doc["directory"] != self.directory:
                return None, obj
            self.pool.write(NS_ISSUER, obj, json.dumps(doc).encode())
            log.info("the ACME account for %s is now kept in %s/%s", self.directory, NS_ISSUER, obj)
            return doc, obj
        doc = _account_doc(self.pool, obj, raw)
        if doc["directory"] != self.directory:
            raise _unusable_account(self.pool, obj, f"it is the account for {doc['directory']}, not {self.directory}")
        return doc, obj

    def revoked(self, current: CertSet) -> str:
        """Why `current` is revoked (the pool's record, its CRL), or ""; never fails the run."""
        from rgwtls import revocation
        from rgwtls.revoked import REVOKED_OBJECT, RevokedList

        ns = self.pool.set_namespace(self.staging)
        try:
            record = RevokedList.from_bytes(self.pool.read(ns, REVOKED_OBJECT), f"{ns}/{REVOKED_OBJECT}")
        except StoreError as e:
            log.warning("%s", e)
            record = None
        return revocation.due_at_once(self.cfg, record, current.cert_pem, current.chain_pem)

    def registered(self) -> Acme:
        acme = self.acme()
        if not self._registered:
            acme.register(self.cfg.acme.email, *self.cfg.acme.eab(self.staging))
            if self._unsaved is not None:
                obj = account_object(self.directory)
                self.pool.write(NS_ISSUER, obj, json.dumps(self._unsaved).encode())
                self._unsaved = None
                log.info("created a new ACME account for %s, kept in %s/%s", self.directory, NS_ISSUER, obj)
            self._registered = True
        return acme


def account_object(directory: str) -> str:
    """The pool object (namespace acme) of the account at this CA: its host, readable, and a digest of the URL."""
    import hashlib
    from urllib.parse import urlsplit

    host = urlsplit(directory).hostname or "ca"
    return f"account.{host}.{hashlib.sha256(directory.encode()).hexdigest()[:12]}"


def _account_doc(pool: Pool, obj: str, raw: bytes) -> dict[str, str]:
    """The account document, checked: a damaged one is one line naming it, and is never replaced by itself."""
    try:
        doc = json.loads(raw)
    except ValueError:
        raise _unusable_account(pool, obj, "it is not JSON") from None
    if not isinstance(doc, dict):
        raise _unusable_account(pool, obj, f"it is a JSON {type(doc).__name__}, not an object")
    for field in ("directory", "key"):
        if not isinstance(doc.get(field), str) or not doc[field]:
            raise _unusable_account(pool, obj, f"it has no {field}")
    if "PRIVATE KEY-----" not in doc["key"]:
        raise _unusable_account(pool, obj, "its key is not a PEM private key")
    return {k: v for k, v in doc.items() if isinstance(v, str)}


def _unusable_account(pool: Pool, obj: str, why: str) -> StoreError:
    name, where = pool.cfg.pool, f"{NS_ISSUER}/{obj}"
    return StoreError(
        f"the ACME account {where} in pool {name} is unusable ({why}); nothing was changed. Save it "
        f"('rados -p {name} -N {NS_ISSUER} get {obj} FILE'), then remove it ('rados -p {name} -N {NS_ISSUER} rm "
        f"{obj}') so that the next run registers a new account (a CA with External Account Binding needs a new binding)"
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _decide(
    cert: CertificateConfig,
    current: CertSet | None,
    session: _Session,
    force: bool,
    directories: Collection[str],
    profile: str = "",
) -> Decision:
    """Renew when asked, when names, CA or profile changed, in the ARI window, or with a third of the life left.

    `directories` are the CAs this run may ask: a set from any of them is
    judged by its dates alone, one from any other CA is renewed.
    """
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
    if current.directory not in directories:
        return Decision(True, f"it was issued by another CA ({current.directory})")
    if profile and current.profile != profile:
        # A set stored before profiles were recorded has none: it is renewed once, to be sure.
        return Decision(True, f"profile changed ({current.profile or 'none recorded'} -> {profile})")
    if info.not_after <= now:
        return Decision(True, f"it expired at {info.not_after:%Y-%m-%d %H:%M} UTC")
    days_left = info.remaining(now).total_seconds() / 86400
    if info.remaining(now) <= info.lifetime / 20:
        # The emergency rule: whatever ARI says, a twentieth of the life is too little to wait on.
        return Decision(True, f"only {days_left:.1f} days left, a twentieth of its lifetime", info.ari_id)
    revoked = session.revoked(current)
    if revoked:
        return Decision(True, revoked, info.ari_id, urgent=True)
    try:
        ari = session.acme().renewal_time(current.cert_pem)
    except AcmeError as e:
        # A CA that is down on a day nothing is due is no failure of ours; if
        # the lifetime rule says renew, obtaining will report it.
        log.warning("renewal info unavailable, deciding by the lifetime: %s", e)
        ari = None
    if ari is not None:
        if now >= ari:
            opened = f"the CA's renewal window (ARI) opened at {ari:%Y-%m-%d %H:%M} UTC"
            return Decision(True, opened, info.ari_id, urgent=True)
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
    session: _Session,
    records: _Records,
    cert: CertificateConfig,
    generation: int,
    decision: Decision,
    noted: Path,
) -> CertSet:
    from rgwtls.propagation import wait_for_values

    persistent = cert.persistent(cfg.dns)
    # Where each name's challenge goes, settled before anything is ordered or
    # published: a CNAME loop or a dangling one stops here.
    targets = {} if persistent else _challenge_targets(cert, cfg)
    # A new key for every certificate, made while the CA and the DNS work:
    # only finalizing needs it, and RSA 4096 takes some 0.4 s to make.
    keygen = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keygen")
    new_key = keygen.submit(certs.new_private_key, cert.key_type or cfg.acme.key_type)
    keygen.shutdown(wait=False)
    acme = session.registered()
    profile = cert.wanted_profile(cfg.acme)
    acme.check_profile(profile, f"[[certificate]] {cert.name}'s profile" if cert.profile else "acme.profile")
    if persistent:
        # The standing records must be there before anything is ordered: a
        # missing one is one line naming it, where, and the command that fixes it.
        _check_persistent(cfg, session, acme, cert)
    deadline = time.monotonic() + cfg.acme.order_timeout
    # One order for all names: `x` and `*.x` share one TXT name, two values.
    replaces = decision.replaces if acme.has_ari else None
    order, refused = acme.new_order(cert.domains, replaces, profile)
    if refused is not None:
        log.warning("%s: %s", cert.name, refused)
        session.warnings[cert.name] = refused
    if persistent:
        # No DNS write: the CA reads the standing records itself.
        pending = acme.persist_challenges(order, acme.persist_issuer)
        if pending:
            acme.answer_and_wait(pending, deadline)
        pending = []
    else:
        pending = acme.dns_challenges(order)
    if pending:
        challenges = [dataclasses.replace(p.challenge, target=targets.get(p.challenge.domain, "")) for p in pending]
        records.present(challenges)
        expected: dict[str, set[str]] = {}
        for ch in challenges:
            expected.setdefault(ch.record_name, set()).add(ch.value)
        wait_for_values(expected, cfg.dns)
        acme.answer_and_wait(pending, deadline)
    key = new_key.result()
    # The profile the CA says it used; a CA that says none used what was asked.
    used = order.body.profile or profile
    # From the CSR on, the CA may issue whatever happens to this run: the
    # order and its key are noted first, for the next run to fetch it.
    _note_order(noted, cert, session.directory, str(order.uri), key, used)
    fullchain = acme.finalize(order, certs.make_csr(key, cert.domains), deadline)
    new = _build_set(cert, key, fullchain, generation, session.directory, used)
    check_issued(new, cfg, noted)  # a chain to no trusted root is never stored, nor its order fetched again
    return new


def _check_persistent(cfg: Config, session: _Session, acme: Acme, cert: CertificateConfig) -> None:
    """Record the dns-persist-01 records this certificate needs (for status), then ask every server for them."""
    from rgwtls import persist

    records = persist.records(cert, acme.persist_issuer, acme.account_uri)
    _write_persist(session.pool, cert.name, session.staging, records)
    persist.require(records, cfg, cert.name if len(cfg.certificates) > 1 else "", session.staging)
    log.info("%s: every authoritative server answers its %d dns-persist-01 record(s)", cert.name, len(records))


def _write_persist(pool: Pool, name: str, staging: bool, records: list[Record]) -> None:
    """The records as the issuer computed them, where `status` and `check` on every gateway read them."""
    from rgwtls import persist

    try:
        pool.write(pool.set_namespace(staging), f"{name}/persist", persist.to_bytes(records))
    except Interrupted:
        raise
    except RgwtlsError as e:
        log.warning("could not record the dns-persist-01 records in the pool: %s", e)


def persist_records(
    cfg: Config, staging: bool = False, publish: bool = False, remove: bool = False, only: str | None = None
) -> list[str]:
    """`rgwtls persist`: the dns-persist-01 records of the configured certificates, as zone file lines.

    The account (its URL is in every record) is looked up, or registered,
    under the issuer lock, as `issue` does. With `publish`, each record some
    authoritative server does not answer is created through the DNS back
    end; with `remove`, exactly these values are removed.
    """
    from rgwtls import persist as standing

    wanted = [c for c in cfg.certificate(only) if c.persistent(cfg.dns)]
    if not wanted:
        which = f"certificate {only!r} uses" if only else "no configured certificate uses"
        raise ConfigError(
            f"config {cfg.path}: {which} dns-01, which needs no standing record; "
            "set dns.challenge or its [[certificate]] challenge to dns-persist-01"
        )
    directory = cfg.acme.staging_directory if staging else cfg.acme.directory
    check_secrets(cfg, staging, dns=publish or remove)
    every: list[standing.Record] = []
    with Pool(cfg.ceph) as pool, pool.issuer_lock():
        acme = _Session(cfg, pool, directory, staging).registered()
        issuer, account = acme.persist_issuer, acme.account_uri
        for cert in wanted:
            records = standing.records(cert, issuer, account)
            _write_persist(pool, cert.name, staging, records)
            every += records
    records = standing.merged(every)
    if publish:
        standing.publish(cfg, records)
    elif remove:
        standing.remove(cfg, records)
    ttl = _ttl(cfg)
    return [r.zone_line(ttl) for r in records]


def _ttl(cfg: Config) -> int:
    """The TTL the back end writes with; a hook's records are written by hand."""
    d = cfg.dns
    return {"infoblox": d.infoblox.ttl, "uddi": d.uddi.ttl, "rfc2136": d.rfc2136.ttl}.get(d.provider, 3600)


def _challenge_targets(cert: CertificateConfig, cfg: Config) -> dict[str, str]:
    """Each name's delegated challenge name: _acme-challenge.<challenge_alias>, else the end of its CNAME chain.

    A name that is not delegated maps to "": its value goes to _acme-challenge.<name>.
    """
    from rgwtls.propagation import cname_target

    targets: dict[str, str] = {}
    for domain in cert.domains:
        base = domain.removeprefix("*.")
        if base in targets:
            continue
        if cert.challenge_alias:
            targets[base] = f"_acme-challenge.{cert.challenge_alias}"
            log.info("%s: the challenge for %s goes to %s (challenge_alias)", cert.name, base, targets[base])
        else:
            targets[base] = cname_target(f"_acme-challenge.{base}", cfg.dns)
    return targets


def _build_set(
    cert: CertificateConfig,
    key: certs.PrivateKey,
    fullchain: str,
    generation: int,
    directory: str,
    profile: str = "",
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
        generation=generation,
        key_pem=certs.private_pem(key),
        cert_pem=leaf,
        chain_pem=chain,
        domains=tuple(cert.domains),
        issued_at=_now().isoformat(timespec="seconds"),
        issued_by=socket.gethostname(),
        directory=directory,
        profile=profile,
    )


class _Records:
    """The challenge records of one order: journaled before they exist, removed when the order is done.

    Removal comes after the set is stored, and its failures are warnings:
    they never hide the error that got us here, nor cost a stored set. What
    they leave, the journal lists for the next run.
    """

    def __init__(self, cfg: Config, pool: Pool, name: str) -> None:
        self.cfg, self.pool, self.name = cfg, pool, name
        self.provider: DnsProvider | None = None
        self.attempted: list[Challenge] = []

    def present(self, challenges: list[Challenge]) -> None:
        self.provider = make_provider(self.cfg)
        # The journal is written before the first record exists, so a kill
        # at any point leaves a list of what to clean up: every record of this
        # order, those published for a CA asked before this one too.
        _write_journal(self.pool, [*self.attempted, *challenges])
        for ch in challenges:
            self.attempted.append(ch)
            self.provider.present(ch)
            log.info("%s: published TXT %s via %s", self.name, ch.record_name, self.provider.name)

    def __enter__(self) -> _Records:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.provider is not None and _cleanup(self.provider, self.attempted):
            _remove_journal(self.pool)


def _cleanup(provider: DnsProvider, challenges: list[Challenge]) -> bool:
    """Remove every record; log failures without hiding the error that got us here."""
    clean = True
    for ch in challenges:
        try:
            provider.cleanup(ch)
        except Interrupted:
            raise
        except RgwtlsError as e:
            log.warning("cleanup: %s; remove it by hand", e)
            clean = False
    return clean


def _write_journal(pool: Pool, challenges: list[Challenge]) -> None:
    # The target too: a killed run's delegated records are in the target zone.
    doc = [{"domain": c.domain, "token": c.token, "value": c.value, "target": c.target} for c in challenges]
    pool.write(NS_ISSUER, JOURNAL, json.dumps(doc).encode())


def _remove_journal(pool: Pool) -> None:
    try:
        pool.remove(NS_ISSUER, JOURNAL)
    except Interrupted:
        raise
    except RgwtlsError as e:
        log.warning("%s; the next run removes the records it lists again", e)


def _clean_journal(pool: Pool, cfg: Config) -> None:
    """Remove the records a killed run left: they are in the journal, which it wrote before making them."""
    try:
        raw = pool.read(NS_ISSUER, JOURNAL)
    except StoreError as e:
        log.warning("%s; records an earlier run left stay until the next run", e)
        return
    if not raw:
        return
    try:
        left = [Challenge(**c) for c in json.loads(raw)]
    except (ValueError, TypeError):
        log.warning("the challenge journal in pool %s is unreadable; removing it", cfg.ceph.pool)
        _remove_journal(pool)
        return
    notice(log, "removing %d challenge record(s) left by an earlier run", len(left))
    if _cleanup(make_provider(cfg), left):
        _remove_journal(pool)


# -- the issued set: stored at once, else kept on this host -------------------------


def _store(cfg: Config, pool: Pool, lock: IssuerLock, new: CertSet, staging: bool, kept: Path) -> None:
    """Store the set; if that fails, it stays in a private file on this host, and the error says so.

    The file is written first, so that a kill while storing loses nothing
    either; it goes once the pool has the set.
    """
    not_kept = _keep(kept, new)
    if not_kept is None:
        _discard(_order_path(kept))  # the kept set says more than the order it came from
    else:
        log.info("%s: cannot keep the new set in %s (%s); storing it without that safety net", new.name, kept, not_kept)
    legacy = new.name == cfg.certificates[0].name
    ns = pool.set_namespace(staging)
    try:
        lock.confirm()
        pool.write_set(new, staging, legacy, lock.lease(ns, f"{new.name}/current"))
    except Exception as e:
        raise _issued_but_not_stored(new, kept, not_kept, e) from None
    _discard(kept)
    _discard(_order_path(kept))


def _issued_but_not_stored(new: CertSet, kept: Path, not_kept: str | None, e: Exception) -> RgwtlsError:
    """One line saying that a certificate WAS issued, where it is, and what the next run does with it."""
    until = certs.cert_info(new.cert_pem).not_after.strftime("%Y-%m-%d %H:%M UTC")
    said = describe(e)
    if not_kept is None:
        fate = f"it is kept in {kept} and the next run stores it instead of ordering again"
    else:
        fate = f"keeping it in {kept} failed too ({not_kept}), so it is lost; the next run orders a new one"
    text = f"{new.name}: a certificate was issued (valid until {until}) but not stored: {said}; {fate}"
    if isinstance(e, Interrupted):
        stopped = Interrupted(e.signame)
        stopped.args = (text,)
        return stopped
    if isinstance(e, LockHeld):
        return Fenced(text) if isinstance(e, Fenced) else LockHeld(text)  # still a lost lock: nothing to wait after
    return StoreError(text)


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
    now = _now()
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


def _kept_path(cfg: Config, name: str, staging: bool) -> Path:
    return Path(cfg.deploy.state_dir) / "issued" / f"{name}{'.staging' if staging else ''}.json"


def _keep(path: Path, new: CertSet) -> str | None:
    """Write the set to its private file; None if it is kept, else why not."""
    return _write_private(path, new.to_bytes())


def _write_private(path: Path, data: bytes) -> str | None:
    """Write a file that holds a private key, atomically; None if it is written, else why not.

    The file is created 0600 and exclusive, never widened, written whole,
    fsynced, then renamed into place, in a 0700 directory.
    """
    from rgwtls import files

    try:
        os.makedirs(path.parent.parent, mode=0o700, exist_ok=True)
        os.makedirs(path.parent, mode=0o700, exist_ok=True)
    except OSError as e:
        return f"{e.strerror or e}: {e.filename or path}"
    try:
        files.atomic_write(path, data, files.Access(0o600, os.getuid(), os.getgid()))
    except RgwtlsError as e:
        return str(e)
    return None


# -- a finalized order: the next run fetches its certificate ------------------------

ORDER_FORMAT = "rgwtls-order/1"


def _order_path(kept: Path) -> Path:
    """Beside the kept set: NAME[.staging].order."""
    return kept.with_suffix(".order")


def _note_order(
    path: Path, cert: CertificateConfig, directory: str, order_url: str, key: certs.PrivateKey, profile: str
) -> None:
    """Note the order and the certificate's new key before the CSR goes, so that a stopped run loses nothing.

    Between the CSR and the kept set, the CA may issue a certificate this run
    never downloads (SIGKILL, a power cut, a CA that stops answering): the
    next run fetches it from the order instead of ordering again.
    """
    doc = {
        "format": ORDER_FORMAT,
        "directory": directory,
        "order": order_url,
        "profile": profile,
        "key_pem": certs.private_pem(key),
    }
    not_noted = _write_private(path, json.dumps(doc).encode())
    if not_noted is not None:
        log.info("%s: cannot note the order in %s (%s); finalizing without that safety net", cert.name, path, not_noted)


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


def _discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        log.warning("could not remove %s (%s); the next run removes it", path, e.strerror)
