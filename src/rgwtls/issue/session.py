"""The ACME session with one CA, and the account this rgwtls keeps there.

Opened only when a decision needs the CA: a run with nothing due whose CA
offers no renewal information never loads the ACME stack.
"""

from __future__ import annotations

import json
import logging
import socket
from typing import TYPE_CHECKING

from rgwtls.config import Config
from rgwtls.errors import StoreError
from rgwtls.issue import clock
from rgwtls.store import NS_ISSUER, CertSet, Pool

if TYPE_CHECKING:
    from rgwtls.acmeflow import Acme

# The name the log format shows: a line of `issue` reads as it always has, whichever room wrote it.
log = logging.getLogger("rgwtls.issue")


class Session:
    """The ACME session, opened only when a decision needs the CA.

    Accounts are kept per CA, keyed by directory (`account_object`): going
    back to a CA finds its account, and a run against a mistyped directory
    replaces nobody's. A new account's key is written to the pool only once
    the CA has answered and registered it.
    """

    def __init__(
        self, cfg: Config, pool: Pool, directory: str, staging: bool, warnings: dict[str, str] | None = None
    ) -> None:
        self.cfg, self.pool, self.directory, self.staging = cfg, pool, directory, staging
        self._acme: Acme | None = None
        self._registered = False
        self._unsaved: dict[str, str] | None = None
        # What a certificate's attempt worked around, for its last-issue record (shared by the run's CAs).
        self.warnings: dict[str, str] = {} if warnings is None else warnings

    def acme(self) -> Acme:
        from rgwtls.acmeflow import Acme, new_account_key

        if self._acme is None:
            doc, obj = self._account()
            if doc is None:
                # A first run with this CA: a new key, saved once the CA registered it.
                doc = {
                    "directory": self.directory,
                    "key": new_account_key(),
                    "created": clock.now().isoformat(timespec="seconds"),
                    "created_by": socket.gethostname(),
                }
                self._unsaved = doc
            try:
                self._acme = Acme(self.cfg.acme, self.directory, doc["key"], self.cfg.path)
            except (ValueError, TypeError):
                raise _unusable_account(self.pool, obj, "its key does not load as a private key") from None
        return self._acme

    def _account(self) -> tuple[dict[str, str] | None, str]:
        """This CA's account document and its object; None if there is none yet."""
        obj = account_object(self.directory)
        raw = self.pool.read(NS_ISSUER, obj)
        if raw is None:
            # Before accounts were kept per CA, each side had one object.
            legacy = f"account.{'staging' if self.staging else 'production'}"
            raw = self.pool.read(NS_ISSUER, legacy)
            doc = _account_doc(self.pool, legacy, raw) if raw is not None else None
            if doc is None or doc["directory"] != self.directory:
                return None, obj
            self.pool.write(NS_ISSUER, obj, json.dumps(doc).encode())
            log.info("the ACME account for %s is now kept in %s/%s", self.directory, NS_ISSUER, obj)
            return doc, obj
        doc = _account_doc(self.pool, obj, raw)
        if doc["directory"] != self.directory:
            raise _unusable_account(self.pool, obj, f"it is the account for {doc['directory']}, not {self.directory}")
        return doc, obj

    def revoked(self, current: CertSet) -> str:
        """Why `current` is revoked (the pool's record, its CRL), or ""; never fails the run."""
        from rgwtls import revocation
        from rgwtls.revoked import REVOKED_OBJECT, RevokedList

        ns = self.pool.set_namespace(self.staging)
        try:
            record = RevokedList.from_bytes(self.pool.read(ns, REVOKED_OBJECT), f"{ns}/{REVOKED_OBJECT}")
        except StoreError as e:
            log.warning("%s", e)
            record = None
        return revocation.due_at_once(self.cfg, record, current.cert_pem, current.chain_pem)

    def registered(self) -> Acme:
        acme = self.acme()
        if not self._registered:
            acme.register(self.cfg.acme.email, *self.cfg.acme.eab(self.staging))
            if self._unsaved is not None:
                obj = account_object(self.directory)
                self.pool.write(NS_ISSUER, obj, json.dumps(self._unsaved).encode())
                self._unsaved = None
                log.info("created a new ACME account for %s, kept in %s/%s", self.directory, NS_ISSUER, obj)
            self._registered = True
        return acme


def account_object(directory: str) -> str:
    """The pool object (namespace acme) of the account at this CA: its host, readable, and a digest of the URL."""
    import hashlib
    from urllib.parse import urlsplit

    host = urlsplit(directory).hostname or "ca"
    return f"account.{host}.{hashlib.sha256(directory.encode()).hexdigest()[:12]}"


def _account_doc(pool: Pool, obj: str, raw: bytes) -> dict[str, str]:
    """The account document, checked: a damaged one is one line naming it, and is never replaced by itself."""
    try:
        doc = json.loads(raw)
    except ValueError:
        raise _unusable_account(pool, obj, "it is not JSON") from None
    if not isinstance(doc, dict):
        raise _unusable_account(pool, obj, f"it is a JSON {type(doc).__name__}, not an object")
    for field in ("directory", "key"):
        if not isinstance(doc.get(field), str) or not doc[field]:
            raise _unusable_account(pool, obj, f"it has no {field}")
    if "PRIVATE KEY-----" not in doc["key"]:
        raise _unusable_account(pool, obj, "its key is not a PEM private key")
    return {k: v for k, v in doc.items() if isinstance(v, str)}


def _unusable_account(pool: Pool, obj: str, why: str) -> StoreError:
    name, where = pool.cfg.pool, f"{NS_ISSUER}/{obj}"
    return StoreError(
        f"the ACME account {where} in pool {name} is unusable ({why}); nothing was changed. Save it "
        f"('rados -p {name} -N {NS_ISSUER} get {obj} FILE'), then remove it ('rados -p {name} -N {NS_ISSUER} rm "
        f"{obj}') so that the next run registers a new account (a CA with External Account Binding needs a new binding)"
    )
