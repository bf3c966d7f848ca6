"""The order: from a due decision to a checked certificate set, from the first CA that can issue it.

Account, order, challenges (presented, propagated, answered), a new key,
the order noted, finalize, and the set built and checked: nothing here
writes to the pool but the records' journal. The CAs are asked in turn, and
only a CA's own failure moves on to the next one.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rgwtls import certs
from rgwtls.config import CertificateConfig, Config
from rgwtls.errors import CaUnavailable, RgwtlsError
from rgwtls.issue import clock
from rgwtls.issue.decide import Decision
from rgwtls.issue.journal import Records
from rgwtls.issue.kept import note_order
from rgwtls.issue.persist import check_persistent
from rgwtls.issue.session import Session
from rgwtls.store import CertSet, Pool
from rgwtls.validate import check_issued

if TYPE_CHECKING:
    from rgwtls.acmeflow import Acme

# The name the log format shows: a line of `issue` reads as it always has, whichever room wrote it.
log = logging.getLogger("rgwtls.issue")


@dataclass(frozen=True)
class Ca:
    """One CA a run may ask: acme.directory, or an [[acme.fallback]], with the configuration as it sees it."""

    directory: str
    cfg: Config
    fallback: bool

    def cert_for(self, cert: CertificateConfig) -> CertificateConfig:
        """A [[certificate]]'s profile is the primary CA's: a fallback issues under its own (its profile key)."""
        return dataclasses.replace(cert, profile="") if self.fallback else cert


class CAs:
    """The CAs of this run, in the order they are asked, and one session with each, opened when first needed.

    Every run starts again with acme.directory. Staging has no fallback: it
    is there to try the one CA.
    """

    def __init__(self, cfg: Config, pool: Pool, staging: bool) -> None:
        self.pool, self.staging = pool, staging
        primary = cfg.acme.staging_directory if staging else cfg.acme.directory
        self.order = [Ca(primary, cfg, False)]
        if not staging:
            for fb in cfg.acme.fallback:
                self.order.append(Ca(fb.directory, dataclasses.replace(cfg, acme=cfg.acme.as_fallback(fb)), True))
        self.directories = frozenset(ca.directory for ca in self.order)
        # What a certificate's attempt worked around, for its last-issue record.
        self.warnings: dict[str, str] = {}
        self._sessions: dict[str, Session] = {}

    @property
    def primary(self) -> Ca:
        return self.order[0]

    def find(self, directory: str) -> Ca | None:
        return next((ca for ca in self.order if ca.directory == directory), None)

    def session(self, ca: Ca) -> Session:
        if ca.directory not in self._sessions:
            self._sessions[ca.directory] = Session(ca.cfg, self.pool, ca.directory, self.staging, self.warnings)
        return self._sessions[ca.directory]


def revoking_acme(cfg: Config, pool: Pool, directory: str, staging: bool, key_pem: str | None) -> Acme | None:
    """A session with the configured CA at `directory`: signed by `key_pem` with no account, else the account's.

    None if no configured CA has that directory any more.
    """
    from rgwtls.acmeflow import Acme

    cas = CAs(cfg, pool, staging)
    ca = cas.find(directory)
    if ca is None:
        return None
    return Acme(ca.cfg.acme, directory, key_pem, cfg.path) if key_pem else cas.session(ca).registered()


def obtain_from_any(
    cas: CAs,
    records: Records,
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
    failed: list[tuple[Ca, CaUnavailable]] = []
    for ca in cas.order:
        ours = current is not None and current.directory == ca.directory
        asked = decision if ours else dataclasses.replace(decision, replaces=None)
        try:
            new = obtain(ca.cfg, cas.session(ca), records, ca.cert_for(cert), generation, asked, noted)
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


def obtain(
    cfg: Config,
    session: Session,
    records: Records,
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
        check_persistent(cfg, session, acme, cert)
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
    note_order(noted, cert, session.directory, str(order.uri), key, used)
    fullchain = acme.finalize(order, certs.make_csr(key, cert.domains), deadline)
    new = build_set(cert, key, fullchain, generation, session.directory, used)
    check_issued(new, cfg, noted)  # a chain to no trusted root is never stored, nor its order fetched again
    return new


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


def build_set(
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
        issued_at=clock.now().isoformat(timespec="seconds"),
        issued_by=socket.gethostname(),
        directory=directory,
        profile=profile,
    )
