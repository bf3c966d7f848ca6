"""What an earlier run left on this host: a set the pool could not take, an order it finalized but never kept.

Looked at before anything is decided: a certificate the CA already issued
is stored, or fetched and stored, instead of ordering again. What no longer
fits the configuration (its names, its CA, its profile) or has expired is
dropped with one warning, and the run orders as usual.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Collection
from pathlib import Path

from rgwtls import certs
from rgwtls.config import CertificateConfig, Config
from rgwtls.errors import RgwtlsError
from rgwtls.issue import clock
from rgwtls.issue.kept import ORDER_FORMAT, discard, keep, order_path, store
from rgwtls.issue.order import CAs, build_set
from rgwtls.log import notice
from rgwtls.store import Basis, CertSet, IssuerLock, Pool
from rgwtls.validate import check_issued

# The name the log format shows: a line of `issue` reads as it always has, whichever room wrote it.
log = logging.getLogger("rgwtls.issue")


def read_kept(cert: CertificateConfig, path: Path) -> CertSet | None:
    """The set an earlier run issued but could not store, if it left one; an unreadable one is dropped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("%s: cannot read the certificate kept in %s (%s); ordering as usual", cert.name, path, e.strerror)
        return None
    try:
        return CertSet.from_bytes(data, str(path))
    except (RgwtlsError, ValueError) as e:
        log.warning("%s: dropping %s: %s", cert.name, path, e)
        discard(path)
        return None


def store_earlier(
    cfg: Config,
    pool: Pool,
    lock: IssuerLock,
    cert: CertificateConfig,
    basis: Basis,
    staging: bool,
    cas: CAs,
    kept: CertSet,
    path: Path,
) -> bool:
    """Store the set an earlier run obtained but did not store, instead of ordering again; True if it was stored."""
    try:
        info = certs.cert_info(kept.cert_pem)
        matches = certs.key_matches_cert(kept.key_pem, kept.cert_pem)
    except (RgwtlsError, ValueError) as e:
        log.warning("%s: dropping %s: %s", cert.name, path, e)
        discard(path)
        return False
    until = info.not_after.strftime("%Y-%m-%d %H:%M UTC")
    now = clock.now()
    current = basis.current
    stale = None
    if not matches:
        stale = "its key does not match its certificate"
    elif info.names != set(cert.domains) or kept.name != cert.name:
        stale = "its names are no longer the configured ones"
    elif (issuer := cas.find(kept.directory)) is None:
        stale = f"a CA no longer configured issued it ({kept.directory})"
    elif issuer.cert_for(cert).wanted_profile(issuer.cfg.acme) not in ("", kept.profile):
        stale = f"its profile is no longer the configured one ({kept.profile or 'none recorded'})"
    elif info.not_after <= now:
        stale = f"it expired at {until}"
    elif current is not None:
        stored = certs.cert_info(current.cert_pem)
        if stored.fingerprint == info.fingerprint:
            # The pool got it before the run was stopped; only the legacy objects may be missing.
            if cert.name == cfg.certificates[0].name:
                pool.write_legacy(current, staging)
            log.info("%s: the certificate kept in %s is already in the pool", cert.name, path)
            discard(path)
            return False
        if stored.not_before >= info.not_before:
            stale = "the pool holds a newer one"
    if stale is not None:
        log.warning("%s: dropping the certificate kept in %s (valid until %s): %s", cert.name, path, until, stale)
        discard(path)
        return False
    new = dataclasses.replace(kept, generation=basis.next_generation)
    store(cfg, pool, lock, new, staging, path)
    pool.announce(new.name, new.generation, staging)
    notice(
        log,
        "%s: stored generation %d in pool %s%s, the certificate an earlier run issued and kept in %s "
        "(valid until %s); nothing ordered",
        cert.name,
        new.generation,
        cfg.ceph.pool,
        " (staging)" if staging else "",
        path,
        until,
    )
    return True


def collect_order(cfg: Config, cas: CAs, cert: CertificateConfig, kept: Path, generation: int) -> CertSet | None:
    """The certificate of an order an earlier run finalized but never kept, fetched from the CA and kept now.

    None if there is no such order, or it gives no certificate any more:
    then the note goes, and the run orders as usual.
    """
    path = order_path(kept)
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("%s: dropping the order noted in %s (%s); ordering as usual", cert.name, path, e)
        discard(path)
        return None
    if kept.exists():
        log.info("%s: the set of the order noted in %s is kept in %s already", cert.name, path, kept)
        discard(path)
        return None
    stale = _stale_order(doc, cas.directories)
    if stale is not None:
        log.warning("%s: dropping the order noted in %s: %s", cert.name, path, stale)
        discard(path)
        return None
    order_url = doc["order"]
    log.info("%s: an earlier run finalized order %s and was stopped; fetching its certificate", cert.name, order_url)
    ca = cas.find(doc["directory"]) or cas.primary
    fullchain = cas.session(ca).registered().collect(order_url, time.monotonic() + cfg.acme.order_timeout)
    if fullchain is None:
        # The earlier run said why it failed; this one orders anew.
        log.info("%s: order %s gives no certificate; ordering as usual", cert.name, order_url)
        discard(path)
        return None
    try:
        key = certs.load_private_key(doc["key_pem"])
        new = build_set(cert, key, fullchain, generation, ca.directory, doc["profile"])
        check_issued(new, cfg, path)
    except (RgwtlsError, ValueError) as e:
        log.warning("%s: dropping the order noted in %s: %s; ordering as usual", cert.name, path, e)
        discard(path)
        return None
    not_kept = keep(kept, new)
    if not_kept is None:
        discard(path)
    else:
        log.info("%s: cannot keep the fetched set in %s (%s); storing it without that net", cert.name, kept, not_kept)
    return new


def _stale_order(doc: object, directories: Collection[str]) -> str | None:
    """Why a noted order must not be fetched, or None; its certificate is judged like any kept set once fetched."""
    fields = {"format": str, "directory": str, "order": str, "profile": str, "key_pem": str}
    if not isinstance(doc, dict) or any(not isinstance(doc.get(k), t) for k, t in fields.items()):
        return "it is not an order note of this rgwtls"
    if doc["format"] != ORDER_FORMAT:
        return f"unknown format {doc['format']!r}"
    if doc["directory"] not in directories:
        # Its URL is a CA's this run has no account with.
        return f"it was placed with another CA ({doc['directory']})"
    return None
