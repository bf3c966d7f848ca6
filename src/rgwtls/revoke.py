"""`rgwtls revoke`: a certificate that must stop being trusted, replaced on every gateway, then revoked at its CA.

Reads top to bottom as the order, which is fixed so that the site always
keeps a certificate it may serve: journal, replace, record, notify and
follow, revoke at the CA. The replacement comes first: revoking first would
leave every gateway serving a revoked certificate until it deploys.

The journal (`acme/revoke.NAME`) is written before anything else, and names
the certificate being revoked, so that the next run, after a SIGKILL at any
point, knows that `current` is already the replacement and goes on from the
first step not done. Every write is fenced by the issuer lock's lease: a run
frozen past its lock writes nothing. A finished journal stays, marked done:
running the same command again follows the wave and revokes nothing twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rgwtls import privileges
from rgwtls.config import CertificateConfig, Config, check_secrets
from rgwtls.errors import AcmeError, ConfigError, Interrupted, LockHeld, RgwtlsError, StoreError, describe
from rgwtls.fleet import PREFIX, rollout
from rgwtls.issue import replace_now, revoking_acme
from rgwtls.log import notice
from rgwtls.revoked import KEY_COMPROMISE, REASONS, REVOKED_OBJECT, Revoked, RevokedList, serial_hex, spki_sha256
from rgwtls.store import NS_DEPLOY, NS_ISSUER, CertSet, IssuerLock, Pool
from rgwtls.validate import read_revoked

log = logging.getLogger(__name__)
FORMAT = "rgwtls-revoke/1"
DEFAULT_TIMEOUT = 300.0
# The steps, each followed by `_pause`, where a test (tests/hold.py) kills or freezes the run.
STEPS = ("journaled", "replaced", "recorded", "followed", "revoked")


@dataclass(frozen=True)
class Journal:
    """What a revoke is doing, in the issuer's namespace: the certificate it revokes and how far it got."""

    certificate: str
    serial: str
    spki_sha256: str
    reason: str
    directory: str  # the CA that issued it, where it is revoked
    cert_pem: str
    # The revoked certificate's own key, which signs a keyCompromise revocation; dropped once the CA revoked it.
    key_pem: str
    at: str
    replacement: str = ""  # the serial of the replacement, once stored
    at_ca: str = ""  # when the CA revoked it (or said it was already)
    done: str = ""  # when every step was done

    def to_bytes(self) -> bytes:
        return json.dumps({"format": FORMAT, **dataclasses.asdict(self)}).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> Journal:
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.pop("format", None) != FORMAT:
                raise ValueError("unknown format")
            names = {f.name for f in dataclasses.fields(cls)}
            journal = cls(**{k: v for k, v in doc.items() if k in names and isinstance(v, str)})
            if journal.reason not in REASONS:
                raise ValueError(f"unknown reason {journal.reason[:40]!r}")
            return journal
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            raise StoreError(
                f"the revoke journal {where} is unreadable ({e}); nothing was changed. Look at it, remove it "
                "('rados rm'), and run 'rgwtls revoke' again: it then revokes the certificate the pool holds now"
            ) from None


def journal_object(name: str, staging: bool) -> str:
    return f"revoke.{name}{'.staging' if staging else ''}"


