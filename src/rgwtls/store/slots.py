"""The restart slots: a counting semaphore of RADOS locks, so that the gateways never restart all at once.

A slot is a lock (`rgwtls.store.locks`) on `deploy/restart-slot.<i>` that
expires after its hold. A deploy frozen past it wakes believing it still
restarts alone: so the slot yields its fence (`_fence_slot`), one write
operation that asserts the lock and renews it, called right before the
restart. Waiters watch the slot objects, and a holder that frees its slot
notifies the next (`_hand_on`); the poll stays as the net for one that died.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import rados

from rgwtls import unwatch
from rgwtls.errors import LockHeld, StoreError
from rgwtls.store.clslock import LOCK_FLAG_MUST_RENEW, assert_locked_op, renew_op, seconds
from rgwtls.store.connection import reason
from rgwtls.store.holder import Holder
from rgwtls.store.layout import HOLDER_XATTR, NS_DEPLOY, SLOT_LOCK
from rgwtls.store.locks import Locks

# The name the pool's lines have always carried, whichever of its modules logs them.
log = logging.getLogger("rgwtls.store")


class Slots(Locks):
    """The fleet's restart slots, and who holds them."""

    @contextlib.contextmanager
    def restart_slot(self, slots: int, wait: float, hold: float) -> Iterator[Callable[[], None]]:
        """One of `slots` fleet-wide restart slots: a counting semaphore made of RADOS locks.

        Each slot is an exclusive lock that expires after `hold` seconds, so a
        gateway that dies while restarting frees its slot by itself; one that
        died on this host frees it at once. A lease is not a lock: a deploy
        frozen past `hold` wakes believing it still restarts alone. So it
        yields the slot's fence, to call right before the restart: it raises
        LockHeld unless the slot is still ours, and renews it for `hold`.
        """
        import functools
        import random

        name = SLOT_LOCK
        deadline = time.monotonic() + wait
        pause = 0.1
        freed = threading.Event()
        watches: list[Any] = []
        try:
            while True:
                for i in range(slots):
                    obj, what = f"restart-slot.{i}", f"restart slot {i}"
                    cookie = self._try_lock(NS_DEPLOY, obj, name, hold, what)
                    if cookie is None:
                        continue
                    self._unwatch(watches)
                    try:
                        yield functools.partial(self._fence_slot, obj, name, cookie, hold, what)
                    finally:
                        self._unlock(NS_DEPLOY, obj, name, cookie, what)
                        self._hand_on(obj)
                    return
                if time.monotonic() >= deadline:
                    others = ", ".join(self._lock_holder(NS_DEPLOY, f"restart-slot.{i}") for i in range(slots))
                    raise LockHeld(
                        f"no restart slot free within {wait:g}s: {slots} gateway(s) restarting ({others}); "
                        "nothing changed here, the next run tries again"
                    )
                log.info("waiting for a restart slot: %d gateway(s) restarting", slots)
                if not watches:
                    watches = self._watch_slots(slots, freed)
                # A holder that frees its slot notifies it, and the wait ends at
                # once; the poll stays as the safety net for one that died. Jitter,
                # so that gateways that wait together do not retry together.
                freed.wait(pause * random.uniform(0.5, 1.5))  # noqa: S311 - spreading retries, not secrecy
                freed.clear()
                pause = min(pause * 2, 2.0 if not watches else 5.0)
        finally:
            self._unwatch(watches)

    def slot_holders(self, fresh_for: float) -> list[Holder]:
        """Who holds a restart slot now, as the slots' records say: the gateways restarting, for rollout.

        A record counts while the slot's lock still names its cookie (cls_lock
        drops it on unlock) and for at most `fresh_for` seconds after it was
        taken: a lock that lapsed stays in the object until someone takes it again.
        """
        names = [n for n in self.names(NS_DEPLOY, "restart-slot.") if isinstance(n, str)]
        cutoff = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - fresh_for))
        found = []
        for obj in names:
            try:
                xattrs = dict(self._ioctx.get_xattrs(obj))
            except rados.ObjectNotFound:
                continue
            except rados.Error as e:
                raise StoreError(f"cannot read who holds {obj} in {self._describe()}: {reason(e)}") from None
            holder = Holder.from_bytes(xattrs.get(HOLDER_XATTR))
            lock = xattrs.get(f"lock.{SLOT_LOCK}")
            if holder is not None and lock is not None and holder.cookie.encode() in lock and holder.since >= cutoff:
                found.append(holder)
        return found

    def _watch_slots(self, slots: int, freed: threading.Event) -> list[Any]:
        """Watches on the slot objects, so that a freed slot wakes this waiter; none if they cannot be had."""
        self._ioctx.set_namespace(NS_DEPLOY)
        watches = []
        for i in range(slots):
            try:
                watches.append(self._ioctx.watch(f"restart-slot.{i}", lambda *_: freed.set(), timeout=30))
            except rados.Error as e:
                log.info("cannot watch restart slot %d (%s); polling it", i, reason(e))
        return watches

    def _unwatch(self, watches: list[Any]) -> None:
        while watches:
            unwatch.close(watches.pop(), self._kept, "a restart slot's watch")

    def _hand_on(self, obj: str) -> None:
        """Tell the gateways waiting for a slot that this one is free: the next starts now, not at its next poll."""
        self._ioctx.set_namespace(NS_DEPLOY)
        try:
            self._ioctx.notify(obj, "", timeout_ms=1000)
        except rados.Error as e:
            log.debug("no waiter was told that %s is free (%s); they poll", obj, reason(e))

    def _fence_slot(self, obj: str, name: str, cookie: str, hold: float, what: str) -> None:
        """Confirm, in one write operation on the slot object, that the slot is ours, and renew it.

        cls_lock's `assert_locked` fails (EBUSY) once the lock lapsed or another
        holder took it, and the renewal with MUST_RENEW in the same operation
        gives the restart and its check the whole `hold` again. A binding
        without WriteOp.execute renews alone, which fails the same way.
        """
        self._ioctx.set_namespace(NS_DEPLOY)
        try:
            if hasattr(rados.WriteOp, "execute"):
                with rados.WriteOpCtx() as op:
                    op.execute("lock", "assert_locked", assert_locked_op(name, cookie))
                    op.execute("lock", "lock", renew_op(name, cookie, hold, Holder.me(cookie).describe()))
                    self._ioctx.operate_write_op(op, obj)
            else:  # pragma: no cover - every binding rgwtls supports has it
                self._ioctx.lock_exclusive(obj, name, cookie, duration=seconds(hold), flags=LOCK_FLAG_MUST_RENEW)
        except (rados.ObjectBusy, rados.ObjectNotFound) as e:
            raise LockHeld(
                f"{what} is no longer ours ({reason(e)}: it lapsed after {hold:g}s, so another gateway may be "
                "restarting); radosgw was not restarted"
            ) from None
        except rados.Error as e:
            raise LockHeld(
                f"cannot confirm that {what} is still ours ({reason(e)}); radosgw was not restarted"
            ) from None
