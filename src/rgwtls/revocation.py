"""Whether a certificate may still be served: the pool's record, its CA's CRL, and the CA's renewal window.

Three places say a certificate must go, and each is read here once for
`check`, `status` and `issue`:

- the pool's record of revoked certificates (`rgwtls revoke` writes it);
- the CRL its CA publishes (rgwtls.crl): how a CA that revokes in bulk, a
  fallback CA without ARI included, says so;
- the CA's renewal window (ARI, RFC 9773): Let's Encrypt answers "renew now"
  for a certificate it revoked or is about to.

The first two make a certificate revoked (check's CRITICAL, issue's "due at
once"); an open window makes it due (check's WARNING). What cannot be
consulted (a CRL server down, a CA's ARI unreachable) is a note, never a
verdict: a monitoring check must not page because a CA's web server is slow.

Every network call has its own small total deadline and goes the way
`acme.proxy` says; the check's whole run is bounded above this.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from rgwtls import certs, crl, files
from rgwtls.config import AcmeConfig, Config, read_secret
from rgwtls.errors import RgwtlsError
from rgwtls.revoked import REASONS, RevokedList

if TYPE_CHECKING:
    from rgwtls.proxy import Route

# requests, rgwtls.http and rgwtls.proxy (which import requests) load only when
# a CRL or the CA's window must be fetched: `issue`'s hourly no-op asks this
# module about a certificate whose CRL is cached or that names none, and
# importing requests was a tenth of that run (bench/ab.py).

log = logging.getLogger(__name__)

ARI_TIMEOUT = 2.5  # the two requests (directory, renewalInfo) together, connect to last byte
ARI_MAX_BYTES = 2**16
ARI_CACHE_DIR = "ari"
# How long an ARI answer is kept: its Retry-After, within these bounds (RFC 9773 asks clients to honour it).
ARI_KEEP_MIN = dt.timedelta(minutes=1)
ARI_KEEP_MAX = dt.timedelta(hours=1)


@dataclass
class Seen:
    """What was found about one certificate: each field one line for a person, empty when there is nothing to say."""

    revoked: str = ""  # why it must not be served: the pool's record or its CA's CRL
    renew_now: str = ""  # the CA's renewal window has begun
    warnings: list[str] = field(default_factory=list)  # a CRL that does not verify, or is stale
    notes: list[str] = field(default_factory=list)  # what could not be asked


def acme_config(cfg: Config, directory: str) -> AcmeConfig | None:
    """The [acme] section as the CA at `directory` sees it, or None if it is none of ours."""
    if directory in (cfg.acme.directory, cfg.acme.staging_directory):
        return cfg.acme
    fb = next((f for f in cfg.acme.fallback if f.directory == directory), None)
    return cfg.acme.as_fallback(fb) if fb is not None else None


def way(acme: AcmeConfig, url: str, cfg_path: Path) -> Route:
    """The way to `url` that acme.proxy says; a password file this user cannot read is a ConfigError."""
    from rgwtls.proxy import route

    password = ""
    if acme.proxy_password_file:
        password = read_secret(acme.proxy_password_file, "acme.proxy_password_file", cfg_path)
    return route(acme.proxy, "acme.proxy", url, password)


def in_record(cert: x509.Certificate, record: RevokedList) -> str:
    """Why the pool's record forbids `cert`, or ""."""
    entry = record.find(cert)
    if entry is None:
        return ""
    how = "its key was revoked" if entry.serial != format(cert.serial_number, "x") else "it was revoked"
    at_ca = f", at the CA {entry.at_ca}" if entry.at_ca else ""
    reason = entry.reason if entry.reason in REASONS else "unspecified"
    return f"the pool records that {how} ({reason}, {entry.at}{at_ca})"


def in_crl(cert: x509.Certificate, chain: list[x509.Certificate], cfg: Config, acme: AcmeConfig, seen: Seen) -> None:
    """Ask the certificate's CRL; a listing sets `seen.revoked`, anything that stops the asking is a warning or note.

    Nothing raises out of here: a certificate or CRL cryptography cannot
    parse is a note too, so that neither a check nor an issue run fails on it.
    """
    try:
        points = crl.urls(cert)
        if not points:
            return  # a CA without CRLs (Pebble): nothing to ask
        issuer = crl.issuer_of(cert, chain)
        if issuer is None:
            seen.notes.append("its CRL was not asked: its issuing certificate is not in the chain")
            return
        listed = crl.lookup(cert, issuer, lambda: way(acme, points[0], cfg.path), Path(cfg.deploy.state_dir))
    except crl.CrlError as e:
        (seen.warnings if e.warn else seen.notes).append(str(e))
        return
    except (RgwtlsError, ValueError) as e:
        seen.notes.append(f"its CRL was not asked: {crl.shown(str(e))}")
        return
    if listed is not None and not seen.revoked:
        seen.revoked = listed.describe()


