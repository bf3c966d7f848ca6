"""[check]: the monitoring plugin's thresholds and grace."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from rgwtls.config.values import Where
from rgwtls.errors import ConfigError


class _Lifetime(Protocol):
    """What a threshold is judged against (status's CertFacts), without importing it: config is the lowest layer."""

    @property
    def lifetime_days(self) -> float: ...

    @property
    def days_left(self) -> float: ...


@dataclass(frozen=True)
class Threshold:
    """Days left ("14") or a share of the lifetime left ("20%"), for check.warning and check.critical."""

    value: float
    fraction: bool

    @classmethod
    def parse(cls, text: str, what: str) -> Threshold:
        raw = text.strip()
        try:
            fraction = raw.endswith("%")
            number = float(raw[:-1] if fraction else raw)
        except ValueError:
            raise ConfigError(f"{what}: {text!r} is neither days (14) nor a share of the lifetime (20%)") from None
        if fraction and not 0 <= number <= 100:
            raise ConfigError(f"{what}: {text!r} is not a share of the lifetime between 0% and 100%")
        if not fraction and not (math.isfinite(number) and number >= 0):
            raise ConfigError(f"{what}: {text!r} is not a number of days of 0 or more")
        return cls(number / 100 if fraction else number, fraction)

    def days(self, facts: _Lifetime) -> float:
        return self.value * facts.lifetime_days if self.fraction else self.value

    def reached(self, facts: _Lifetime) -> bool:
        return facts.days_left <= self.days(facts)


@dataclass(frozen=True)
class CheckConfig:
    """[check]: the monitoring plugin's defaults; the command line overrides them."""

    # Days left ("14") or a share of the lifetime left ("20%"): renewal is
    # due at a third left, so a warning at a fifth means renewal is overdue.
    warning: str = "20%"
    critical: str = "10%"
    # How long the served certificate may differ from the pool's before
    # CRITICAL: the time every gateway's cron needs to deploy it.
    grace: float = 3600.0


def validate_check(check: CheckConfig, where: Where) -> None:
    """The thresholds are strings (days or a share), so the types let through what only parsing them finds."""
    Threshold.parse(check.warning, f"config {where.path}: check.warning")
    Threshold.parse(check.critical, f"config {where.path}: check.critical")
