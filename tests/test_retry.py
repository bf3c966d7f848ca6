"""The retry schedule of a failing renewal, and the emergency rule: unit tests, the pool faked at its boundary."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from rgwtls.config import CertificateConfig
from rgwtls.issue import _held_back, _next_attempt
from rgwtls.store import CertSet
from tests.test_decide import DOMAINS, FakeSession, a_set, decide

NOW = dt.datetime.now(dt.UTC)
CERT = CertificateConfig("cog.example.org", DOMAINS)


class FakePool:
    def __init__(self, current: CertSet | None) -> None:
        self.current = current

    def read_set(self, name: str, staging: bool = False) -> CertSet | None:
        return self.current


def after(failures_before: int, current: CertSet | None = None) -> tuple[int, dt.timedelta]:
    attempt: dict[str, Any] = {"ok": False, "failures": failures_before} if failures_before else {"ok": True}
    failures, when = _next_attempt(FakePool(current), CERT, False, attempt, NOW)  # type: ignore[arg-type]
    return failures, when - NOW


def test_failures_in_a_row_wait_one_hour_then_double_to_at_most_six() -> None:
    waits = [after(n) for n in range(6)]
    assert [f for f, _ in waits] == [1, 2, 3, 4, 5, 6]
    assert [w / dt.timedelta(hours=1) for _, w in waits] == [1, 2, 4, 6, 6, 6]


def test_a_success_starts_the_count_again() -> None:
    assert after(0) == (1, dt.timedelta(hours=1))


def test_the_wait_leaves_room_for_four_attempts_before_the_certificate_expires() -> None:
    # A shortlived certificate with 8 hours left: at most 2 hours between attempts.
    _, wait = after(4, a_set(160 / 24, 8 / 24))
    # (The set was made when the module loaded: a little less than 8 hours may be left by now.)
    assert dt.timedelta(hours=1, minutes=30) < wait <= dt.timedelta(hours=2)
    # Minutes left: still not a busy loop.
    _, wait = after(4, a_set(160 / 24, 0.1 / 24))
    assert wait == dt.timedelta(minutes=5)


def held(next_in: dt.timedelta, config: str = "abc", failures: int = 2) -> str | None:
    attempt = {"ok": False, "failures": failures, "next_attempt": (NOW + next_in).isoformat(), "config": "abc"}
    return _held_back(attempt, config)


def test_a_run_before_the_next_attempt_is_held_back_and_says_until_when() -> None:
    said = held(dt.timedelta(hours=2))
    assert said is not None
    assert "last 2 attempt(s) failed" in said
    assert "--force" in said


def test_a_run_at_its_time_or_a_few_minutes_early_goes() -> None:
    assert held(dt.timedelta(minutes=-1)) is None
    assert held(dt.timedelta(minutes=4)) is None  # cron's next hour, a little before a whole hour after the last


def test_a_changed_configuration_goes_at_once() -> None:
    assert held(dt.timedelta(hours=2), config="changed") is None


@pytest.mark.parametrize("record", [{}, {"ok": True}, {"ok": False, "next_attempt": "soon"}, {"ok": False}])
def test_no_usable_record_holds_nothing_back(record: dict[str, Any]) -> None:
    assert _held_back(record, "") is None


def test_a_twentieth_of_the_lifetime_left_is_due_whatever_ari_says() -> None:
    # 160 hours, 7 left (under 8 = 1/20), and a CA whose ARI window opens in a week.
    d = decide(a_set(160 / 24, 7 / 24), FakeSession(ari=NOW + dt.timedelta(days=7)))
    assert d.due
    assert "a twentieth of its lifetime" in d.reason


def test_more_than_a_twentieth_left_waits_for_ari() -> None:
    d = decide(a_set(160 / 24, 9 / 24), FakeSession(ari=NOW + dt.timedelta(days=7)))
    assert not d.due
