"""The pool: certificate sets, the ACME account, the issuer lock, the restart slots (see `rgwtls.store.layout`)."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rados

from rgwtls import unwatch
from rgwtls.errors import IssuerBusy, LockHeld, StoreError
from rgwtls.log import notice
from rgwtls.scrub import clean
from rgwtls.store.announce import Announcements
from rgwtls.store.connection import MAX_OBJECT, Connection, TooLarge
from rgwtls.store.connection import reason as _reason
from rgwtls.store.layout import (
    ANNOUNCE,
    FENCE_KEY,
    HOLDER_XATTR,
    ISSUER_LOCK,
    ISSUER_LOCK_NAME,
    LEGACY_OBJECTS,
    NS_DEPLOY,
    NS_ISSUER,
    NS_PRODUCTION,
    NS_STAGING,
    SLOT_LOCK,
)
from rgwtls.store.layout import object_name as _name
from rgwtls.store.sets import LOCK_TYPE_EXCLUSIVE, SET_FORMAT, Basis, CertSet, Sets

__all__ = [
    "ANNOUNCE",
    "FENCE_KEY",
    "HOLDER_LABEL",
    "HOLDER_XATTR",
    "ISSUER_LOCK",
    "ISSUER_LOCK_NAME",
    "LEGACY_OBJECTS",
    "LOCK_FLAG_MUST_RENEW",
    "LOCK_TYPE_EXCLUSIVE",
    "MAX_OBJECT",
    "NS_DEPLOY",
    "NS_ISSUER",
    "NS_PRODUCTION",
    "NS_STAGING",
    "SET_FORMAT",
    "SLOT_LOCK",
    "Basis",
    "CertSet",
    "Connection",
    "Holder",
    "IssuerLock",
    "Pool",
    "TooLarge",
]

log = logging.getLogger(__name__)

# Set by whoever knows which service of the host this process acts for (fleet: the
# gateway's endpoint), so that a slot's holder record names the gateway, not only its host.
HOLDER_LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("HOLDER_LABEL", default="")
# LIBRADOS_LOCK_FLAG_MUST_RENEW: renew only a lock we still hold (ENOENT if it
# lapsed, EBUSY if another took it); flag 1, MAY_RENEW, would quietly take a
# lapsed lock again although another issuer may have held it meanwhile.
LOCK_FLAG_MUST_RENEW = 2


class Pool(Sets, Announcements):
    """The pool's rooms on one connection."""

    # -- locks: the issuer lock and the restart slots --------------------------

    def _try_lock(self, ns: str, obj: str, name: str, duration: float, what: str) -> str | None:
        """Take an exclusive RADOS lock that expires by itself; its cookie, or None if a live holder has it.

        The holder is written beside the lock, so that whoever finds it taken
        can say by whom, and can tell that a holder on its own host is dead:
        that one is taken over at once instead of blocking until it expires.
        """
        import secrets

        cookie = secrets.token_hex(8)
        me = Holder.me(cookie)
        taken_from: Holder | None = None
        for attempt in range(3):
            self._ioctx.set_namespace(ns)
            try:
                self._ioctx.lock_exclusive(obj, name, cookie, desc=me.describe(), duration=_seconds(duration))
            except rados.ObjectBusy:
                if attempt == 2:
                    return None
                taken_from = self._break_if_dead(ns, obj, name, what) or taken_from
                continue
            except rados.Error as e:
                raise StoreError(f"cannot take {what} in {self._describe()}: {_reason(e)}") from None
            with contextlib.suppress(rados.Error):
                self._ioctx.set_xattr(obj, HOLDER_XATTR, me.to_bytes())
            if taken_from is not None:
                notice(log, "took over %s from %s, which is no longer running", what, taken_from.describe())
            return cookie
        return None

    def _break_if_dead(self, ns: str, obj: str, name: str, what: str) -> Holder | None:
        """Remove the lock of a holder on this host that is gone; the holder, if it was removed.

        python-rados has no break_lock, but cls_lock keeps the lock in the
        object's `lock.<name>` xattr. It is removed in one write operation
        that asserts the object version read together with the holder, so a
        lock renewed, released or taken meanwhile is left alone. The holder
        xattr counts only if the lock names its cookie: a holder that has
        taken the lock but not yet written its own record is not mistaken for
        the one before it.
        """
        self._ioctx.set_namespace(ns)
        try:
            xattrs = dict(self._ioctx.get_xattrs(obj))
            version = self._ioctx.get_last_version()
        except rados.ObjectNotFound:
            return None
        except rados.Error as e:
            raise StoreError(f"cannot read who holds {what} in {self._describe()}: {_reason(e)}") from None
        lock = xattrs.get(f"lock.{name}")
        holder = Holder.from_bytes(xattrs.get(HOLDER_XATTR))
        if lock is None or holder is None or holder.cookie.encode() not in lock or not holder.dead_here():
            return None
        try:
            with rados.WriteOpCtx() as op:
                op.assert_version(version)
                op.rm_xattr(f"lock.{name}")
                self._ioctx.operate_write_op(op, obj)
        except (rados.TimedOut, rados.PermissionError) as e:
            raise StoreError(f"cannot take over {what} in {self._describe()}: {_reason(e)}") from None
        except rados.Error:
            return None  # the object changed under us (ERANGE): look again
        return holder

    def _unlock(self, ns: str, obj: str, name: str, cookie: str, what: str) -> None:
        self._ioctx.set_namespace(ns)
        try:
            self._ioctx.unlock(obj, name, cookie)
        except rados.ObjectNotFound:
            log.info("%s had lapsed already", what)  # or another took it: either way, nothing of ours to release
        except rados.Error as e:
            log.warning("could not release %s (it expires by itself): %s", what, _reason(e))

    @contextlib.contextmanager
    def issuer_lock(self) -> Iterator[IssuerLock]:
        """A cluster-wide exclusive lock, so that two issuers never run at once, whoever started them.

        It expires `ceph.lock_duration` after its last renewal, and the
        running issuer renews it every third of that, so a long run keeps it
        and a dead one frees it soon; a dead one on this host frees it at once.
        """
        obj, name, what = ISSUER_LOCK, ISSUER_LOCK_NAME, "the issuer lock"
        cookie = self._try_lock(NS_ISSUER, obj, name, self.cfg.lock_duration, what)
        if cookie is None:
            raise IssuerBusy(
                f"another issuer holds the lock in pool {self.cfg.pool} ({self._lock_holder(NS_ISSUER, obj)}); "
                "nothing issued. It expires by itself "
                f"{int(self.cfg.lock_duration)}s after its last renewal if that issuer died"
            )
        lock = IssuerLock(self, cookie)
        try:
            yield lock
        finally:
            lock.stop()
            self._unlock(NS_ISSUER, obj, name, cookie, what)

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
                raise StoreError(f"cannot read who holds {obj} in {self._describe()}: {_reason(e)}") from None
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
                log.info("cannot watch restart slot %d (%s); polling it", i, _reason(e))
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
            log.debug("no waiter was told that %s is free (%s); they poll", obj, _reason(e))

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
                    op.execute("lock", "assert_locked", self._assert_op(name, cookie))
                    op.execute("lock", "lock", self._renew_op(name, cookie, hold))
                    self._ioctx.operate_write_op(op, obj)
            else:  # pragma: no cover - every binding rgwtls supports has it
                self._ioctx.lock_exclusive(obj, name, cookie, duration=_seconds(hold), flags=LOCK_FLAG_MUST_RENEW)
        except (rados.ObjectBusy, rados.ObjectNotFound) as e:
            raise LockHeld(
                f"{what} is no longer ours ({_reason(e)}: it lapsed after {hold:g}s, so another gateway may be "
                "restarting); radosgw was not restarted"
            ) from None
        except rados.Error as e:
            raise LockHeld(
                f"cannot confirm that {what} is still ours ({_reason(e)}); radosgw was not restarted"
            ) from None

    @staticmethod
    def _assert_op(name: str, cookie: str) -> bytes:
        """cls_lock_assert_op: name, type (1: exclusive), cookie, tag (empty, as rados_lock_exclusive sets it)."""
        return Pool._cls_op(name, b"\x01", cookie, "")

    @staticmethod
    def _renew_op(name: str, cookie: str, hold: float) -> bytes:
        """cls_lock_lock_op renewing our lock: as above, then description, duration (s, ns) and flags."""
        duration = _seconds(hold).to_bytes(4, "little") + bytes(4)
        desc = Holder.me(cookie).describe()
        return Pool._cls_op(name, b"\x01", cookie, "", desc, duration, bytes([LOCK_FLAG_MUST_RENEW]))

    @staticmethod
    def _cls_op(*fields: str | bytes) -> bytes:
        """A struct as Ceph's ENCODE_START(1, 1) writes it: version, compat, length, then each field."""
        body = b"".join(
            f if isinstance(f, bytes) else len(f.encode()).to_bytes(4, "little") + f.encode() for f in fields
        )
        return b"\x01\x01" + len(body).to_bytes(4, "little") + body

    def _lock_holder(self, ns: str, obj: str) -> str:
        self._ioctx.set_namespace(ns)
        try:
            raw = bytes(self._ioctx.get_xattr(obj, HOLDER_XATTR))
        except rados.Error:
            return "holder unknown"
        holder = Holder.from_bytes(raw)
        if holder is None:
            return clean(raw, 200)  # written by whoever has the caps: it reaches every waiting gateway's line
        if holder.host == _host() and not holder.dead_here():
            return f"{holder.describe()}, still running on this host"
        return holder.describe()

    def _renew(self, ioctx: Any, cookie: str, obj: str = ISSUER_LOCK) -> None:
        """Extend our lock on `obj` (the issuer lock, or a lease on a set); rados.Error if it is no longer ours.

        ENOENT: it lapsed; EBUSY: another took it.
        """
        ioctx.lock_exclusive(
            obj,
            ISSUER_LOCK_NAME,
            cookie,
            desc=Holder.me(cookie).describe(),
            duration=_seconds(self.cfg.lock_duration),
            flags=LOCK_FLAG_MUST_RENEW,
        )

    def _break_lease(self, ns: str, obj: str) -> None:
        """Remove another cookie's lease on a set object: a former issuer's, since we hold the issuer lock.

        One write operation that asserts the version read with the lock, as
        `_break_if_dead` does; a lease that changed meanwhile is looked at again.
        """
        self._ioctx.set_namespace(ns)
        try:
            self._ioctx.get_xattrs(obj)
            version = self._ioctx.get_last_version()
            with rados.WriteOpCtx() as op:
                op.assert_version(version)
                op.rm_xattr(f"lock.{ISSUER_LOCK_NAME}")
                self._ioctx.operate_write_op(op, obj)
        except (rados.TimedOut, rados.PermissionError) as e:
            raise StoreError(
                f"cannot take over the lease on {_name(ns, obj)} in {self._describe()}: {_reason(e)}"
            ) from None
        except rados.Error:
            return


