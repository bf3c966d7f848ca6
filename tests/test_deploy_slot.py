"""The restart slot's fence and the mon check, against the real Ceph cluster: what deploy asks before a restart."""

from __future__ import annotations

import logging
import time

import pytest

from rgwtls.config import CephConfig
from rgwtls.errors import LockHeld, StoreError
from rgwtls.store import NS_DEPLOY, Pool
from tests import waits
from tests.conftest import POOL, Stack

SLOT, SLOT_LOCK = "restart-slot.0", "rgwtls-restart"


def ceph_config(stack: Stack, timeout: float = 10.0) -> CephConfig:
    return CephConfig(**{**stack.settings()["ceph"], "timeout": timeout})


def take_slot_as_another_gateway(stack: Stack, cookie: str = "another-gateway", duration: int = 600) -> bool:
    """What another gateway's deploy does: take the slot's lock, if it is free."""
    import rados

    ioctx = stack.ceph.admin().open_ioctx(POOL)
    try:
        ioctx.set_namespace(NS_DEPLOY)
        ioctx.lock_exclusive(SLOT, SLOT_LOCK, cookie, desc="rgw-elsewhere", duration=duration)
        return True
    except rados.ObjectBusy:
        return False
    finally:
        ioctx.close()


def test_fence_of_a_slot_still_held_passes_and_renews_it_for_the_whole_hold(stack: Stack) -> None:
    hold = 2  # whole seconds (cls_lock): short, and still a margin for the fence on a loaded machine
    with Pool(ceph_config(stack)) as pool, pool.restart_slot(1, 5, hold=hold) as fence:
        taken = time.monotonic()
        # Time must pass here: only a slot that lapses later than its first hold shows the renewal.
        time.sleep(0.5)
        renewed = time.monotonic()
        fence()  # renewed: `hold` from now, not from when it was taken
        take_once_it_lapses(stack, hold=hold)
        lapsed = time.monotonic()
    # The OSD lets another gateway in no sooner than `hold` after the renewal, past the first hold.
    assert lapsed - renewed >= hold - 0.1, lapsed - renewed
    assert lapsed - taken >= hold + 0.4, lapsed - taken


def take_once_it_lapses(stack: Stack, cookie: str = "another-gateway", hold: float = 2) -> None:
    """Another gateway takes the slot as soon as the frozen holder's hold is over (the OSD's clock decides)."""
    waits.wait_for(
        "the slot lapsed",
        lambda: take_slot_as_another_gateway(stack, cookie),
        hold + ceph_config(stack).timeout,
        why="the slot's hold, and an OSD operation's ceph.timeout",
    )


def free_slot_as_another_gateway(stack: Stack, cookie: str = "another-gateway") -> None:
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    try:
        ioctx.set_namespace(NS_DEPLOY)
        ioctx.unlock(SLOT, SLOT_LOCK, cookie)
    finally:
        ioctx.close()


def test_fence_of_a_slot_that_lapsed_and_was_taken_raises_and_says_nothing_restarted(stack: Stack) -> None:
    with Pool(ceph_config(stack)) as pool, pool.restart_slot(1, 5, hold=2) as fence:
        take_once_it_lapses(stack)  # meanwhile this holder is frozen past its hold
        with pytest.raises(LockHeld, match=r"restart slot 0 is no longer ours .* radosgw was not restarted"):
            fence()


def test_fence_of_a_slot_that_lapsed_raises_even_after_the_other_gateway_let_it_go(stack: Stack) -> None:
    # Another gateway restarted and released the slot while this one was frozen: a lapsed lease stays lapsed.
    with Pool(ceph_config(stack)) as pool, pool.restart_slot(1, 5, hold=2) as fence:
        take_once_it_lapses(stack)
        free_slot_as_another_gateway(stack)
        with pytest.raises(LockHeld, match="restart slot 0 is no longer ours"):
            fence()
    assert take_slot_as_another_gateway(stack)


def test_mon_check_passes_while_a_mon_answers(stack: Stack) -> None:
    with Pool(ceph_config(stack)) as pool:
        pool.confirm_mon()


def test_mon_check_fails_within_the_ceph_timeout_when_the_mon_is_stopped(stack: Stack) -> None:
    with Pool(ceph_config(stack, timeout=2.0)) as pool, stack.ceph.mon_stopped():
        # The pool still answers: OSD operations need no mon.
        assert pool.read(NS_DEPLOY, "nothing-here") is None
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"^ceph: no mon answered within 2s \("):
            pool.confirm_mon()
        assert time.monotonic() - started < 6


def waits_logged(caplog: pytest.LogCaptureFixture) -> int:
    """How many times a gateway found no slot free and paused: each pause twice the last, up to 5 s."""
    return sum(r.getMessage().startswith("waiting for a restart slot") for r in list(caplog.records))


def test_a_freed_slot_wakes_the_waiting_gateway_by_notify_not_at_its_next_poll(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """The holder notifies the slot as it frees it: the waiter's wait ends then, whatever its poll's pause."""
    import threading

    caplog.set_level(logging.INFO, "rgwtls.store")
    got: list[float] = []
    with Pool(ceph_config(stack)) as holder, Pool(ceph_config(stack)) as waiter:
        woken = threading.Event()

        def wait_for_the_slot() -> None:
            with waiter.restart_slot(1, 30, hold=30):
                got.append(time.monotonic())
                woken.set()

        with holder.restart_slot(1, 5, hold=30):
            thread = threading.Thread(target=wait_for_the_slot)
            thread.start()
            # The sixth pause is 3.2 s, jittered to 1.6 to 4.8 s, and the watch is set since the first.
            waits.wait_for("six pauses", lambda: waits_logged(caplog) >= 6, 30, why="the waiter's own wait")
            assert not woken.is_set()
            freed_at = time.monotonic()
        thread.join(30)
        assert got
        # Its poll would end that pause 1.6 s from now at the soonest; the notify hands the slot on at once.
        assert got[0] - freed_at < 1.5


def test_two_waiters_for_one_freed_slot_never_hold_it_together(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    import threading

    caplog.set_level(logging.INFO, "rgwtls.store")
    inside = 0
    most = 0
    done = 0
    guard = threading.Lock()
    cfg = ceph_config(stack)  # once: Stack.settings() rewrites a file, not for threads at once

    def one_gateway() -> None:
        nonlocal inside, most, done
        with Pool(cfg) as pool, pool.restart_slot(1, 60, hold=30):
            with guard:
                inside += 1
                most = max(most, inside)
                seen = waits_logged(caplog)
            # Held until another gateway found it taken (unless none is left): each hold is contended.
            waits.wait_for(
                "another gateway waiting",
                lambda: waits_logged(caplog) > seen or done == 3,
                60,
                why="the gateways' own wait for a slot",
            )
            with guard:
                inside -= 1
                done += 1

    threads = [threading.Thread(target=one_gateway) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert most == 1
