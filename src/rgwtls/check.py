"""`rgwtls check`: a monitoring plugin, by the Nagios/Icinga convention.

One status line with perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
Let's Encrypt sends no expiry mail any more, and certificates are going to 45
days: this is what notices a silent cron failure before the outage.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rgwtls.errors import ConfigError

if TYPE_CHECKING:
    # Annotations only: config validation parses thresholds on every run,
    # and must not pull in the status machinery (and cryptography) for it.
    from rgwtls.status import CertFacts, Report

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")


@dataclass(frozen=True)
class Threshold:
    """Days left ("14") or a fraction of the lifetime left ("20%")."""

    value: float
    fraction: bool

    @classmethod
    def parse(cls, text: str, what: str) -> Threshold:
        raw = text.strip()
        try:
            if raw.endswith("%"):
                return cls(float(raw[:-1]) / 100, True)
            return cls(float(raw), False)
        except ValueError:
            raise ConfigError(f"{what}: {text!r} is neither days (14) nor a share of the lifetime (20%)") from None

    def days(self, facts: CertFacts) -> float:
        return self.value * facts.lifetime_days if self.fraction else self.value

    def reached(self, facts: CertFacts) -> bool:
        return facts.days_left <= self.days(facts)


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
