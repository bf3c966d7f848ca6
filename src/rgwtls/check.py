"""`rgwtls check`: a monitoring plugin, by the Nagios/Icinga convention.

One status line with perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
Let's Encrypt sends no expiry mail any more, and certificates are going to 45
days: this is what notices a silent cron failure before the outage.

A fleet may serve many certificates, and a monitoring summary (and a pager's
SMS) shows only the start of the first line. Up to MAX_NAMED certificates,
that line says everything, as it always did. Beyond, it follows the Nagios
plugin guidelines' long output: the first line names the worst MAX_NAMED
certificates, each with a short reason, says how many more there are, and
carries only the counts as perfdata (FIRST_LINE bounds it); every
certificate's full detail follows, one text a line, and every certificate's
perfdata after a `|` on the last of those lines, one a line.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

# Threshold lives in config, the lowest layer, which validates check.warning
# and check.critical at load; it is re-exported here for the check command.
from rgwtls.config import Threshold as Threshold
from rgwtls.scrub import LINE, clean

if TYPE_CHECKING:
    # Annotations only: `rgwtls check` imports this before it reads the pool.
    from rgwtls.status import Report, Status

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
MAX_NAMED = 3  # certificates named on the first line
FIRST_LINE = 200  # characters: beyond, the first line of many certificates names fewer of them
# The plugin's whole answer, whatever ceph.timeout says: check_nrpe gives up at
# 10 s and pages "Socket timeout" as a CRITICAL; this leaves it 2 s to spare.
TIMEOUT = 8.0

T = TypeVar("T")


def within(seconds: float, work: Callable[[], T]) -> tuple[bool, T | None]:
    """(True, what `work` returned), or (False, None) if it had not ended after `seconds`.

    librados cannot be interrupted: a stalled OSD or mon holds its call past
    every timeout but its own. So `work` runs in a daemon thread and only the
    wait for it is bounded; a caller that gives up must leave the process with
    os._exit, as the thread may still hold librados (and its shutdown) hostage.
    An exception of `work` is raised here.
    """
    done: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            done.append(work())
        except BaseException as e:  # handed to the caller as it is
            failed.append(e)

    worker = threading.Thread(target=run, name="check", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        return False, None
    if failed:
        raise failed[0]
    return True, done[0]


def since_start() -> float:
    """Seconds since this process started (Linux), 0 if unknown: the monitoring counts from the exec, not main()."""
    try:
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - int(after_name[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def ceph_timeout(configured: float, seconds: float) -> float:
    """librados' own timeout within the plugin's: a stalled cluster then says which part stalled, in time.

    Half of the plugin's time: connecting and the first read each wait at most
    this long, and the gateway's handshake comes after them.
    """
    return max(1.0, min(configured, seconds / 2))


@dataclass
class Verdict:
    """One certificate's judgement: its texts with their levels, its state, its perfdata, how soon it ends."""

    name: str
    texts: list[tuple[int, str, str]] = field(default_factory=list)  # level, the full text, a short reason
    perf: str = ""
    days_left: float = -math.inf  # no certificate at all sorts first

    @property
    def state(self) -> int:
        return max((level for level, _, _ in self.texts), default=OK)

    def summary(self) -> str:
        """The name and the reasons of its worst level: what the first line of many certificates says of it."""
        return f"{self.name}: " + ", ".join(short for level, _, short in self.texts if level == self.state)


def _verdict(st: Status, warning: Threshold, critical: Threshold, grace: float, now: dt.datetime) -> Verdict:
    v = Verdict(st.name)
    say = v.texts.append
    if st.pool is None:
        say((CRITICAL, f"{st.name}: no certificate in the pool; run 'rgwtls issue' on the issuer", "not in the pool"))
        return v
    _revocation(st, say)
    li = st.last_issue
    if li and not li.get("ok"):
        say(
            (
                CRITICAL,
                f"{st.name}: the last issue attempt ({li.get('at')} on {li.get('host')}) failed: {li.get('error')}",
                "the last issue failed",
            )
        )
    if st.served_error:
        say((CRITICAL, f"{st.name}: no TLS handshake at {st.served_error}", "no TLS handshake"))
    elif st.served is not None and not st.served.matches_pool:
        since = dt.datetime.fromisoformat(st.pool.issued_at) if st.pool.issued_at else now
        age = (now - since).total_seconds()
        if age > grace:
            say(
                (
                    CRITICAL,
                    f"{st.name}: the gateway serves serial {st.served.serial[:16]}, not the pool's "
                    f"generation {st.pool.generation} (issued {age / 3600:.1f} h ago); "
                    "check 'rgwtls deploy' on this host",
                    "not deployed",
                )
            )
        else:
            say((OK, f"{st.name}: generation {st.pool.generation} not deployed yet (within the grace)", "deploying"))
    for text in st.persist_warnings:
        # Before it breaks a renewal: the certificate itself is still good.
        say((WARNING, text, "dns-persist-01 record"))
    # What clients see counts: the served certificate, else the pool's.
    facts = st.served or st.pool
    where = "served" if st.served else "pool"
    days = f"{facts.days_left:.1f} days"
    expires = f"expires in {days}"
    if facts.days_left <= 0:
        say((CRITICAL, f"{st.name}: the {where} certificate EXPIRED at {facts.not_after}", "EXPIRED"))
    elif critical.reached(facts):
        say((CRITICAL, f"{st.name}: the {where} certificate expires in {facts.days_left:.1f} days", expires))
    elif warning.reached(facts):
        say((WARNING, f"{st.name}: the {where} certificate expires in {facts.days_left:.1f} days", expires))
    else:
        say((OK, f"{st.name}: {where} certificate good for {facts.days_left:.1f} days", f"good for {days}"))
    v.days_left = facts.days_left
    v.perf = (
        f"'{st.name} days_left'={facts.days_left:.2f};{warning.days(facts):.2f};"
        f"{critical.days(facts):.2f};0;{facts.lifetime_days:.2f}"
    )
    return v


