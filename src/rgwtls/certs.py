"""Keys and certificates: generation, parsing, and the facts renewal and deploy decide on."""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from rgwtls import probe
from rgwtls.errors import RgwtlsError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)


def new_private_key(key_type: str) -> PrivateKey:
    """A fresh key for each certificate: a renewal never reuses the old key.

    Callers keep the object: loading an RSA key from PEM checks it again,
    about 45 ms each time for 2048 bits.
    """
    if key_type.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    curve = {"ec256": ec.SECP256R1(), "ec384": ec.SECP384R1()}[key_type]
    return ec.generate_private_key(curve)


def load_private_key(pem: str) -> PrivateKey:
    """A key as rgwtls makes them, RSA or EC; raises ValueError for anything else."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"a {type(key).__name__}, not an RSA or EC key")
    return key


def private_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def make_csr(key: PrivateKey, domains: Sequence[str]) -> bytes:
    """A CSR for all names, in the SAN, with an empty subject as Let's Encrypt prefers."""
    san = x509.SubjectAlternativeName([x509.DNSName(d) for d in domains])
    csr = x509.CertificateSigningRequestBuilder(x509.Name([])).add_extension(san, critical=False)
    return csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def same_public_key(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    """Whether the certificate is for this private key."""
    fmt, enc = serialization.PublicFormat.SubjectPublicKeyInfo, serialization.Encoding.DER
    return bool(key.public_key().public_bytes(enc, fmt) == cert.public_key().public_bytes(enc, fmt))


def public_key_matches(key: PrivateKey, cert_pem: str) -> bool:
    return same_public_key(key, x509.load_pem_x509_certificate(cert_pem.encode()))


def dns_names(cert: x509.Certificate) -> frozenset[str]:
    """The DNS names of the SAN, lower-cased: DNS names are case-insensitive."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(n.lower() for n in san.get_values_for_type(x509.DNSName))


def split_pem_chain(fullchain: str) -> tuple[str, str]:
    """The leaf and the rest, as the CA sent them."""
    blocks = _PEM_CERT.findall(fullchain)
    if not blocks:
        raise RgwtlsError("the CA sent no certificate in PEM form")
    return blocks[0] + "\n", "".join(b + "\n" for b in blocks[1:])


@dataclass(frozen=True)
class CertInfo:
    names: frozenset[str]
    not_before: dt.datetime
    not_after: dt.datetime
    serial: int
    fingerprint: str
    ari_id: str | None

    @property
    def lifetime(self) -> dt.timedelta:
        return self.not_after - self.not_before

    def remaining(self, now: dt.datetime) -> dt.timedelta:
        return self.not_after - now


def cert_info(cert_pem: str) -> CertInfo:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return CertInfo(
        names=dns_names(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial=cert.serial_number,
        fingerprint=probe.fingerprint(cert),
        ari_id=ari_cert_id(cert),
    )


def ari_cert_id(cert: x509.Certificate) -> str | None:
    """The RFC 9773 certificate identifier: base64url(AKI keyIdentifier) '.' base64url(serial DER)."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    if aki.key_identifier is None:
        return None
    serial = cert.serial_number
    serial_bytes = serial.to_bytes(math.ceil((serial.bit_length() + 1) / 8), "big", signed=True)

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).decode().rstrip("=")

    return f"{b64(aki.key_identifier)}.{b64(serial_bytes)}"


def key_matches_cert(key_pem: str, cert_pem: str) -> bool:
    return same_public_key(
        serialization.load_pem_private_key(key_pem.encode(), password=None),
        x509.load_pem_x509_certificate(cert_pem.encode()),
    )


def first_cert(blob: bytes | None) -> x509.Certificate | None:
    """The first certificate in an installed file (key first or not), or None if there is none."""
    if not blob:
        return None
    try:
        return x509.load_pem_x509_certificates(blob)[0]
    except (ValueError, IndexError):
        return None
