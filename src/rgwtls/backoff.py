"""This host's backoff after a set failed its restart or check here: cron does not restart radosgw in a loop.

deploy reads it before it touches anything (`wait_unless`), records a
failure in it (`failed`, whose text ends deploy's line) and clears it once
the set is served.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from pathlib import Path

from rgwtls import files
from rgwtls.config import Config
from rgwtls.errors import DeployDeferred, Interrupted, RgwtlsError
from rgwtls.log import notice
from rgwtls.store import CertSet

# The logger of the deploy it belongs to: its lines are deploy's.
log = logging.getLogger("rgwtls.deploy")

BACKOFF_FIRST = 300.0
BACKOFF_MAX = 3600.0


class Backoff:
    """This host's record of a set that failed its restart or check here, so that cron does not loop on it.

    Without it, a wrong `deploy.verify_endpoint` restarts radosgw twice on
    every cron run, for ever. The record names what failed (generation,
    fingerprint) under which configuration (the digest of the config file's
    bytes): a new set or a changed config tries at once, as does --force.
    The wait doubles from 5 minutes to an hour. It is written whole and
    renamed into place, so a killed run leaves the old record or the new one.
    """

    def __init__(self, cfg: Config, new: CertSet, fingerprint: str) -> None:
        self.path = Path(cfg.deploy.state_dir) / f"{new.name}.deploy-failed"
        self.key = {"generation": new.generation, "fingerprint": fingerprint, "config": _config_digest(cfg.path)}
        self.name, self.generation = new.name, new.generation

    def _record(self) -> tuple[int, float, str] | None:
        """Failures in a row, next attempt (epoch seconds) and last error of this same set under this config."""
        import json

        raw = files.read(self.path)
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
        except ValueError:
            return None  # a record we cannot read holds nothing back: try
        if not isinstance(doc, dict) or any(doc.get(k) != v for k, v in self.key.items()):
            return None
        failures, due, error = doc.get("failures"), doc.get("next_attempt"), doc.get("error")
        if type(failures) is not int or not isinstance(due, int | float):
            return None
        return failures, float(due), str(error)

    def wait_unless(self, force: bool) -> None:
        """DeployDeferred if this set failed here and its next attempt is still to come."""
        record = self._record()
        if record is None:
            return
        failures, due, error = record
        if force:
            notice(log, "%s generation %d failed here before; trying again now (--force)", self.name, self.generation)
            return
        # The record outlives the process, so its time is the wall clock's; a clock stepped back
        # since (NTP, an operator) must not stretch the wait past the backoff it was set with.
        if not 0 < due - time.time() <= backoff_delay(failures):
            return
        raise DeployDeferred(
            f"{self.name} generation {self.generation} failed on this host {failures} time(s) in a row "
            f"(last: {error}); nothing changed. The next attempt is {_when(due)}, "
            "or now with rgwtls deploy --force; a new set or a changed config tries at once"
        )

    def failed(self, cause: RgwtlsError) -> str:
        """Record a failed attempt; the end of its line, saying when the next one is.

        A signal is not the set's fault: the next run tries at once.
        """
        if isinstance(cause, Interrupted):
            return ""
        import json

        record = self._record()
        failures = 1 + (record[0] if record is not None else 0)
        due = time.time() + backoff_delay(failures)
        doc = {**self.key, "failures": failures, "next_attempt": round(due, 3), "error": str(cause)[:300]}
        try:
            access = files.Access(0o600, os.getuid(), os.getgid())
            files.atomic_write(self.path, json.dumps(doc).encode(), access)
        except RgwtlsError as e:
            log.warning("could not record the failure in %s, so the next run tries again: %s", self.path, e)
            return ""
        return (
            f"; failed {failures} time(s) in a row on this host: the next attempt is {_when(due)}, "
            "or now with rgwtls deploy --force"
        )

    def clear(self) -> None:
        files.remove(self.path)


def backoff_delay(failures: int) -> float:
    """5 minutes after the first failure, doubling, at most an hour."""
    return min(BACKOFF_FIRST * float(2 ** min(failures - 1, 16)), BACKOFF_MAX)


def _config_digest(path: Path) -> str:
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def _when(epoch: float) -> str:
    left = max(0, round((epoch - time.time()) / 60))
    at = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return f"after {at:%Y-%m-%d %H:%M}Z (in {left} min)"
