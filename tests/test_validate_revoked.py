"""check_set refuses a set the pool records as revoked, even with allow_older; keyCompromise condemns the key."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from rgwtls.errors import DeployError
from rgwtls.revoked import Revoked, RevokedList, serial_hex, spki_sha256
from rgwtls.store import CertSet
from rgwtls.validate import check_set
from tests.test_validate import CA_KEY, NAMES, NOW, ROOTS, good

__all__ = ["good"]


def entry(cert_pem: str, reason: str) -> RevokedList:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return RevokedList(
        (Revoked("cog.example.org", serial_hex(cert), spki_sha256(cert), reason, "2026-12-07T06:00:00+00:00"),)
    )


def same_key_new_serial(s: CertSet) -> CertSet:
    """Another certificate for the same key: what a CA issues to a CSR made with a leaked key."""
    old = x509.load_pem_x509_certificate(s.cert_pem.encode())
    cert = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.issuer)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=60))
        .add_extension(old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(CA_KEY.public_key()), critical=False)
        .sign(CA_KEY, hashes.SHA256())
    )
    return dataclasses.replace(s, cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode())


@pytest.mark.parametrize("reason", ["keyCompromise", "superseded"])
def test_a_revoked_certificate_is_refused_even_with_allow_older(good: CertSet, reason: str) -> None:
    with pytest.raises(DeployError) as err:
        check_set(good, NAMES, NOW, None, allow_older=True, roots=ROOTS, revoked=entry(good.cert_pem, reason))
    assert f"is recorded as revoked ({reason}" in str(err.value)
    assert "not even with --allow-older" in str(err.value)


def test_key_compromise_refuses_another_certificate_for_the_same_key(good: CertSet) -> None:
    twin = same_key_new_serial(good)
    check_set(twin, NAMES, NOW, None, allow_older=True, roots=ROOTS)  # a good set by every other check
    with pytest.raises(DeployError) as err:
        check_set(twin, NAMES, NOW, None, allow_older=True, roots=ROOTS, revoked=entry(good.cert_pem, "keyCompromise"))
    assert "its key is that of certificate" in str(err.value)


def test_another_reason_condemns_that_certificate_only(good: CertSet) -> None:
    twin = same_key_new_serial(good)
    check_set(twin, NAMES, NOW, None, allow_older=False, roots=ROOTS, revoked=entry(good.cert_pem, "superseded"))
