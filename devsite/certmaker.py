"""Certificates with chosen names and validity, for tests that need a specific one."""

from __future__ import annotations

import datetime as dt
import functools

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_cert(
    names: tuple[str, ...],
    not_before: dt.datetime,
    not_after: dt.datetime,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
) -> tuple[str, str]:
    """(key PEM, cert PEM), self-signed unless an issuer key is given."""
    key = ec.generate_private_key(ec.SECP256R1())
    signer = issuer_key or key
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test issuer")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
        .sign(signer, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


def make_ca(name: str = "test issuer") -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A CA key and its self-signed certificate: `make_cert(..., issuer_key=key)` chains to it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=400))
        .not_valid_after(now + dt.timedelta(days=400))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM).decode()


@functools.cache
def site_ca() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """The dev site's own CA for sets made by hand, one per process, trusted like its Pebbles (site.py).

    Named as every make_ca() is ("test issuer", the issuer make_cert writes),
    so only its key tells it from a throwaway one.
    """
    return make_ca()


def pem_file(names: tuple[str, ...], days_before: float = 30, days_after: float = 60) -> str:
    """A whole radosgw PEM (key, cert, chain) from a throwaway CA."""
    ca_key, ca_pem = make_ca()
    now = dt.datetime.now(dt.UTC)
    key, cert = make_cert(
        names, now - dt.timedelta(days=days_before), now + dt.timedelta(days=days_after), issuer_key=ca_key
    )
    return key + cert + ca_pem
