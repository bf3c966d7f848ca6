"""Checks a certificate set must pass before a gateway touches anything.

A set in the pool may be corrupt, truncated, mixed up by hand, expired, for
other names, older than what is served, or chained to another CA. Each is
refused here with one line, while the gateway still serves what it served.

A set is trusted only if its chain ends at a root of the system's store or
of deploy.trusted_roots: a self-consistent set from a test CA nobody trusts
is as unusable to clients as a corrupt one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import re
import ssl
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from rgwtls.certs import dns_names, first_cert, same_public_key
from rgwtls.config import Config
from rgwtls.errors import ConfigError, DeployError, RgwtlsError
from rgwtls.probe import fingerprint
from rgwtls.revoked import REVOKED_OBJECT, RevokedList, serial_hex
from rgwtls.store import CertSet, Pool


@dataclass(frozen=True)
class Checked:
    cert: x509.Certificate
    chain: list[x509.Certificate]

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)


def covers(cert_names: frozenset[str], name: str) -> bool:
    """RFC 6125 matching: a wildcard covers exactly one leftmost label."""
    if name in cert_names:
        return True
    head, _, rest = name.partition(".")
    return bool(head) and not name.startswith("*.") and f"*.{rest}" in cert_names


# One PEM block, label and all; what lies between two of them must be whitespace.
_PEM_BLOCK = re.compile(r"-----BEGIN ([^\r\n-]+)-----.*?-----END \1-----", re.DOTALL)
_WHITESPACE = " \t\r\n"


def pem_problem(text: str, what: str, label: str, one: bool) -> str | None:
    """Why this PEM text is not clean PEM radosgw can load, or None.

    The parsers read the first block and ignore the rest, so a NUL byte or
    stray text after it passes them; radosgw (OpenSSL, reading a C string)
    then cannot load the file. `label` is how each block's label must end.
    """
    blocks = _PEM_BLOCK.findall(text)
    if one and not blocks:
        return f"{what} has no PEM block"
    if _PEM_BLOCK.sub("", text).strip(_WHITESPACE):
        return f"{what} has bytes outside its PEM block{'' if one else 's'}"
    if any(not (" " <= c <= "~" or c in _WHITESPACE) for c in text):
        return f"{what} has bytes in its PEM block{'' if one else 's'} that are not printable ASCII"
    if one and len(blocks) > 1:
        return f"{what} is {len(blocks)} PEM blocks, not one"
    wrong = [b for b in blocks if not b.endswith(label)]
    if wrong:
        return f"{what} holds a PEM block labelled {wrong[0]}"
    return None


def check_set(
    s: CertSet,
    names: tuple[str, ...],
    now: dt.datetime,
    deployed: x509.Certificate | None,
    allow_older: bool,
    *,
    roots: Roots,
    revoked: RevokedList | None = None,
) -> Checked:
    where = f"the set {s.name} (generation {s.generation}) in the pool"
    # Each part is PEM and nothing else, every byte of it.
    for text, what, label, one in (
        (s.key_pem, "the private key", "PRIVATE KEY", True),
        (s.cert_pem, "the certificate", "CERTIFICATE", True),
        (s.chain_pem, "the chain", "CERTIFICATE", False),
    ):
        problem = pem_problem(text, what, label, one)
        if problem:
            raise DeployError(f"{where}: {problem}; run 'rgwtls issue --force'")
    # Everything parses as PEM.
    try:
        key = serialization.load_pem_private_key(s.key_pem.encode(), password=None)
    except (ValueError, TypeError):
        raise DeployError(f"{where}: the private key does not parse; run 'rgwtls issue --force'") from None
    try:
        cert = x509.load_pem_x509_certificate(s.cert_pem.encode())
        chain = x509.load_pem_x509_certificates(s.chain_pem.encode()) if s.chain_pem.strip() else []
    except ValueError:
        raise DeployError(f"{where}: the certificate or chain does not parse; run 'rgwtls issue --force'") from None
    # It is not revoked, nor (keyCompromise) its key: whatever else holds, even --allow-older.
    refused = revoked_problem(cert, revoked)
    if refused:
        raise DeployError(f"{where}: {refused}")
    # The private key matches the certificate.
    if not same_public_key(key, cert):
        raise DeployError(f"{where}: the private key does not match the certificate; run 'rgwtls issue --force'")
    # The chain issues the certificate, link by link.
    if not chain:
        raise DeployError(f"{where}: the chain is empty; run 'rgwtls issue --force'")
    for child, parent in zip([cert, *chain], chain, strict=False):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise DeployError(
                f"{where}: the chain does not issue the certificate ({child.issuer.rfc4514_string()} "
                f"is not {parent.subject.rfc4514_string()}); run 'rgwtls issue --force'"
            ) from None
    # Now is inside the validity window.
    if now < cert.not_valid_before_utc:
        raise DeployError(f"{where}: not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if now >= cert.not_valid_after_utc:
        raise DeployError(
            f"{where}: expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
            "check the issuer's cron mail and run 'rgwtls issue' there"
        )
    # It covers every name this gateway serves.
    have = dns_names(cert)
    missing = [n for n in names if not covers(have, n)]
    if missing:
        raise DeployError(
            f"{where}: does not cover {', '.join(missing)} (it names {', '.join(sorted(have))}); "
            "check deploy.names and the issuer's [[certificate]] domains"
        )
    # It is not older than what is deployed: no silent rollback.
    if deployed is not None and not allow_older and cert.not_valid_before_utc < deployed.not_valid_before_utc:
        raise DeployError(
            f"{where}: issued {cert.not_valid_before_utc:%Y-%m-%d %H:%M}, older than the deployed "
            f"certificate (issued {deployed.not_valid_before_utc:%Y-%m-%d %H:%M}); "
            "refusing to roll back; pass --allow-older to deploy it anyway"
        )
    # Its chain ends at a root this host trusts: last, so every other fault is named as before.
    untrusted = roots.problem(chain)
    if untrusted:
        raise DeployError(f"{where}: {untrusted}")
    return Checked(cert, chain)


def revoked_problem(cert: x509.Certificate | None, revoked: RevokedList | None) -> str | None:
    """Why the pool's record of revoked certificates forbids serving `cert`, or None."""
    entry = revoked.find(cert) if revoked is not None and cert is not None else None
    if entry is None or cert is None:
        return None
    if entry.serial == serial_hex(cert):
        said = f"certificate {entry.serial} is recorded as revoked ({entry.reason}, at {entry.at})"
    else:
        said = f"its key is that of certificate {entry.serial}, recorded as revoked for {entry.reason} at {entry.at}"
    return (
        f"{said}; it is never installed, not even with --allow-older; "
        "run 'rgwtls revoke' (or 'rgwtls issue --force') on the issuer for a replacement"
    )