class IssuerLock:
    """The issuer lock while we hold it: renewed in a thread until released, confirmed before a store.

    Under it the run also holds a lease, with the same cookie, on each set
    object it decides from (`claim`), renewed with it: the write of a new set
    asserts that lease in the same RADOS operation, which is what stops an
    issuer frozen past its lock (a confirm before the write cannot).

    The thread has its own I/O context: the pool's shared one switches
    namespaces under whoever else uses it. It is opened on the same cluster
    connection, because cls_lock knows a holder by its client instance and
    cookie together.
    """

    def __init__(self, pool: Pool, cookie: str) -> None:
        self._pool = pool
        self._cookie = cookie
        self._duration = pool.cfg.lock_duration
        self._renewed = time.monotonic()
        self._lost: str | None = None
        self._claims: list[tuple[str, str]] = []
        self._claims_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="issuer-lock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ioctx: Any = None
        try:
            ioctx = self._pool._cluster.open_ioctx(self._pool.cfg.pool)
            while not self._stop.wait(self._duration / 3):
                with self._claims_lock:
                    held = [(NS_ISSUER, ISSUER_LOCK), *self._claims]
                try:
                    for ns, obj in held:
                        ioctx.set_namespace(ns)
                        self._pool._renew(ioctx, self._cookie, obj)
                    self._renewed = time.monotonic()
                except (rados.ObjectBusy, rados.ObjectNotFound) as e:
                    self._lost = f"renewing it failed: {_reason(e)}"
                    return
                except rados.Error as e:
                    # A slow OSD: the lock is still ours until it lapses; try again next time.
                    log.info("could not renew the issuer lock: %s", _reason(e))
        except Exception as e:  # a daemon thread must not die silently: say so at the next confirm
            self._lost = f"the renewal thread failed: {type(e).__name__}: {e}"
        finally:
            if ioctx is not None:
                ioctx.close()

    def claim(self, ns: str, obj: str) -> None:
        """Hold a lease on a set object under our cookie, from before the run reads it until the run ends.

        An object that does not exist gets none (taking a lock would create it
        empty, for every gateway to read): its write creates it exclusively
        instead. Another cookie's lease is a former issuer's, frozen or dead
        past its lock: after confirming that the lock is ours, it is broken.
        """
        pool = self._pool
        if (ns, obj) in self._claims:
            return
        pool._ioctx.set_namespace(ns)
        try:
            pool._ioctx.stat(obj)
        except rados.ObjectNotFound:
            return
        except rados.Error as e:
            raise StoreError(f"cannot read {_name(ns, obj)} from {pool._describe()}: {_reason(e)}") from None
        for _ in range(3):
            pool._ioctx.set_namespace(ns)
            try:
                pool._ioctx.lock_exclusive(
                    obj,
                    ISSUER_LOCK_NAME,
                    self._cookie,
                    desc=Holder.me(self._cookie).describe(),
                    duration=_seconds(self._duration),
                )
            except rados.ObjectBusy:
                self.confirm()
                pool._break_lease(ns, obj)
                continue
            except rados.ObjectExists:
                pass  # ours already
            except rados.Error as e:
                raise StoreError(f"cannot lease {_name(ns, obj)} in {pool._describe()}: {_reason(e)}") from None
            with self._claims_lock:
                self._claims.append((ns, obj))
            return
        raise LockHeld(f"cannot lease {_name(ns, obj)} in pool {pool.cfg.pool}: another issuer keeps taking it")

    def lease(self, ns: str, obj: str) -> str:
        """What a write to a claimed object asserts: our cookie, or "" (must not exist) for one we hold no lease on."""
        return self._cookie if (ns, obj) in self._claims else ""

    def confirm(self) -> None:
        """Renew once more, now: StoreError unless the lock is still ours, so that we never store after losing it."""
        lost = self._lost
        if lost is None and time.monotonic() - self._renewed >= self._duration:
            lost = f"not renewed for {self._duration:g}s, so it lapsed"
        if lost is None:
            self._pool._ioctx.set_namespace(NS_ISSUER)
            try:
                self._pool._renew(self._pool._ioctx, self._cookie)
                self._renewed = time.monotonic()
            except rados.Error as e:
                lost = f"renewing it failed: {_reason(e)}"
        if lost is not None:
            raise LockHeld(
                f"the issuer lock in pool {self._pool.cfg.pool} is no longer ours ({lost}); "
                "another issuer may have taken over"
            )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self._pool.cfg.timeout + 1)
        with self._claims_lock:
            claims, self._claims = self._claims, []
        for ns, obj in claims:
            self._pool._unlock(ns, obj, ISSUER_LOCK_NAME, self._cookie, f"the lease on {_name(ns, obj)}")


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: enough for a later run on the same host to know that the holder died.

    Host and pid alone would take a reused pid for the holder; the boot id
    and the process's start time (clock ticks after boot) make a pair that
    no later process repeats. The cookie ties the record to the lock it
    describes.
    """

    host: str
    boot_id: str
    pid: int
    start: int
    since: str
    cookie: str
    # Which of the host's services took it (a gateway's verify_endpoint), for rollout; "" from older records.
    label: str = ""

    @classmethod
    def me(cls, cookie: str) -> Holder:
        pid = os.getpid()
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return cls(_host(), _boot_id(), pid, _process_start(pid) or 0, since, cookie, HOLDER_LABEL.get())

    def to_bytes(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Holder | None:
        """The record, or None if absent or written by an older rgwtls (plain text)."""
        if not raw:
            return None
        try:
            doc = json.loads(raw)
            return cls(
                str(doc["host"]),
                str(doc["boot_id"]),
                int(doc["pid"]),
                int(doc["start"]),
                str(doc["since"]),
                str(doc["cookie"]),
                str(doc.get("label", "")),
            )
        except (ValueError, KeyError, TypeError, OverflowError):  # OverflowError: a pid of Infinity
            return None

    def describe(self) -> str:
        """For a line: a holder record is written by whoever has the deploy caps, so its text is cleaned."""
        return f"{clean(self.host, 200)} pid {self.pid} since {clean(self.since, 64)}"

    def dead_here(self) -> bool:
        """True only if the holder ran on this host and is certainly gone; another host's processes we cannot see."""
        if self.host != _host() or not self.boot_id or not self.start:
            return False
        mine = _boot_id()
        if not mine:
            return False
        if mine != self.boot_id:
            return True  # this host rebooted since: every process of then is gone
        return _process_start(self.pid) != self.start


def _host() -> str:
    return os.uname().nodename


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat, the start time; None if no such process is running (a zombie is gone too)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def _seconds(duration: float) -> int:
    return max(1, round(duration))