def revoke(
    cfg: Config,
    reason: str,
    only: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    staging: bool = False,
    again: bool = False,
    out: Callable[[str], None] | None = None,
) -> None:
    """Replace the certificate, record it revoked, follow the fleet onto the replacement, revoke it at its CA.

    Returns only when all of it is done; otherwise one RgwtlsError line
    saying what is not, after doing every step that could be done: the
    revocation at the CA waits for the fleet `timeout` seconds at most.
    """
    if reason not in REASONS:
        raise ConfigError(f"--reason must be one of {', '.join(REASONS)}, not {reason!r}")
    privileges.check_issuer(cfg)
    cert = _one(cfg, only)
    check_secrets(cfg, staging)
    started = time.monotonic()
    with Pool(cfg.ceph) as pool, pool.issuer_lock() as lock, _lost_lock(cert.name):
        # 0. The journal first: from here on, a killed run is resumed.
        journal = _begin(cfg, pool, lock, cert, reason, staging, again)
        _pause("journaled")
        # 1. A replacement with a fresh key, stored as `current`.
        if not journal.replacement:
            journal = _replace(cfg, pool, lock, cert, staging, journal)
        _pause("replaced")
        # 2. The pool's record: from now on no deploy installs the old certificate (or, keyCompromise, its key).
        _record(pool, lock, staging, journal)
        _pause("recorded")
        # 3. Tell the fleet, and follow it until every known gateway serves the replacement, or the timeout.
        lagging, known = _follow(cfg, pool, cert, staging, started + timeout, out)
        _pause("followed")
        # 4. Revoke at the CA that issued it: a dead gateway never delays this.
        if not journal.at_ca:
            journal = _revoke_at_ca(cfg, pool, lock, staging, journal, lagging)
        _pause("revoked")
        took = time.monotonic() - started
        if lagging:
            raise RgwtlsError(
                f"revoke: {cert.name}: certificate {journal.serial} is revoked at the CA ({journal.reason}) and its "
                f"replacement {journal.replacement} is stored, but {len(lagging)} of {known or '?'} gateways do not "
                f"serve the replacement after {took:.0f}s: {'; '.join(lagging)}; their next deploy installs it, and "
                "'rgwtls revoke' again follows them"
            )
        if not journal.done:
            journal = dataclasses.replace(journal, done=_now())
            _write_journal(pool, lock, staging, journal)
    notice(
        log,
        "%s: certificate %s is revoked at %s (%s); %s serve its replacement %s; took %.1fs",
        cert.name,
        journal.serial,
        journal.directory,
        journal.reason,
        f"all {known} known gateways" if known else "no gateway is known to",
        journal.replacement,
        took,
    )


@contextlib.contextmanager
def _lost_lock(name: str) -> Iterator[None]:
    """A run that lost its lock (frozen or slow past it) says so, and that the next run resumes."""
    try:
        yield
    except LockHeld as e:
        said = describe(e)
        said = said if said.startswith("revoke: ") else f"revoke: {name}: {said}"
        e.args = (f"{said}; this run wrote nothing more, and 'rgwtls revoke' again resumes",)
        raise


def _one(cfg: Config, only: str | None) -> CertificateConfig:
    wanted = cfg.certificate(only)
    if len(wanted) > 1:
        raise ConfigError(
            f"config {cfg.path} has {len(wanted)} certificates; name the one to revoke with --cert "
            f"({', '.join(c.name for c in wanted)})"
        )
    return wanted[0]


def _begin(
    cfg: Config, pool: Pool, lock: IssuerLock, cert: CertificateConfig, reason: str, staging: bool, again: bool
) -> Journal:
    """The journal of a revoke under way (or done) that this run resumes, else a new one for the current set."""
    ns, obj = pool.set_namespace(staging), journal_object(cert.name, staging)
    lock.claim(NS_ISSUER, obj)
    raw = pool.read(NS_ISSUER, obj)
    journal = Journal.from_bytes(raw, f"{NS_ISSUER}/{obj} in pool {cfg.ceph.pool}") if raw is not None else None
    lock.claim(ns, f"{cert.name}/current")
    current = pool.read_set(cert.name, staging)
    if journal is not None and not journal.done and _expired(journal.cert_pem):
        # A revoke killed long ago and never run again: its certificate needs no revoking any more.
        notice(
            log,
            "%s: the revoke of %s begun at %s was never finished, and %s expired since; starting anew",
            cert.name,
            journal.serial,
            journal.at,
            journal.serial,
        )
        journal = None
    resumed = journal is not None and (
        not journal.done or (not again and current is not None and _serial(current) == journal.replacement)
    )
    if journal is not None and resumed:
        if reason != journal.reason:
            if journal.at_ca:
                log.warning(
                    "%s: certificate %s was revoked at the CA for %s already; --reason %s changes nothing there",
                    cert.name,
                    journal.serial,
                    journal.reason,
                    reason,
                )
            else:
                notice(log, "%s: the revoke of %s goes on, now for %s", cert.name, journal.serial, reason)
                journal = dataclasses.replace(journal, reason=reason)
                _write_journal(pool, lock, staging, journal)
        log.info("%s: resuming the revoke of certificate %s begun at %s", cert.name, journal.serial, journal.at)
        return journal
    if current is None:
        raise RgwtlsError(f"revoke: no certificate {cert.name} in pool {cfg.ceph.pool}; nothing to revoke")
    from cryptography import x509

    leaf = x509.load_pem_x509_certificate(current.cert_pem.encode())
    journal = Journal(
        certificate=cert.name,
        serial=serial_hex(leaf),
        spki_sha256=spki_sha256(leaf),
        reason=reason,
        directory=current.directory or _primary(cfg, staging),
        cert_pem=current.cert_pem,
        key_pem=current.key_pem,
        at=_now(),
    )
    _write_journal(pool, lock, staging, journal)
    notice(log, "%s: revoking certificate %s (%s): replacing it first", cert.name, journal.serial, reason)
    return journal


