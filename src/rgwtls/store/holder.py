"""Who holds a lock, and whether it still runs: the record written beside every lock rgwtls takes.

Pure: /proc and the host name, no librados. A holder on this host that is
certainly gone (`Holder.dead_here`) is taken over at once instead of waited
out; one on another host is waited out until its lock expires.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from rgwtls.scrub import clean

# Set by whoever knows which service of the host this process acts for (fleet: the
# gateway's endpoint), so that a slot's holder record names the gateway, not only its host.
HOLDER_LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("HOLDER_LABEL", default="")


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: enough for a later run on the same host to know that the holder died.

    Host and pid alone would take a reused pid for the holder; the boot id
    and the process's start time (clock ticks after boot) make a pair that
    no later process repeats. The cookie ties the record to the lock it
    describes.
    """

    host: str
    boot_id: str
    pid: int
    start: int
    since: str
    cookie: str
    # Which of the host's services took it (a gateway's verify_endpoint), for rollout; "" from older records.
    label: str = ""

    @classmethod
    def me(cls, cookie: str) -> Holder:
        pid = os.getpid()
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return cls(this_host(), _boot_id(), pid, _process_start(pid) or 0, since, cookie, HOLDER_LABEL.get())

    def to_bytes(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Holder | None:
        """The record, or None if absent or written by an older rgwtls (plain text)."""
        if not raw:
            return None
        try:
            doc = json.loads(raw)
            return cls(
                str(doc["host"]),
                str(doc["boot_id"]),
                int(doc["pid"]),
                int(doc["start"]),
                str(doc["since"]),
                str(doc["cookie"]),
                str(doc.get("label", "")),
            )
        except (ValueError, KeyError, TypeError, OverflowError):  # OverflowError: a pid of Infinity
            return None

    def describe(self) -> str:
        """For a line: a holder record is written by whoever has the deploy caps, so its text is cleaned."""
        return f"{clean(self.host, 200)} pid {self.pid} since {clean(self.since, 64)}"

    def dead_here(self) -> bool:
        """True only if the holder ran on this host and is certainly gone; another host's processes we cannot see."""
        if self.host != this_host() or not self.boot_id or not self.start:
            return False
        mine = _boot_id()
        if not mine:
            return False
        if mine != self.boot_id:
            return True  # this host rebooted since: every process of then is gone
        return _process_start(self.pid) != self.start


def this_host() -> str:
    """The host a holder record names: its node name."""
    return os.uname().nodename


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat, the start time; None if no such process is running (a zombie is gone too)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None
