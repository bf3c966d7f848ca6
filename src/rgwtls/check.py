"""`rgwtls check`: a monitoring plugin, by the Nagios/Icinga convention.

One status line with perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
Let's Encrypt sends no expiry mail any more, and certificates are going to 45
days: this is what notices a silent cron failure before the outage.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

# Threshold lives in config, the lowest layer, which validates check.warning
# and check.critical at load; it is re-exported here for the check command.
from rgwtls.config import Threshold as Threshold

if TYPE_CHECKING:
    # Annotations only: `rgwtls check` imports this before it reads the pool.
    from rgwtls.status import Report

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")


def judge(report: Report, warning: Threshold, critical: Threshold, grace: float) -> tuple[int, str]:
    """The state and the one line (with perfdata) a monitoring system reads."""
    if report.error:
        return UNKNOWN, f"RGWTLS UNKNOWN - cannot read the pool: {report.error}"
    now = dt.datetime.now(dt.UTC)
    state = OK
    said: list[str] = []
    perf: list[str] = []

    def worse(level: int, text: str) -> None:
        nonlocal state
        state = max(state, level)
        said.append(text)

    for st in report.certificates:
        if st.pool is None:
            worse(CRITICAL, f"{st.name}: no certificate in the pool; run 'rgwtls issue' on the issuer")
            continue
        li = st.last_issue
        if li and not li.get("ok"):
            worse(
                CRITICAL,
                f"{st.name}: the last issue attempt ({li.get('at')} on {li.get('host')}) failed: {li.get('error')}",
            )
        if st.served_error:
            worse(CRITICAL, f"{st.name}: no TLS handshake at {st.served_error}")
        elif st.served is not None and not st.served.matches_pool:
            since = dt.datetime.fromisoformat(st.pool.issued_at) if st.pool.issued_at else now
            age = (now - since).total_seconds()
            if age > grace:
                worse(
                    CRITICAL,
                    f"{st.name}: the gateway serves serial {st.served.serial[:16]}, not the pool's "
                    f"generation {st.pool.generation} (issued {age / 3600:.1f} h ago); "
                    "check 'rgwtls deploy' on this host",
                )
            else:
                said.append(f"{st.name}: generation {st.pool.generation} not deployed yet (within the grace)")
        for text in st.persist_warnings:
            # Before it breaks a renewal: the certificate itself is still good.
            worse(WARNING, text)
        # What clients see counts: the served certificate, else the pool's.
        facts = st.served or st.pool
        where = "served" if st.served else "pool"
        if facts.days_left <= 0:
            worse(CRITICAL, f"{st.name}: the {where} certificate EXPIRED at {facts.not_after}")
        elif critical.reached(facts):
            worse(CRITICAL, f"{st.name}: the {where} certificate expires in {facts.days_left:.1f} days")
        elif warning.reached(facts):
            worse(WARNING, f"{st.name}: the {where} certificate expires in {facts.days_left:.1f} days")
        else:
            said.append(f"{st.name}: {where} certificate good for {facts.days_left:.1f} days")
        perf.append(
            f"'{st.name} days_left'={facts.days_left:.2f};{warning.days(facts):.2f};"
            f"{critical.days(facts):.2f};0;{facts.lifetime_days:.2f}"
        )
    # Problems first: a monitoring summary shows the start of the line.
    said.sort(key=lambda text: "good for" in text or "within the grace" in text)
    return state, f"RGWTLS {NAMES[state]} - {'; '.join(said)} | {' '.join(perf)}"
