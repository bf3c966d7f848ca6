"""Whether a certificate is due: names, CA, profile, expiry, revocation, the CA's renewal window (ARI), its life.

Asks the CA only when the dates alone do not settle it, and a CA that does
not answer is no failure on a day nothing is due.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

from rgwtls import certs
from rgwtls.config import CertificateConfig
from rgwtls.errors import AcmeError
from rgwtls.issue import clock
from rgwtls.issue.session import Session
from rgwtls.store import CertSet

# The name the log format shows: a line of `issue` reads as it always has, whichever room wrote it.
log = logging.getLogger("rgwtls.issue")


@dataclass(frozen=True)
class Decision:
    due: bool
    reason: str
    replaces: str | None = None
    # Revoked, or the CA asks for it now: due whatever the retry schedule says.
    urgent: bool = False


def decide(
    cert: CertificateConfig,
    current: CertSet | None,
    session: Session,
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
    now = clock.now()
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
