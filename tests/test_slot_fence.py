"""The restart slot's fence up to the exec, with a fake confirmation and the monotonic clock in the test's hands."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rgwtls import fence
from rgwtls.errors import LockHeld
from rgwtls.fence import SlotFence


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(fence, "time", SimpleNamespace(monotonic=c))
    return c


def test_a_fresh_confirmation_lets_the_restart_go_without_another_rados_operation(clock: Clock) -> None:
    calls: list[float] = []
    f = SlotFence(lambda: calls.append(clock.now), hold=100, need=30)
    f.confirm()
    clock.now += 70  # exactly hold - need: the restart and its check still end within the hold
    f.before_exec()
    assert len(calls) == 1


def test_a_confirmation_too_old_to_cover_the_restart_is_made_again_before_it(clock: Clock) -> None:
    calls: list[float] = []
    f = SlotFence(lambda: calls.append(clock.now), hold=100, need=30)
    f.confirm()
    clock.now += 70.5
    f.before_exec()
    assert calls == [1000.0, 1070.5]


def test_a_slot_lost_while_frozen_stops_the_restart(clock: Clock) -> None:
    lost: list[bool] = []

    def confirm() -> None:
        if lost:
            raise LockHeld("restart slot 0 is no longer ours; radosgw was not restarted")

    f = SlotFence(confirm, hold=100, need=30)
    f.confirm()
    clock.now += 3600
    lost.append(True)
    with pytest.raises(LockHeld, match="no longer ours"):
        f.before_exec()


def test_a_never_confirmed_slot_is_confirmed_before_the_restart(clock: Clock) -> None:
    calls: list[float] = []
    SlotFence(lambda: calls.append(clock.now), hold=100, need=30).before_exec()
    assert calls == [1000.0]


def test_a_confirmation_that_itself_took_past_the_cover_gives_up(clock: Clock) -> None:
    def slow() -> None:
        clock.now += 80

    f = SlotFence(slow, hold=100, need=30)
    with pytest.raises(LockHeld, match=r"confirming the restart slot took 80.0s, too long"):
        f.before_exec()