def ari_window(
    cert: x509.Certificate, directory: str, acme: AcmeConfig, cfg: Config, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime] | None:
    """The CA's suggested renewal window for `cert`, or None if its CA has no ARI; RgwtlsError if it cannot be asked.

    Two plain GETs (the directory, then renewalInfo), each bounded: no
    account, no JWS, and no ACME library to load in a check run every few
    minutes. The answer is kept until its Retry-After.
    """
    cert_id = certs.ari_cert_id(cert)
    if cert_id is None:
        return None
    keep = (
        Path(cfg.deploy.state_dir)
        / ARI_CACHE_DIR
        / f"{hashlib.sha256(f'{directory} {cert_id}'.encode()).hexdigest()[:32]}.json"
    )
    kept = _kept_window(keep, now)
    if kept is not None:
        return kept
    rt = way(acme, directory, cfg.path)
    by = time.monotonic() + ARI_TIMEOUT
    doc, _ = _get_json(directory, rt, acme, ARI_TIMEOUT)
    base = doc.get("renewalInfo") if isinstance(doc, dict) else None
    if not isinstance(base, str) or not base.startswith("https://"):
        return None
    answer, retry_after = _get_json(f"{base.rstrip('/')}/{cert_id}", rt, acme, by - time.monotonic())
    try:
        window = answer["suggestedWindow"]
        start = dt.datetime.fromisoformat(window["start"].replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(window["end"].replace("Z", "+00:00"))
    except (KeyError, TypeError, AttributeError, ValueError):
        raise RgwtlsError(f"the CA's renewal information at {crl.shown(base)} is not a suggested window") from None
    if start.tzinfo is None or end.tzinfo is None:
        raise RgwtlsError(f"the CA's renewal information at {crl.shown(base)} has a window without a time zone")
    until = now + min(max(dt.timedelta(seconds=retry_after or 0), ARI_KEEP_MIN), ARI_KEEP_MAX)
    _keep_window(keep, start, end, until)
    return start, end


def _get_json(url: str, rt: Route, acme: AcmeConfig, timeout: float) -> tuple[dict[str, Any], float | None]:
    if timeout <= 0:
        raise RgwtlsError(f"could not ask {crl.shown(url)}: {ARI_TIMEOUT:g}s for the renewal window were used up")
    from rgwtls import http, proxy  # only here: a kept window needs no HTTP stack

    try:
        resp = proxy.get(url, rt, timeout, ARI_MAX_BYTES, verify=acme.ca_bundle or True)
    except (http.TooLarge, proxy.NoAnswer) as e:
        raise RgwtlsError(f"could not ask {crl.shown(url)}: {crl.shown(str(e))}") from None
    if resp.status_code != 200:
        raise RgwtlsError(f"could not ask {crl.shown(url)}: HTTP {resp.status_code}")
    try:
        doc = resp.json()
    except ValueError:
        raise RgwtlsError(f"{crl.shown(url)} answered with something that is not JSON") from None
    if not isinstance(doc, dict):
        raise RgwtlsError(f"{crl.shown(url)} answered with JSON that is not an object")
    after = resp.headers.get("Retry-After", "")
    return doc, float(after) if after.isdigit() else None


def _kept_window(path: Path, now: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
    try:
        doc = json.loads(path.read_bytes())
        if dt.datetime.fromisoformat(doc["until"]) <= now:
            return None
        return dt.datetime.fromisoformat(doc["start"]), dt.datetime.fromisoformat(doc["end"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _keep_window(path: Path, start: dt.datetime, end: dt.datetime, until: dt.datetime) -> None:
    doc = {"start": start.isoformat(), "end": end.isoformat(), "until": until.isoformat()}
    try:
        path.parent.mkdir(mode=0o755, exist_ok=True)
        files.atomic_write(path, json.dumps(doc).encode(), files.Access(0o644, os.getuid(), os.getgid()))
    except (OSError, RgwtlsError) as e:
        log.debug("could not keep the renewal window in %s: %s", path, e)


def look(
    cfg: Config,
    cert: x509.Certificate,
    chain: list[x509.Certificate],
    record: RevokedList | None,
    directory: str,
    now: dt.datetime | None = None,
) -> Seen:
    """Everything that says `cert` must go: the pool's record (None: not read), its CRL, and its CA's window.

    `directory` is the CA that issued it, from the pool's set; "" when not
    known (a certificate that is not the pool's), and then no ARI is asked.
    The CRL and the window are asked at the same time, so a slow CRL server
    and a slow CA cost the check one deadline, not two.
    """
    now = now or dt.datetime.now(dt.UTC)
    seen = Seen()
    if record is not None:
        seen.revoked = in_record(cert, record)
    acme = acme_config(cfg, directory) if directory else cfg.acme
    asks_ari = bool(directory) and acme is not None and cert.not_valid_after_utc > now
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="crl") as pool:
        crl_done = pool.submit(in_crl, cert, chain, cfg, acme or cfg.acme, seen)
        ari_said = _ask_window(cert, directory, acme, cfg, now) if asks_ari and acme is not None else ""
        crl_done.result()
    if ari_said.startswith("its renewal window"):
        seen.renew_now = ari_said
    elif ari_said:
        seen.notes.append(ari_said)
    return seen


def _ask_window(cert: x509.Certificate, directory: str, acme: AcmeConfig, cfg: Config, now: dt.datetime) -> str:
    """What the CA's window says for `check`: begun, or why it was not asked; "" when it has not begun."""
    try:
        window = ari_window(cert, directory, acme, cfg, now)
    except RgwtlsError as e:
        return f"the CA's renewal window (ARI) was not asked: {e}"
    if window is not None and window[0] <= now:
        return f"its renewal window (ARI) began at {window[0]:%Y-%m-%d %H:%M} UTC"
    return ""


def due_at_once(cfg: Config, record: RevokedList | None, cert_pem: str, chain_pem: str) -> str:
    """For `issue`: why a stored certificate must be replaced now, whatever the retry schedule says; "" if not.

    The pool's record and the CRL; the renewal window is the ACME session's
    own question. Nothing here fails the run: what cannot be asked is logged.
    """
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    chain = x509.load_pem_x509_certificates(chain_pem.encode()) if "CERTIFICATE" in chain_pem else []
    seen = Seen()
    if record is not None:
        seen.revoked = in_record(cert, record)
    if not seen.revoked:
        in_crl(cert, chain, cfg, cfg.acme, seen)
    for text in seen.warnings:
        log.warning("%s", text)
    for text in seen.notes:
        log.info("%s", text)
    return f"revoked: {seen.revoked}" if seen.revoked else ""