def read_revoked(pool: Pool, staging: bool) -> RevokedList:
    """The pool's record of revoked certificates; a corrupt one is one line, and nothing is installed (fail closed)."""
    ns = pool.set_namespace(staging)
    where = f"{ns + '/' if ns else ''}{REVOKED_OBJECT} in pool {pool.cfg.pool}"
    return RevokedList.from_bytes(pool.read(ns, REVOKED_OBJECT), where)


def not_put_back(previous: bytes | None, revoked: RevokedList | None) -> str | None:
    """Why a rollback must not bring back the previous certificate (it is revoked), or None."""
    refused = revoked_problem(first_cert(previous), revoked)
    if refused is None:
        return None
    return f"the previous certificate is not put back ({refused.split(';')[0]}): the new one stays installed"


def unless_revoked(
    previous: bytes | None, revoked: RevokedList | None, put_back: Callable[[], None]
) -> Callable[[], None]:
    """`put_back` of a failed swap or re-read, refused when the certificate it would bring back is revoked."""

    def guarded() -> None:
        refused = not_put_back(previous, revoked)
        if refused is not None:
            raise DeployError(refused)
        put_back()

    return guarded


# -- trusted roots ---------------------------------------------------------------------

# Where distributions keep the system's bundle, after what OpenSSL itself was built to read.
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu
    "/etc/pki/tls/certs/ca-bundle.crt",  # RHEL, Fedora
    "/etc/ssl/cert.pem",  # Alpine, the BSDs
)
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
FIX = "set deploy.trusted_roots to a PEM bundle with that root, e.g. a private ACME CA's root"


