"""The pool's record of revoked certificates: round trip, what it forbids, and that a corrupt one fails closed."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rgwtls.errors import StoreError
from rgwtls.revoked import MAX_ENTRIES, Revoked, RevokedList, serial_hex, spki_sha256


def _cert(key: ec.EllipticCurvePrivateKey, serial: int) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cog.example.org")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def _entry(cert: x509.Certificate, reason: str) -> Revoked:
    return Revoked("cog", serial_hex(cert), spki_sha256(cert), reason, "2026-12-07T06:00:00+00:00")


def test_a_record_round_trips_and_an_absent_one_is_empty() -> None:
    cert = _cert(ec.generate_private_key(ec.SECP256R1()), 0xABC)
    record = RevokedList().with_entry(_entry(cert, "superseded"))
    assert RevokedList.from_bytes(record.to_bytes(), "revoked") == record
    assert RevokedList.from_bytes(None, "revoked") == RevokedList()


def test_superseded_forbids_that_certificate_only_and_key_compromise_every_certificate_of_the_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    old, same_key = _cert(key, 1), _cert(key, 2)
    superseded = RevokedList().with_entry(_entry(old, "superseded"))
    assert superseded.find(old) is not None
    assert superseded.find(same_key) is None
    compromised = RevokedList().with_entry(_entry(old, "keyCompromise"))
    assert compromised.find(same_key) is not None
    assert compromised.find(_cert(ec.generate_private_key(ec.SECP256R1()), 3)) is None


def test_an_entry_for_the_same_serial_is_replaced_not_added() -> None:
    cert = _cert(ec.generate_private_key(ec.SECP256R1()), 7)
    first = RevokedList().with_entry(_entry(cert, "keyCompromise"))
    done = first.with_entry(Revoked(**{**_entry(cert, "keyCompromise").__dict__, "at_ca": "2026-12-07T06:01:00+00:00"}))
    assert len(done.entries) == 1
    assert done.entries[0].at_ca


def test_the_record_keeps_only_the_newest_entries() -> None:
    record = RevokedList(tuple(Revoked("cog", format(n, "x"), "00", "superseded", "t") for n in range(MAX_ENTRIES + 5)))
    kept = RevokedList.from_bytes(record.to_bytes(), "revoked").entries
    assert len(kept) == MAX_ENTRIES
    assert kept[-1].serial == format(MAX_ENTRIES + 4, "x")


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"\xff\xfe",
        b'{"format": "other"}',
        b'{"format": "rgwtls-revoked/1", "entries": [1]}',
        b'{"format": "rgwtls-revoked/1", "entries": [{"certificate": "c", "serial": "1", "spki_sha256": "0",'
        b' "reason": "because", "at": "t"}]}',
    ],
)
def test_a_corrupt_record_is_an_error_never_an_empty_record(data: bytes) -> None:
    with pytest.raises(StoreError, match="not a valid record of revoked certificates"):
        RevokedList.from_bytes(data, "revoked")