def _replace(
    cfg: Config, pool: Pool, lock: IssuerLock, cert: CertificateConfig, staging: bool, journal: Journal
) -> Journal:
    """Step 1: `current` becomes a certificate with another key; the journal names it."""
    current = pool.read_set(cert.name, staging)
    if current is None or _serial(current) == journal.serial:
        try:
            replace_now(cfg, pool, lock, cert, staging)
        except RgwtlsError as e:
            # The old certificate stays current and unrevoked: the site keeps a certificate it may serve.
            if not isinstance(e, Interrupted | LockHeld):
                _abandon(pool, lock, staging, journal)
            # issue's retry schedule is no concern of a revoke: it tries again whenever it is run.
            said = describe(e).split("; next attempt after")[0]
            e.args = (f"revoke: {cert.name}: no replacement stored, so nothing is revoked: {said}",)
            raise
        current = pool.read_set(cert.name, staging)
    if current is None or _serial(current) == journal.serial or _spki(current) == journal.spki_sha256:
        raise RgwtlsError(
            f"revoke: {cert.name}: the pool holds no replacement with a new key after issuing; nothing is revoked"
        )
    journal = dataclasses.replace(journal, replacement=_serial(current))
    _write_journal(pool, lock, staging, journal)
    return journal


def _abandon(pool: Pool, lock: IssuerLock, staging: bool, journal: Journal) -> None:
    """A revoke that could not replace ends here: closed, with no replacement, so that a later revoke starts anew.

    Left open, it would be resumed by the next `revoke` even months later,
    naming a certificate long replaced by an ordinary renewal instead of the
    one the operator means. A run stopped by a signal or a lost lock leaves
    it open: that is a kill, resumed as one.
    """
    try:
        _write_journal(pool, lock, staging, dataclasses.replace(journal, done=_now()))
    except RgwtlsError as e:
        log.warning("%s: could not close the revoke journal (%s); the next revoke resumes it", journal.certificate, e)


def _record(pool: Pool, lock: IssuerLock, staging: bool, journal: Journal) -> None:
    """Step 2: the entry in the pool's record (`revoked`), or its `at_ca` filled in; fenced by the lease."""
    ns = pool.set_namespace(staging)
    lock.claim(ns, REVOKED_OBJECT)
    try:
        listed = read_revoked(pool, staging)
    except StoreError as e:
        log.warning("%s; rewriting it with this revocation", e)
        listed = RevokedList()
    old = listed.by_serial(journal.serial)
    entry = Revoked(
        certificate=journal.certificate,
        serial=journal.serial,
        spki_sha256=journal.spki_sha256,
        reason=journal.reason,
        at=old.at if old is not None else _now(),
        at_ca=journal.at_ca or (old.at_ca if old is not None else ""),  # never undone
    )
    if old == entry:
        return
    lock.confirm()
    pool.fenced_replace(ns, REVOKED_OBJECT, listed.with_entry(entry).to_bytes(), lock.lease(ns, REVOKED_OBJECT))