@dataclass(frozen=True)
class Roots:
    """The trust anchors: the system's store and deploy.trusted_roots, indexed by subject."""

    certs: tuple[x509.Certificate, ...]

    @functools.cached_property
    def _by_subject(self) -> dict[bytes, list[x509.Certificate]]:
        index: dict[bytes, list[x509.Certificate]] = {}
        for c in self.certs:
            index.setdefault(c.subject.public_bytes(), []).append(c)
        return index

    def issued(self, top: x509.Certificate) -> bool:
        """Whether `top` is one of the roots, or is issued and signed by one (a cross-sign, say)."""
        for root in self._by_subject.get(top.issuer.public_bytes(), []):
            if root == top:
                return True
            try:
                top.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return True
        return top in self.certs

    def problem(self, chain: Sequence[x509.Certificate]) -> str | None:
        """Why this chain (leaf excluded, as the CA sends it) does not end at a trusted root, or None."""
        if not chain:
            return "the chain is empty, so it ends at no trusted root"
        top = chain[-1]
        if self.issued(top):
            return None
        return (
            f"its chain ends at {top.issuer.rfc4514_string()}, which is neither a trusted root nor issued by one; {FIX}"
        )


def _parse_bundle(data: bytes) -> tuple[list[x509.Certificate], int]:
    """Every certificate of a PEM bundle, one block at a time, and how many blocks did not parse.

    Block by block, so that one odd certificate (the system's stores hold a
    few with a negative serial, which cryptography warns about and will one
    day refuse) costs only itself.
    """
    found: list[x509.Certificate] = []
    bad = 0
    for block in _PEM_CERT.findall(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                found.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                bad += 1
    return found, bad


@functools.cache
def system_roots() -> tuple[x509.Certificate, ...]:
    """The system's CA store, as OpenSSL finds it ($SSL_CERT_FILE included); empty if there is none."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, *SYSTEM_BUNDLES):
        if not candidate:
            continue
        try:
            data = Path(candidate).read_bytes()
        except OSError:
            continue
        return tuple(_parse_bundle(data)[0])
    return ()


def trusted_roots(cfg: Config) -> Roots:
    """The system's store plus deploy.trusted_roots; a bundle that is missing or holds no certificate is one line."""
    bundle = cfg.deploy.trusted_roots
    if not bundle:
        return Roots(system_roots())
    key = f"config {cfg.path}: deploy.trusted_roots"
    try:
        data = Path(bundle).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{key}: {bundle} does not exist; write the roots there as PEM, or empty the key") from None
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {bundle}: {e.strerror}") from None
    found, bad = _parse_bundle(data)
    if bad:
        raise ConfigError(f"{key}: {bad} certificate(s) in {bundle} do not parse; write the roots there as PEM")
    if not found:
        raise ConfigError(f"{key}: {bundle} holds no PEM certificate; write the roots there as PEM")
    return Roots(system_roots() + tuple(found))


def check_issued(s: CertSet, cfg: Config, note: Path | None = None) -> None:
    """Refuse a set the CA just gave whose chain ends at no trusted root: `issue` stores nothing then.

    `note`, the order's note (which holds the new key), goes too: fetching
    that order again would give the same chain, so nothing of the run is left.
    """
    try:
        chain = x509.load_pem_x509_certificates(s.chain_pem.encode()) if s.chain_pem.strip() else []
        untrusted = trusted_roots(cfg).problem(chain)
    except ValueError:
        untrusted = "the CA's chain does not parse"
    if untrusted:
        if note is not None:
            with contextlib.suppress(OSError):  # the next run drops a note it cannot use, with a warning
                note.unlink(missing_ok=True)
        raise RgwtlsError(f"{s.name}: the CA's certificate is not stored: {untrusted}")
