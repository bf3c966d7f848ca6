"""A certificate's last-issue record and the retry schedule of a failing renewal.

The record lies beside the set in the pool, where every gateway's `check`
reads it: the last attempt, its success or failure, what it worked around,
and when the next attempt is due. The schedule is a wall time, because
issuers on other hosts read it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
from pathlib import Path
from typing import Any

from rgwtls import certs
from rgwtls.config import CertificateConfig, Config
from rgwtls.errors import Interrupted, RgwtlsError
from rgwtls.issue import clock
from rgwtls.store import Pool

# The name the log format shows: a line of `issue` reads as it always has, whichever room wrote it.
log = logging.getLogger("rgwtls.issue")


# The retry schedule of a failing renewal: 1 hour after the first failure,
# doubling to at most 6 hours, and never more than a quarter of the time the
# current certificate has left, so that at least four attempts fit before it
# expires. A run up to RETRY_EARLY before its time counts as on time: cron
# starts each run at the same minute, a little before the last one's end plus
# the wait.
RETRY_FIRST = dt.timedelta(hours=1)
RETRY_MAX = dt.timedelta(hours=6)
RETRY_MIN = dt.timedelta(minutes=5)
RETRY_EARLY = dt.timedelta(minutes=5)


def read_attempt(pool: Pool, name: str, staging: bool) -> dict[str, Any]:
    """The certificate's last-issue record; {} if there is none or it is unreadable (it is rewritten whole)."""
    try:
        raw = pool.read(pool.set_namespace(staging), f"{name}/last-issue")
        doc = json.loads(raw) if raw else {}
    except Interrupted:
        raise
    except (RgwtlsError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def next_attempt(
    pool: Pool, cert: CertificateConfig, staging: bool, attempt: dict[str, Any], started: dt.datetime
) -> tuple[int, dt.datetime]:
    """Failures in a row, counting this one, and when the next attempt is due."""
    failures = attempt.get("failures") if not attempt.get("ok", True) else 0
    failures = (failures if type(failures) is int and failures > 0 else 0) + 1
    wait = retry_wait(failures)
    try:
        current = pool.read_set(cert.name, staging)
    except RgwtlsError:
        current = None
    if current is not None:
        left = certs.cert_info(current.cert_pem).not_after - clock.now()
        wait = min(wait, max(left / 4, RETRY_MIN))
    return failures, started + wait


def retry_wait(failures: int) -> dt.timedelta:
    return min(RETRY_FIRST * (1 << min(failures - 1, 8)), RETRY_MAX)


def config_digest(cfg: Config) -> str:
    """What the retry schedule compares: a changed configuration (a fix) tries at once."""
    import hashlib

    try:
        return hashlib.sha256(Path(cfg.path).read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


def held_back(attempt: dict[str, Any], config: str) -> str | None:
    """Why the retry schedule holds this renewal back now, or None if it may go."""
    if attempt.get("ok", True) or not isinstance(attempt.get("next_attempt"), str):
        return None
    if attempt.get("config") != config:
        return None
    try:
        due = dt.datetime.fromisoformat(attempt["next_attempt"])
    except ValueError:
        return None
    failures = attempt.get("failures", 1)
    left = due - clock.now() if due.tzinfo is not None else dt.timedelta(0)
    # A wall time (issuers on other hosts read it): one further away than its schedule sets means a clock went back.
    if left <= RETRY_EARLY or left > retry_wait(failures if type(failures) is int and failures > 0 else 1):
        return None
    return (
        f"its last {failures} attempt(s) failed; the next is due after {due:%Y-%m-%d %H:%M} UTC "
        "('rgwtls issue --force' tries now)"
    )


def record_attempt(
    pool: Pool,
    name: str,
    staging: bool,
    error: str | None,
    warning: str | None = None,
    retry: tuple[int, dt.datetime] | None = None,
    cfg: Config | None = None,
) -> None:
    """Keep the last attempt, success and failure of `issue` beside the set, what it worked around, and the retry."""
    ns = pool.set_namespace(staging)
    obj = f"{name}/last-issue"
    now = clock.now().isoformat(timespec="seconds")
    doc = read_attempt(pool, name, staging)
    doc.update(at=now, host=socket.gethostname(), ok=error is None, error=error, warning=warning)
    doc["last_success" if error is None else "last_failure"] = now
    failures, next_attempt = retry if retry is not None else (0, None)
    doc.update(failures=failures, next_attempt=next_attempt.isoformat(timespec="seconds") if next_attempt else None)
    doc["config"] = config_digest(cfg) if cfg is not None and retry is not None else None
    try:
        pool.write(ns, obj, json.dumps(doc).encode())
    except Interrupted:
        raise
    except RgwtlsError as e:
        log.warning("could not record this attempt in the pool: %s", e)