def _revocation(st: Status, say: Callable[[tuple[int, str, str]], None]) -> None:
    """Revoked is CRITICAL and said first; the CA's window begun is a WARNING; a CRL that could not be asked is a note.

    A CRL server that is down or slow says nothing about the certificate, so
    it never pages; one that answers with a CRL that does not verify, or is
    stale, is a WARNING: something between us and the CA is wrong.
    """
    where = "served" if st.served else "pool"
    if st.revoked:
        say(
            (
                CRITICAL,
                f"{st.name}: the {where} certificate is revoked: {st.revoked}; the issuer replaces it at its next "
                "'rgwtls issue' (run it now to hurry), then 'rgwtls deploy' here",
                "revoked",
            )
        )
    if st.renew_now:
        say(
            (
                WARNING,
                f"{st.name}: the CA asks for renewal now: {st.renew_now}; the issuer renews at its next 'rgwtls issue'",
                "the CA asks for renewal",
            )
        )
    for text in st.revocation_warnings:
        say((WARNING, f"{st.name}: {text}", "revocation unchecked"))
    for text in st.revocation_notes:
        say((OK, f"{st.name}: {text}", "CRL not asked"))


def _problems_first(texts: list[tuple[int, str, str]]) -> list[str]:
    # A stable sort: the problems keep their order, the good news follows.
    return [text for _, text, _ in sorted(texts, key=lambda t: t[0] == OK)]


def judge(report: Report, warning: Threshold, critical: Threshold, grace: float) -> tuple[int, str]:
    """The state and what a monitoring system reads: one line with perfdata, and long output for many certificates.

    Its texts quote the pool (the last issue's error) and the CA: cleaned as every other line, newlines kept.
    """
    state, text = _judge(report, warning, critical, grace)
    return state, clean(text, 16 * LINE, newlines=True)


def _judge(report: Report, warning: Threshold, critical: Threshold, grace: float) -> tuple[int, str]:
    if report.error:
        return UNKNOWN, f"RGWTLS UNKNOWN - cannot read the pool: {report.error}"
    now = dt.datetime.now(dt.UTC)
    verdicts = [_verdict(st, warning, critical, grace, now) for st in report.certificates]
    state = max((v.state for v in verdicts), default=OK)
    if len(verdicts) <= MAX_NAMED:
        said = _problems_first([t for v in verdicts for t in v.texts])
        perf = " ".join(v.perf for v in verdicts if v.perf)
        return state, f"RGWTLS {NAMES[state]} - {'; '.join(said)} | {perf}"
    # The worst first: by state, then the soonest to end, then by name for a stable order.
    ranked = sorted(verdicts, key=lambda v: (-v.state, v.days_left, v.name))
    counts = {level: sum(v.state == level for v in verdicts) for level in (CRITICAL, WARNING)}
    head_perf = f"certificates={len(verdicts)};;;0 critical={counts[CRITICAL]};;;0 warning={counts[WARNING]};;;0"
    for n in range(MAX_NAMED, 0, -1):  # long names: fewer of them, never a long first line
        named = "; ".join(v.summary() for v in ranked[:n])
        first = f"RGWTLS {NAMES[state]} - {named}; and {len(ranked) - n} more | {head_perf}"
        if len(first) < FIRST_LINE:
            break
    lines = [first, *_problems_first([t for v in ranked for t in v.texts])]
    every_perf = [v.perf for v in ranked if v.perf]
    if every_perf:
        lines[-1] += f" | {every_perf[0]}"
        lines += every_perf[1:]
    return state, "\n".join(lines)
