"""The restart slot's fence and the mon check, against the real Ceph cluster: what deploy asks before a restart."""

from __future__ import annotations

import time

import pytest

from rgwtls.config import CephConfig
from rgwtls.errors import LockHeld, StoreError
from rgwtls.store import NS_DEPLOY, Pool
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
    with Pool(ceph_config(stack)) as pool, pool.restart_slot(1, 5, hold=3) as fence:
        time.sleep(2)
        fence()  # renewed: 3 s from now, not from when it was taken
        time.sleep(2)
        assert not take_slot_as_another_gateway(stack)
        fence()


def take_once_it_lapses(stack: Stack, cookie: str = "another-gateway") -> None:
    """Another gateway takes the slot as soon as the frozen holder's hold is over (the OSD's clock decides)."""
    deadline = time.monotonic() + 30
    while not take_slot_as_another_gateway(stack, cookie):
        assert time.monotonic() < deadline, "the slot never lapsed"
        time.sleep(0.2)


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


def test_a_freed_slot_wakes_the_waiting_gateway_by_notify_not_at_its_next_poll(stack: Stack) -> None:
    """The holder notifies the slot as it frees it: the waiter's wait ends then, whatever its poll's pause."""
    import threading

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
            # Long enough for the waiter's pause to have grown to whole seconds, and its watch to be set.
            time.sleep(6)
            assert not woken.is_set()
            freed_at = time.monotonic()
        thread.join(30)
        assert got
        # The poll's pause by then is 2 to 7.5 s; the notify hands the slot on within a fraction of that.
        assert got[0] - freed_at < 1.5


def test_two_waiters_for_one_freed_slot_never_hold_it_together(stack: Stack) -> None:
    import threading

    inside = 0
    most = 0
    guard = threading.Lock()
    cfg = ceph_config(stack)  # once: Stack.settings() rewrites a file, not for threads at once

    def one_gateway() -> None:
        nonlocal inside, most
        with Pool(cfg) as pool, pool.restart_slot(1, 60, hold=30):
            with guard:
                inside += 1
                most = max(most, inside)
            time.sleep(0.5)
            with guard:
                inside -= 1

    threads = [threading.Thread(target=one_gateway) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert most == 1
