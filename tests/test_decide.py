"""When `issue` renews: unit tests of the decision, the CA faked at its boundary."""

from __future__ import annotations

import datetime as dt
from typing import Any

from devsite.certmaker import make_cert
from rgwtls.config import CertificateConfig
from rgwtls.errors import AcmeError
from rgwtls.issue import _decide
from rgwtls.store import CertSet

DOMAINS = ("cog.example.org", "*.cog.example.org")
DIRECTORY = "https://ca.example/dir"
NOW = dt.datetime.now(dt.UTC)


class FakeAcme:
    def __init__(self, ari: dt.datetime | None) -> None:
        self.ari = ari
        self.asked = 0

    def renewal_time(self, cert_pem: str) -> dt.datetime | None:
        self.asked += 1
        return self.ari


class FakeSession:
    def __init__(self, ari: dt.datetime | None = None, down: bool = False, revoked: str = "") -> None:
        self.fake = FakeAcme(ari)
        self.down = down
        self._revoked = revoked

    def revoked(self, current: CertSet) -> str:
        """What the pool's record and the CRL say (rgwtls.revocation.due_at_once)."""
        return self._revoked

    def acme(self) -> FakeAcme:
        if self.down:
            raise AcmeError("ACME: could not fetch the directory https://ca.example/dir: cannot reach it")
        return self.fake


def a_set(days_total: float, days_left: float, names: tuple[str, ...] = DOMAINS, directory: str = DIRECTORY) -> CertSet:
    not_after = NOW + dt.timedelta(days=days_left)
    key, cert = make_cert(names, not_after - dt.timedelta(days=days_total), not_after)
    return CertSet("cog.example.org", 1, key, cert, "", names, NOW.isoformat(), "rgw1", directory)


def decide(current: CertSet | None, session: Any = None, force: bool = False) -> Any:
    cfg = CertificateConfig("cog.example.org", DOMAINS)
    return _decide(cfg, current, session or FakeSession(), force, (DIRECTORY,))  # type: ignore[arg-type]


def test_nothing_stored_is_due() -> None:
    assert decide(None).due


def test_ninety_day_certificate_with_sixty_days_left_is_not_due() -> None:
    d = decide(a_set(90, 60))
    assert not d.due
    assert "60 days left" in d.reason


def test_ninety_day_certificate_with_twenty_nine_days_left_is_due() -> None:
    assert decide(a_set(90, 29)).due


def test_fortyfive_day_certificate_renews_at_a_third_of_its_life_not_at_thirty_days() -> None:
    # A fixed 30-day rule would renew a 45-day certificate at once, every day.
    assert not decide(a_set(45, 20)).due
    assert decide(a_set(45, 14)).due


def test_expired_certificate_is_due_without_asking_the_ca() -> None:
    session = FakeSession()
    assert decide(a_set(90, -1), session).due
    assert session.fake.asked == 0


def test_changed_names_are_due() -> None:
    d = decide(a_set(90, 80, names=("cog.example.org",)))
    assert d.due
    assert "*.cog.example.org" in d.reason


def test_certificate_from_another_ca_directory_is_due() -> None:
    assert decide(a_set(90, 80, directory="https://other/dir")).due


def test_force_is_due_and_replaces_the_current_certificate() -> None:
    d = decide(a_set(90, 80), force=True)
    assert d.due
    assert d.replaces


def test_open_ari_window_is_due_early_and_sends_replaces() -> None:
    d = decide(a_set(90, 80), FakeSession(ari=NOW - dt.timedelta(hours=1)))
    assert d.due
    assert "ARI" in d.reason
    assert d.replaces
    assert "." in d.replaces


def test_open_ari_window_is_due_at_once_whatever_the_retry_schedule_says() -> None:
    assert decide(a_set(90, 80), FakeSession(ari=NOW - dt.timedelta(hours=1))).urgent


def test_revoked_certificate_is_due_at_once_without_asking_ari() -> None:
    session = FakeSession(ari=NOW + dt.timedelta(days=30), revoked="revoked: listed in its CA's CRL")
    d = decide(a_set(90, 80), session)
    assert d.due
    assert d.urgent
    assert d.reason.startswith("revoked")
    assert d.replaces
    assert session.fake.asked == 0


def test_lifetime_rule_is_due_but_waits_for_the_retry_schedule() -> None:
    d = decide(a_set(90, 20), FakeSession(down=True))
    assert d.due
    assert not d.urgent


def test_future_ari_window_wins_over_the_lifetime_rule() -> None:
    d = decide(a_set(90, 20), FakeSession(ari=NOW + dt.timedelta(days=3)))
    assert not d.due
    assert "ARI" in d.reason


def test_unreachable_ca_on_a_day_nothing_is_due_is_not_a_failure() -> None:
    d = decide(a_set(90, 60), FakeSession(down=True))
    assert not d.due
    assert "60 days left" in d.reason


def test_unreachable_ca_still_lets_the_lifetime_rule_renew() -> None:
    assert decide(a_set(90, 20), FakeSession(down=True)).due
