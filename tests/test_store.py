"""The issuer lock and the restart slots, against the real Ceph cluster: who may take a lock, and when."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import rados

from rgwtls.config import CephConfig
from rgwtls.errors import LockHeld
from rgwtls.store import HOLDER_XATTR, ISSUER_LOCK, ISSUER_LOCK_NAME, NS_DEPLOY, NS_ISSUER, Holder, Pool
from tests import waits
from tests.conftest import POOL, Stack

BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
HERE = os.uname().nodename


def ceph_config(stack: Stack, lock_duration: float = 300.0) -> CephConfig:
    return CephConfig(**{**stack.settings()["ceph"], "lock_duration": lock_duration})


def plant_lock(stack: Stack, ns: str, obj: str, name: str, holder: Holder, duration: int) -> None:
    """A lock as another run left it: taken with its cookie, and its holder written beside it."""
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    try:
        ioctx.set_namespace(ns)
        ioctx.lock_exclusive(obj, name, holder.cookie, desc=holder.describe(), duration=duration)
        ioctx.set_xattr(obj, HOLDER_XATTR, holder.to_bytes())
    finally:
        ioctx.close()


def exited_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def own_start() -> int:
    return int(Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19])


@pytest.fixture
def store(stack: Stack) -> Iterator[Pool]:
    with Pool(ceph_config(stack)) as p:
        yield p


def test_lock_of_a_process_gone_from_this_host_is_taken_over_at_once(
    stack: Stack, store: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    dead = Holder(HERE, BOOT_ID, exited_pid(), 12345, "2026-01-01T00:00:00Z", "deadbeefdeadbeef")
    plant_lock(stack, NS_ISSUER, ISSUER_LOCK, ISSUER_LOCK_NAME, dead, duration=600)
    started = time.monotonic()
    with store.issuer_lock() as lock:
        lock.confirm()
    assert time.monotonic() - started < 5
    assert f"took over the issuer lock from {HERE} pid {dead.pid}" in caplog.text


def test_holder_whose_pid_now_belongs_to_another_process_is_taken_over(
    stack: Stack, store: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # Our own pid, alive, but started at another time: the pid was reused.
    reused = Holder(HERE, BOOT_ID, os.getpid(), own_start() - 1, "2026-01-01T00:00:00Z", "0123456789abcdef")
    plant_lock(stack, NS_ISSUER, ISSUER_LOCK, ISSUER_LOCK_NAME, reused, duration=600)
    with store.issuer_lock():
        pass
    assert f"pid {os.getpid()}" in caplog.text


def test_holder_from_before_this_hosts_last_boot_is_taken_over(stack: Stack, store: Pool) -> None:
    old = Holder(HERE, "another-boot", os.getpid(), own_start(), "2026-01-01T00:00:00Z", "0123456789abcdef")
    plant_lock(stack, NS_ISSUER, ISSUER_LOCK, ISSUER_LOCK_NAME, old, duration=600)
    with store.issuer_lock():
        pass


def test_live_holder_on_this_host_keeps_its_lock(stack: Stack, store: Pool) -> None:
    alive = Holder(HERE, BOOT_ID, os.getpid(), own_start(), "2026-01-01T00:00:00Z", "0123456789abcdef")
    plant_lock(stack, NS_ISSUER, ISSUER_LOCK, ISSUER_LOCK_NAME, alive, duration=600)
    with pytest.raises(LockHeld, match=f"pid {os.getpid()} .*still running on this host"), store.issuer_lock():
        pass


def test_holder_record_that_does_not_name_the_locks_cookie_is_not_trusted(stack: Stack, store: Pool) -> None:
    # A run that took the lock but was killed before writing its own record
    # leaves the record of the run before it: that one proves nothing.
    plant_lock(stack, NS_ISSUER, ISSUER_LOCK, ISSUER_LOCK_NAME, Holder(HERE, BOOT_ID, 1, 1, "x", "aaaa"), 600)
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    ioctx.set_namespace(NS_ISSUER)
    stale = Holder(HERE, BOOT_ID, exited_pid(), 1, "2026-01-01T00:00:00Z", "bbbbbbbbbbbbbbbb")
    ioctx.set_xattr(ISSUER_LOCK, HOLDER_XATTR, stale.to_bytes())
    ioctx.close()
    with pytest.raises(LockHeld, match="another issuer holds the lock"), store.issuer_lock():
        pass


def test_dead_holder_on_another_host_blocks_until_its_lock_expires(stack: Stack, store: Pool) -> None:
    elsewhere = Holder("rgw-elsewhere", "other-boot", 4242, 1, "2026-01-01T00:00:00Z", "cccccccccccccccc")
    # Only time frees it: a short lock, two seconds.
    plant_lock(stack, NS_ISSUER, ISSUER_LOCK, ISSUER_LOCK_NAME, elsewhere, duration=2)
    planted = time.monotonic()
    with pytest.raises(LockHeld, match="rgw-elsewhere pid 4242"), store.issuer_lock():
        pass

    def taken() -> bool:
        try:
            with store.issuer_lock():
                return True
        except LockHeld:
            return False

    waits.wait_for("the lock expired", taken, 2 + store.cfg.timeout, why="its duration, and ceph.timeout")
    # Not taken over at once: it waited for the expiry (counted from after the planting, which may be slow).
    assert time.monotonic() - planted >= 1.0


def test_running_issuer_renews_its_lock_past_the_lock_duration(stack: Stack) -> None:
    # Time must pass: the lock renewed past its duration. 2 s: a 1 s lock lost its renewal under scripts/cpu-hog.
    with Pool(ceph_config(stack, lock_duration=2.0)) as first, first.issuer_lock() as lock:
        taken = time.monotonic()
        waits.wait_for(
            "a renewal 1.5 lock durations after the lock was taken",
            lambda: lock._renewed - taken >= 3.0,
            3.0 + first.cfg.timeout,
            why="the renewal's every third of lock_duration, and ceph.timeout",
        )
        with (
            Pool(ceph_config(stack, lock_duration=2.0)) as second,
            pytest.raises(LockHeld, match="still running on this host"),
            second.issuer_lock(),
        ):
            pass
        lock.confirm()


def test_lock_taken_by_another_issuer_is_no_longer_confirmed(stack: Stack) -> None:
    with Pool(ceph_config(stack, lock_duration=2.0)) as own, own.issuer_lock() as lock:
        # What another issuer does after our lock lapsed: break it and take it.
        ioctx = stack.ceph.admin().open_ioctx(POOL)
        ioctx.set_namespace(NS_ISSUER)
        ioctx.rm_xattr(ISSUER_LOCK, f"lock.{ISSUER_LOCK_NAME}")
        ioctx.lock_exclusive(ISSUER_LOCK, ISSUER_LOCK_NAME, "someone-else", duration=30)
        ioctx.close()
        with pytest.raises(LockHeld, match="no longer ours"):
            lock.confirm()


def test_restart_slot_of_a_deploy_killed_on_this_host_is_free_at_once(stack: Stack, store: Pool) -> None:
    dead = Holder(HERE, BOOT_ID, exited_pid(), 1, "2026-01-01T00:00:00Z", "dddddddddddddddd")
    plant_lock(stack, NS_DEPLOY, "restart-slot.0", "rgwtls-restart", dead, duration=600)
    started = time.monotonic()
    with store.restart_slot(1, wait=0.0, hold=60.0):
        pass
    assert time.monotonic() - started < 5


def test_restart_slot_held_on_another_host_stays_taken(stack: Stack, store: Pool) -> None:
    other = Holder("rgw-elsewhere", "other-boot", 4242, 1, "2026-01-01T00:00:00Z", "eeeeeeeeeeeeeeee")
    plant_lock(stack, NS_DEPLOY, "restart-slot.0", "rgwtls-restart", other, duration=600)
    with pytest.raises(LockHeld, match="rgw-elsewhere pid 4242"), store.restart_slot(1, wait=0.0, hold=60.0):
        pass


def test_released_lock_leaves_no_renewal_running(stack: Stack, store: Pool) -> None:
    with store.issuer_lock():
        pass
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    ioctx.set_namespace(NS_ISSUER)
    try:
        ioctx.lock_exclusive(ISSUER_LOCK, ISSUER_LOCK_NAME, "next", duration=30)
    except rados.ObjectBusy:
        pytest.fail("the lock is still held after release")
    finally:
        ioctx.close()
