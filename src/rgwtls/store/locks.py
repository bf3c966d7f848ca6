"""The issuer lock, and the leases on set objects under it: one issuer at a time, whoever started it.

A lease is not a lock: a process frozen past its lease wakes believing it
still holds it. So the issuer's writes carry their lease in the same RADOS
operation (`rgwtls.store.sets`), and a lock whose holder on this host is gone
is broken at once (`Locks._break_if_dead`). The restart slots
(`rgwtls.store.slots`) are the same locks, counted.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import rados

from rgwtls.errors import IssuerBusy, LockHeld, StoreError
from rgwtls.log import notice
from rgwtls.scrub import clean
from rgwtls.store.clslock import LOCK_FLAG_MUST_RENEW, seconds
from rgwtls.store.connection import Connection, reason
from rgwtls.store.holder import Holder, this_host
from rgwtls.store.layout import HOLDER_XATTR, ISSUER_LOCK, ISSUER_LOCK_NAME, NS_ISSUER, object_name

# The name the pool's lines have always carried, whichever of its modules logs them.
log = logging.getLogger("rgwtls.store")


class Locks(Connection):
    """Exclusive RADOS locks that expire by themselves, with their holder's record beside them."""

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
                self._ioctx.lock_exclusive(obj, name, cookie, desc=me.describe(), duration=seconds(duration))
            except rados.ObjectBusy:
                if attempt == 2:
                    return None
                taken_from = self._break_if_dead(ns, obj, name, what) or taken_from
                continue
            except rados.Error as e:
                raise StoreError(f"cannot take {what} in {self._describe()}: {reason(e)}") from None
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
            raise StoreError(f"cannot read who holds {what} in {self._describe()}: {reason(e)}") from None
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
            raise StoreError(f"cannot take over {what} in {self._describe()}: {reason(e)}") from None
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
            log.warning("could not release %s (it expires by itself): %s", what, reason(e))

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

    def _lock_holder(self, ns: str, obj: str) -> str:
        self._ioctx.set_namespace(ns)
        try:
            raw = bytes(self._ioctx.get_xattr(obj, HOLDER_XATTR))
        except rados.Error:
            return "holder unknown"
        holder = Holder.from_bytes(raw)
        if holder is None:
            return clean(raw, 200)  # written by whoever has the caps: it reaches every waiting gateway's line
        if holder.host == this_host() and not holder.dead_here():
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
            duration=seconds(self.cfg.lock_duration),
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
                f"cannot take over the lease on {object_name(ns, obj)} in {self._describe()}: {reason(e)}"
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

    def __init__(self, pool: Locks, cookie: str) -> None:
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
                    self._lost = f"renewing it failed: {reason(e)}"
                    return
                except rados.Error as e:
                    # A slow OSD: the lock is still ours until it lapses; try again next time.
                    log.info("could not renew the issuer lock: %s", reason(e))
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
            raise StoreError(f"cannot read {object_name(ns, obj)} from {pool._describe()}: {reason(e)}") from None
        for _ in range(3):
            pool._ioctx.set_namespace(ns)
            try:
                pool._ioctx.lock_exclusive(
                    obj,
                    ISSUER_LOCK_NAME,
                    self._cookie,
                    desc=Holder.me(self._cookie).describe(),
                    duration=seconds(self._duration),
                )
            except rados.ObjectBusy:
                self.confirm()
                pool._break_lease(ns, obj)
                continue
            except rados.ObjectExists:
                pass  # ours already
            except rados.Error as e:
                raise StoreError(f"cannot lease {object_name(ns, obj)} in {pool._describe()}: {reason(e)}") from None
            with self._claims_lock:
                self._claims.append((ns, obj))
            return
        raise LockHeld(f"cannot lease {object_name(ns, obj)} in pool {pool.cfg.pool}: another issuer keeps taking it")

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
                lost = f"renewing it failed: {reason(e)}"
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
            self._pool._unlock(ns, obj, ISSUER_LOCK_NAME, self._cookie, f"the lease on {object_name(ns, obj)}")