def _follow(
    cfg: Config,
    pool: Pool,
    cert: CertificateConfig,
    staging: bool,
    deadline: float,
    out: Callable[[str], None] | None,
) -> tuple[list[str], int]:
    """Step 3: announce, and follow the wave as `rollout --wait` shows it; the gateways that lag, and how many."""
    current = pool.read_set(cert.name, staging)
    if current is not None:
        pool.announce(cert.name, current.generation, staging)
    if staging:
        log.info("%s: revoke --staging follows no gateway (rollout follows the production sets)", cert.name)
        return [], 0
    if not pool.names(NS_DEPLOY, PREFIX):
        log.info("%s: no gateway has recorded a deploy in pool %s; none to follow", cert.name, cfg.ceph.pool)
        return [], 0
    try:
        fleet = rollout(cfg, wait=False, timeout=max(0.0, deadline - time.monotonic()), out=out)
    except Interrupted:
        raise
    except RgwtlsError as e:
        # Not seeing the fleet is no reason to keep a compromised certificate valid: on to the CA.
        log.warning("%s: cannot follow the fleet (%s); revoking at the CA anyway", cert.name, describe(e))
        return [f"the fleet could not be followed ({describe(e)})"], 0
    return [f"{g.name}: {g.state} ({g.detail})" for g in fleet if g.state != "serving"], len(fleet)


def _revoke_at_ca(
    cfg: Config, pool: Pool, lock: IssuerLock, staging: bool, journal: Journal, lagging: list[str]
) -> Journal:
    """Step 4: revoke at the CA that issued it; keyCompromise signed by the certificate's own key."""
    lock.confirm()  # a run frozen past its lock leaves this to the run that took over
    compromised = journal.reason == KEY_COMPROMISE
    what = f"revoke: {journal.certificate}: the replacement {journal.replacement} is stored and recorded"
    behind = f", {len(lagging)} gateway(s) do not serve it yet ({'; '.join(lagging)})" if lagging else ""
    try:
        acme = revoking_acme(cfg, pool, journal.directory, staging, journal.key_pem if compromised else None)
        if acme is None:
            raise AcmeError(f"the CA that issued it ({journal.directory}) is no longer configured")
        done = acme.revoke(journal.cert_pem, REASONS[journal.reason])
    except Interrupted:
        raise
    except RgwtlsError as e:
        e.args = (
            f"{what}{behind}, but the CA did not revoke certificate {journal.serial}: {describe(e)}; "
            "run 'rgwtls revoke' again",
        )
        raise
    if not done:
        log.info(
            "%s: %s says certificate %s is revoked already", journal.certificate, journal.directory, journal.serial
        )
    journal = dataclasses.replace(journal, at_ca=_now(), key_pem="")
    _record(pool, lock, staging, journal)
    _write_journal(pool, lock, staging, journal)
    notice(log, "%s: certificate %s is revoked at %s", journal.certificate, journal.serial, journal.directory)
    return journal


def _write_journal(pool: Pool, lock: IssuerLock, staging: bool, journal: Journal) -> None:
    obj = journal_object(journal.certificate, staging)
    lock.claim(NS_ISSUER, obj)
    # The lease makes the write itself refuse after a freeze past the lock; the confirm says so sooner.
    lock.confirm()
    pool.fenced_replace(NS_ISSUER, obj, journal.to_bytes(), lock.lease(NS_ISSUER, obj))


def _primary(cfg: Config, staging: bool) -> str:
    return cfg.acme.staging_directory if staging else cfg.acme.directory


def _serial(s: CertSet) -> str:
    from cryptography import x509

    return serial_hex(x509.load_pem_x509_certificate(s.cert_pem.encode()))


def _spki(s: CertSet) -> str:
    from cryptography import x509

    return spki_sha256(x509.load_pem_x509_certificate(s.cert_pem.encode()))


def _expired(cert_pem: str) -> bool:
    from cryptography import x509

    return x509.load_pem_x509_certificate(cert_pem.encode()).not_valid_after_utc <= dt.datetime.now(dt.UTC)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _pause(step: str) -> None:
    """The end of `step`: nothing here; a test's launcher (tests/hold.py) holds the run at it to kill or freeze it."""
