"""Checks a certificate set must pass before a gateway touches anything.

A set in the pool may be corrupt, truncated, mixed up by hand, expired, for
other names, older than what is served, or chained to another CA. Each is
refused here with one line, while the gateway still serves what it served.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from rgwtls.certs import dns_names, same_public_key
from rgwtls.errors import DeployError
from rgwtls.probe import fingerprint
from rgwtls.store import CertSet


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
    s: CertSet, names: tuple[str, ...], now: dt.datetime, deployed: x509.Certificate | None, allow_older: bool
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
    return Checked(cert, chain)
