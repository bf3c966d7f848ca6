"""Is a certificate on its CA's revocation list? The CRL, found, fetched, verified and cached.

Let's Encrypt switched its OCSP responders off on 2025-08-06: its
certificates name a CRL distribution point and nothing else, and a CA that
revokes in bulk says so there first. So `check` and `issue` read the CRL the
certificate names.

A CRL server is a stranger: the fetch has a total deadline and a byte cap
(rgwtls.http), goes the way `acme.proxy` says, and what comes back counts
only once its signature verifies against the certificate's issuer, its issuer
name is that issuer's, and its nextUpdate has not passed. A CRL that cannot
be fetched or does not verify says nothing about the certificate: it is a
`CrlError`, which callers report as a note or a warning, never as a revocation.

A verified CRL is kept under the state directory until its nextUpdate, as
the CA allows, so a check every few minutes asks the CA's server about once
a day; a cached file is verified again on every read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from rgwtls import files
from rgwtls.errors import RgwtlsError

if TYPE_CHECKING:
    from rgwtls.proxy import Route

log = logging.getLogger(__name__)

# The most a CRL may weigh: Let's Encrypt's shards are kilobytes, the largest CAs' full CRLs tens of megabytes.
MAX_BYTES = 32 * 2**20
# Every fetch of one lookup together, connect to last byte: a check has seconds, not minutes.
TIMEOUT = 2.5
CACHE_DIR = "crl"
# A CRL whose thisUpdate is this far ahead of our clock is still taken: clocks differ.
SKEW = dt.timedelta(minutes=5)
ISSUER_KEYS = (
    rsa.RSAPublicKey,
    dsa.DSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)
MAX_URL = 200  # characters of a URL from a certificate shown in a line

# RFC 5280's reason names, as cryptography's ReasonFlags spells them.
_REASONS = {
    x509.ReasonFlags.unspecified: "unspecified",
    x509.ReasonFlags.key_compromise: "keyCompromise",
    x509.ReasonFlags.ca_compromise: "cACompromise",
    x509.ReasonFlags.affiliation_changed: "affiliationChanged",
    x509.ReasonFlags.superseded: "superseded",
    x509.ReasonFlags.cessation_of_operation: "cessationOfOperation",
    x509.ReasonFlags.certificate_hold: "certificateHold",
    x509.ReasonFlags.privilege_withdrawn: "privilegeWithdrawn",
    x509.ReasonFlags.aa_compromise: "aACompromise",
    x509.ReasonFlags.remove_from_crl: "removeFromCRL",
}


class CrlError(RgwtlsError):
    """No CRL could be consulted. `warn`: one came but is not to be trusted (bad signature, stale), not just absent."""

    def __init__(self, text: str, warn: bool = False) -> None:
        super().__init__(text)
        self.warn = warn


@dataclass(frozen=True)
class Listed:
    """The CRL's entry for a certificate: it is revoked."""

    url: str
    revoked_at: dt.datetime
    reason: str

    def describe(self) -> str:
        return f"listed in its CA's CRL {self.url} since {self.revoked_at:%Y-%m-%d %H:%M} UTC, reason {self.reason}"


def shown(text: str) -> str:
    """A URL from a certificate as a line may hold it: no control characters, bounded."""
    clean = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return clean if len(clean) <= MAX_URL else clean[:MAX_URL] + "..."


