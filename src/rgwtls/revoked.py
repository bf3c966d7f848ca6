"""The pool's record of revoked certificates: what no gateway may serve again.

`rgwtls revoke` writes it on the issuer, every `deploy` and `check` reads it.
It lives in the set namespace (`""`, or `staging`) as the object `revoked`,
so that a deploy-only user, who may read that namespace and nothing of the
issuer's, sees it in the same kind of read as the set itself. Only the issuer
writes it, under its lock.

An entry names a certificate by its serial, and its key by the SHA-256 of the
key's SubjectPublicKeyInfo: a certificate revoked for `keyCompromise` makes
every set holding that key unservable, whatever its serial; any other reason
condemns that one certificate only.

The record only grows (a revoked certificate stays revoked), bounded by
`MAX_ENTRIES`, the oldest dropped first: by then their certificates expired
long ago.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rgwtls.errors import StoreError

REVOKED_OBJECT = "revoked"
FORMAT = "rgwtls-revoked/1"
MAX_ENTRIES = 500
# RFC 5280's CRLReason codes for the reasons an ACME client may give (RFC 8555 7.6).
REASONS: dict[str, int] = {
    "unspecified": 0,
    "keyCompromise": 1,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
}
KEY_COMPROMISE = "keyCompromise"


@dataclass(frozen=True)
class Revoked:
    """One revoked certificate, as the issuer recorded it."""

    certificate: str  # the configured name (`[[certificate]] name`)
    serial: str  # lowercase hex, as `serial_hex` gives it
    spki_sha256: str  # lowercase hex, as `spki_sha256` gives it
    reason: str  # a key of REASONS
    at: str  # ISO 8601 UTC: when the issuer recorded it
    # ISO 8601 UTC: when the CA accepted the revocation; "" while it has not (yet).
    at_ca: str = ""


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def spki_sha256(cert: x509.Certificate) -> str:
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class RevokedList:
    """The whole record: every entry, oldest first."""

    entries: tuple[Revoked, ...] = ()

    def to_bytes(self) -> bytes:
        doc = {"format": FORMAT, "entries": [dataclasses.asdict(e) for e in self.entries[-MAX_ENTRIES:]]}
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes | None, where: str) -> RevokedList:
        """The record, or an empty one if the object is absent; a corrupt one is a StoreError, never ignored.

        A deploy that cannot tell what is revoked installs nothing: failing
        closed keeps serving what is served, failing open could bring a
        compromised key back.
        """
        if data is None:
            return cls()
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("entries"), list):
                raise ValueError("unknown format")
            names = {f.name for f in dataclasses.fields(Revoked)}
            entries = []
            for raw in doc["entries"]:
                if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
                    raise ValueError("an entry is not an object of strings")
                known = {k: v for k, v in raw.items() if k in names}
                entry = Revoked(**known)
                if entry.reason not in REASONS:
                    raise ValueError(f"unknown reason {entry.reason[:40]!r}")
                entries.append(entry)
            return cls(tuple(entries))
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            raise StoreError(
                f"{where} is not a valid record of revoked certificates ({e}); "
                "nothing is deployed until 'rgwtls revoke' on the issuer rewrites it"
            ) from None

    def with_entry(self, entry: Revoked) -> RevokedList:
        """The record with `entry` added, or replacing the entry of the same serial (its `at_ca` filled in)."""
        kept = tuple(e for e in self.entries if e.serial != entry.serial)
        return RevokedList((*kept, entry)[-MAX_ENTRIES:])

    def by_serial(self, serial: str) -> Revoked | None:
        return next((e for e in self.entries if e.serial == serial), None)

    def find(self, cert: x509.Certificate) -> Revoked | None:
        """The entry that forbids serving `cert`: its own serial, or its key revoked for keyCompromise."""
        found = self.by_serial(serial_hex(cert))
        if found is not None:
            return found
        spki = spki_sha256(cert)
        return next((e for e in self.entries if e.reason == KEY_COMPROMISE and e.spki_sha256 == spki), None)

    def find_pem(self, cert_pem: str) -> Revoked | None:
        """`find` for a PEM certificate (the first one in the text: the leaf)."""
        return self.find(x509.load_pem_x509_certificate(cert_pem.encode()))
