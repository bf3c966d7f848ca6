"""What this host keeps of a certificate the CA issued until the pool has it: the set, and before it the order.

A certificate the CA issued is never thrown away. From the CSR on, the
order and the new key are noted in a private file; once the certificate is
downloaded, the whole set is kept in another, written before the pool is
asked to store it. Each goes once the pool has the set; a run that was
stopped leaves them for the next run, which stores the set or fetches the
order's certificate instead of ordering again (issue/earlier.py).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from rgwtls import certs
from rgwtls.config import CertificateConfig, Config
from rgwtls.errors import Fenced, Interrupted, LockHeld, RgwtlsError, StoreError, describe
from rgwtls.store import CertSet, IssuerLock, Pool

# The name the log format shows: a line of `issue` reads as it always has, whichever room wrote it.
log = logging.getLogger("rgwtls.issue")


def kept_path(cfg: Config, name: str, staging: bool) -> Path:
    return Path(cfg.deploy.state_dir) / "issued" / f"{name}{'.staging' if staging else ''}.json"


def store(cfg: Config, pool: Pool, lock: IssuerLock, new: CertSet, staging: bool, kept: Path) -> None:
    """Store the set; if that fails, it stays in a private file on this host, and the error says so.

    The file is written first, so that a kill while storing loses nothing
    either; it goes once the pool has the set.
    """
    not_kept = keep(kept, new)
    if not_kept is None:
        discard(order_path(kept))  # the kept set says more than the order it came from
    else:
        log.info("%s: cannot keep the new set in %s (%s); storing it without that safety net", new.name, kept, not_kept)
    legacy = new.name == cfg.certificates[0].name
    ns = pool.set_namespace(staging)
    try:
        lock.confirm()
        pool.write_set(new, staging, legacy, lock.lease(ns, f"{new.name}/current"))
    except Exception as e:
        raise _issued_but_not_stored(new, kept, not_kept, e) from None
    discard(kept)
    discard(order_path(kept))


def _issued_but_not_stored(new: CertSet, kept: Path, not_kept: str | None, e: Exception) -> RgwtlsError:
    """One line saying that a certificate WAS issued, where it is, and what the next run does with it."""
    until = certs.cert_info(new.cert_pem).not_after.strftime("%Y-%m-%d %H:%M UTC")
    said = describe(e)
    if not_kept is None:
        fate = f"it is kept in {kept} and the next run stores it instead of ordering again"
    else:
        fate = f"keeping it in {kept} failed too ({not_kept}), so it is lost; the next run orders a new one"
    text = f"{new.name}: a certificate was issued (valid until {until}) but not stored: {said}; {fate}"
    if isinstance(e, Interrupted):
        stopped = Interrupted(e.signame)
        stopped.args = (text,)
        return stopped
    if isinstance(e, LockHeld):
        return Fenced(text) if isinstance(e, Fenced) else LockHeld(text)  # still a lost lock: nothing to wait after
    return StoreError(text)


def keep(path: Path, new: CertSet) -> str | None:
    """Write the set to its private file; None if it is kept, else why not."""
    return write_private(path, new.to_bytes())


def write_private(path: Path, data: bytes) -> str | None:
    """Write a file that holds a private key, atomically; None if it is written, else why not.

    The file is created 0600 and exclusive, never widened, written whole,
    fsynced, then renamed into place, in a 0700 directory.
    """
    from rgwtls import files

    try:
        os.makedirs(path.parent.parent, mode=0o700, exist_ok=True)
        os.makedirs(path.parent, mode=0o700, exist_ok=True)
    except OSError as e:
        return f"{e.strerror or e}: {e.filename or path}"
    try:
        files.atomic_write(path, data, files.Access(0o600, os.getuid(), os.getgid()))
    except RgwtlsError as e:
        return str(e)
    return None


ORDER_FORMAT = "rgwtls-order/1"


def order_path(kept: Path) -> Path:
    """Beside the kept set: NAME[.staging].order."""
    return kept.with_suffix(".order")


def note_order(
    path: Path, cert: CertificateConfig, directory: str, order_url: str, key: certs.PrivateKey, profile: str
) -> None:
    """Note the order and the certificate's new key before the CSR goes, so that a stopped run loses nothing.

    Between the CSR and the kept set, the CA may issue a certificate this run
    never downloads (SIGKILL, a power cut, a CA that stops answering): the
    next run fetches it from the order instead of ordering again.
    """
    doc = {
        "format": ORDER_FORMAT,
        "directory": directory,
        "order": order_url,
        "profile": profile,
        "key_pem": certs.private_pem(key),
    }
    not_noted = write_private(path, json.dumps(doc).encode())
    if not_noted is not None:
        log.info("%s: cannot note the order in %s (%s); finalizing without that safety net", cert.name, path, not_noted)


def discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        log.warning("could not remove %s (%s); the next run removes it", path, e.strerror)