def urls(cert: x509.Certificate) -> list[str]:
    """The http(s) URLs of the certificate's CRL distribution points, in its order."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    found = []
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier) and name.value.lower().startswith(
                ("http://", "https://")
            ):
                found.append(name.value)
    return found[:3]  # a certificate with more is odd; three fetches bound the time


def issuer_of(cert: x509.Certificate, candidates: list[x509.Certificate]) -> x509.Certificate | None:
    """The candidate that signed `cert` (the chain's issuing certificate), or None."""
    for c in candidates:
        if c.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(c)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return c
    return None


def fetch(url: str, route: Route, timeout: float = TIMEOUT, max_bytes: int = MAX_BYTES) -> bytes:
    """The CRL's bytes, within `timeout` in all and at most `max_bytes`; CrlError says why not."""
    from rgwtls import http, proxy  # only here: a cached or absent CRL needs no HTTP stack (rgwtls.revocation)

    try:
        resp = proxy.get(url, route, timeout, max_bytes)
    except http.TooLarge as e:
        raise CrlError(f"the CRL {shown(url)} was not taken: {e}", warn=True) from None
    except proxy.NoAnswer as e:
        raise CrlError(f"the CRL {shown(url)} could not be fetched: {shown(str(e))}") from None
    if resp.status_code in (401, 407) and route.proxy:
        # A plain-HTTP request through a proxy: its refusal is an answer, not a failed CONNECT.
        raise CrlError(
            f"the CRL {shown(url)} could not be fetched: proxy {route.proxy} ({route.key}) answered "
            f"HTTP {resp.status_code}; check {route.key} and {route.key}_password_file"
        )
    if resp.status_code != 200:
        raise CrlError(f"the CRL {shown(url)} could not be fetched: HTTP {resp.status_code}")
    return resp.content


def load(data: bytes, issuer: x509.Certificate, url: str, now: dt.datetime) -> x509.CertificateRevocationList:
    """The CRL, if it is the issuer's, signed by it and current; CrlError (a warning) if not."""
    try:
        crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----BEGIN") else x509.load_der_x509_crl(data)
    except ValueError as e:
        raise CrlError(f"the CRL {shown(url)} does not parse as a CRL ({e})", warn=True) from None
    if crl.issuer != issuer.subject:
        raise CrlError(
            f"the CRL {shown(url)} is issued by {shown(crl.issuer.rfc4514_string())}, "
            f"not by the certificate's issuer {shown(issuer.subject.rfc4514_string())}",
            warn=True,
        )
    key = issuer.public_key()
    if not isinstance(key, ISSUER_KEYS) or not crl.is_signature_valid(key):
        raise CrlError(f"the CRL {shown(url)} does not verify against the issuer's key", warn=True)
    _check_scope(crl, url)
    nxt = crl.next_update_utc
    if nxt is None or nxt <= now:
        when = f"its nextUpdate passed at {nxt:%Y-%m-%d %H:%M} UTC" if nxt else "it has no nextUpdate"
        raise CrlError(f"the CRL {shown(url)} is stale: {when}", warn=True)
    if crl.last_update_utc > now + SKEW:
        raise CrlError(f"the CRL {shown(url)} is dated in the future ({crl.last_update_utc:%Y-%m-%d %H:%M} UTC)")
    return crl


def _check_scope(crl: x509.CertificateRevocationList, url: str) -> None:
    """A partitioned CRL (Let's Encrypt shards its CRLs) must be the part at `url` (RFC 5280 6.3.3 b.2).

    Otherwise a server could answer with another shard, signed and current,
    that lists none of our serials, and hide a revocation.
    """
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return
    if idp.only_contains_ca_certs or idp.only_contains_attribute_certs or idp.indirect_crl:
        raise CrlError(f"the CRL {shown(url)} is not a CRL of end-entity certificates from their issuer", warn=True)
    names = [n.value for n in idp.full_name or () if isinstance(n, x509.UniformResourceIdentifier)]
    if names and url not in names:
        raise CrlError(
            f"the CRL {shown(url)} is another part of its CA's CRL (its issuing distribution point is "
            f"{shown(names[0])})",
            warn=True,
        )


def cache_path(state_dir: Path, url: str) -> Path:
    return state_dir / CACHE_DIR / f"{hashlib.sha256(url.encode()).hexdigest()[:32]}.crl"


def _cached(path: Path, issuer: x509.Certificate, url: str, now: dt.datetime) -> x509.CertificateRevocationList | None:
    """A cached CRL that still verifies and is current; None otherwise (it is fetched again)."""
    try:
        st = path.stat()
        if st.st_mode & 0o002 or st.st_size > MAX_BYTES:
            return None  # anyone could have written it, or it is not ours
        return load(path.read_bytes(), issuer, url, now)
    except (OSError, CrlError):
        return None


def _keep(path: Path, data: bytes) -> None:
    """Cache the verified CRL; a state directory we cannot write costs a fetch next time, nothing more.

    Only `crl/` is made here, never the state directory itself: deploy makes
    that one as root, 0700, and one made first by the check's user would be
    that user's, under root's lock and kept sets.
    """
    try:
        path.parent.mkdir(mode=0o755, exist_ok=True)
        files.atomic_write(path, data, files.Access(0o644, os.getuid(), os.getgid()))
    except (OSError, RgwtlsError) as e:
        log.debug("could not cache the CRL in %s: %s", path, e)


def lookup(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    route: Route | Callable[[], Route],
    state_dir: Path,
    now: dt.datetime | None = None,
    timeout: float = TIMEOUT,
) -> Listed | None:
    """The CRL's entry for `cert`, or None if its CRL does not list it; CrlError if no CRL could be consulted.

    Each distribution point in turn until one gives a verified CRL: the
    cached one while it is current, else a fresh one; `timeout` bounds all
    the fetches together.
    """
    now = now or dt.datetime.now(dt.UTC)
    end = time.monotonic() + timeout
    points = urls(cert)
    if not points:
        raise CrlError("the certificate names no CRL distribution point")
    problems: list[CrlError] = []
    for url in points:
        path = cache_path(state_dir, url)
        crl = _cached(path, issuer, url, now)
        if crl is None:
            try:
                left = end - time.monotonic()
                if left <= 0:
                    raise CrlError(f"the CRL {shown(url)} was not fetched: {timeout:g}s for CRLs were used up")
                data = fetch(url, route() if callable(route) else route, left)
                crl = load(data, issuer, url, now)
            except CrlError as e:
                problems.append(e)
                continue
            _keep(path, data)
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is None:
            return None
        try:
            reason = _REASONS.get(entry.extensions.get_extension_for_class(x509.CRLReason).value.reason, "unspecified")
        except x509.ExtensionNotFound:
            reason = "unspecified"
        return Listed(shown(url), entry.revocation_date_utc, reason)
    worst = next((p for p in problems if p.warn), problems[0])
    raise CrlError("; ".join(str(p) for p in problems), warn=worst.warn)
