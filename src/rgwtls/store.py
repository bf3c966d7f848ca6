"""The certificate sets, the ACME account and the issuer lock, in the RADOS pool.

Layout of the pool (default `rgwtls`), by RADOS namespace:

- `""` (default): production sets, readable by every gateway.
  `<name>/current` and `<name>/previous` hold a whole set (key, cert, chain
  and metadata) as one JSON object, each written by one RADOS operation so
  that no reader ever sees the key of one generation with the cert of another.
  The first configured certificate is also written as the legacy objects
  `privkey.pem`, `cert.pem` and `chain.pem`, for `rados get` and old scripts.
- `staging`: the same for `--staging` runs, so that a staging certificate can
  never reach the gateways by accident.
- `acme`: issuer-only: the ACME account keys, the issuer lock and the journal
  of challenge records in flight. Deploy-only users get no caps here.
- `deploy`: the restart slots, RADOS locks that keep the gateways from
  restarting all at once.
"""

from __future__ import annotations

import contextlib
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

from rgwtls.config import CephConfig
from rgwtls.errors import LockHeld, StoreError
from rgwtls.log import notice

log = logging.getLogger(__name__)

NS_PRODUCTION = ""
NS_STAGING = "staging"
NS_ISSUER = "acme"
NS_DEPLOY = "deploy"
SET_FORMAT = "rgwtls-set/1"
# One read of this many bytes fetches any set whole, in one operation:
# Ioctx.read returns 8192 bytes unless told more, which cuts a 4096-bit key
# with a long chain.
MAX_OBJECT = 1 << 20
LEGACY_OBJECTS = ("privkey.pem", "cert.pem", "chain.pem")
ISSUER_LOCK = "issuer.lock"
ISSUER_LOCK_NAME = "rgwtls-issuer"
HOLDER_XATTR = "holder"
# LIBRADOS_LOCK_FLAG_MUST_RENEW: renew only a lock we still hold (ENOENT if it
# lapsed, EBUSY if another took it); flag 1, MAY_RENEW, would quietly take a
# lapsed lock again although another issuer may have held it meanwhile.
LOCK_FLAG_MUST_RENEW = 2


@dataclass(frozen=True)
class CertSet:
    """One generation of a certificate: everything a gateway needs, and where it came from."""

    name: str
    generation: int
    key_pem: str
    cert_pem: str
    chain_pem: str
    domains: tuple[str, ...]
    issued_at: str
    issued_by: str
    directory: str
    # Fields added later have defaults, so that sets stored before them still load.
    # The profile the CA issued under (draft-ietf-acme-profiles); empty: none asked, none said.
    profile: str = ""

    def to_bytes(self) -> bytes:
        doc = {"format": SET_FORMAT, **dataclasses.asdict(self)}
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> CertSet:
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.pop("format", None) != SET_FORMAT:
                raise ValueError("unknown format")
            # Every field has the type it names: a key stored as a number
            # must be refused here, not fail deeper as an AttributeError.
            for f in dataclasses.fields(cls):
                if f.name not in doc and f.default is not dataclasses.MISSING:
                    continue  # a set stored before the field existed
                value = doc[f.name]
                if f.name == "generation":
                    ok = type(value) is int and value >= 1
                elif f.name == "domains":
                    ok = isinstance(value, list) and all(isinstance(d, str) for d in value)
                else:
                    ok = isinstance(value, str)
                if not ok:
                    raise ValueError(f"{f.name} is {type(value).__name__} {str(value)[:20]!r}")
            doc["domains"] = tuple(doc["domains"])
            return cls(**doc)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise StoreError(
                f"{where} is not a valid rgwtls certificate set ({e}); run 'rgwtls issue --force' to replace it"
            ) from None


class Pool:
    """One connection to the cluster and one I/O context on the pool."""

    def __init__(self, cfg: CephConfig) -> None:
        self.cfg = cfg
        self._cluster: Any = None
        self._ioctx: Any = None

    def _describe(self) -> str:
        return f"pool {self.cfg.pool} as {self.cfg.user}"

    def connect(self) -> Pool:
        timeout = str(int(max(1, self.cfg.timeout)))
        conf = {
            "client_mount_timeout": timeout,
            "rados_mon_op_timeout": timeout,
            "rados_osd_op_timeout": timeout,
        }
        if self.cfg.keyring:
            conf["keyring"] = self.cfg.keyring
        started = time.monotonic()
        try:
            self._cluster = rados.Rados(conffile=self.cfg.conf, name=self.cfg.user, conf=conf)
            self._cluster.connect(timeout=int(timeout))
        except rados.Error as e:
            self.close()
            raise StoreError(
                f"cannot connect to the Ceph cluster (conf {self.cfg.conf}, user {self.cfg.user}) "
                f"after {time.monotonic() - started:.1f}s: {_reason(e)}; "
                "check that the mons are up ('ceph -s') and the keyring is readable"
            ) from None
        try:
            self._ioctx = self._cluster.open_ioctx(self.cfg.pool)
        except rados.ObjectNotFound:
            self.close()
            raise StoreError(
                f"pool {self.cfg.pool} does not exist; create it with 'ceph osd pool create {self.cfg.pool}'"
            ) from None
        except rados.Error as e:
            self.close()
            raise StoreError(f"cannot open {self._describe()}: {_reason(e)}") from None
        return self

    def close(self) -> None:
        ioctx, self._ioctx = self._ioctx, None
        cluster, self._cluster = self._cluster, None
        if ioctx is not None:
            ioctx.close()
        if cluster is not None:
            cluster.shutdown()

    def __enter__(self) -> Pool:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw objects ---------------------------------------------------------

    def read(self, ns: str, obj: str) -> bytes | None:
        """The object's whole content in one operation, or None if absent."""
        self._ioctx.set_namespace(ns)
        try:
            data: bytes = self._ioctx.read(obj, MAX_OBJECT)
        except rados.ObjectNotFound:
            return None
        except rados.Error as e:
            raise StoreError(f"cannot read {_name(ns, obj)} from {self._describe()}: {_reason(e)}") from None
        if len(data) >= MAX_OBJECT:
            raise StoreError(f"{_name(ns, obj)} in pool {self.cfg.pool} is larger than {MAX_OBJECT} bytes")
        return data

    def write(self, ns: str, obj: str, data: bytes) -> None:
        """Replace the object whole, in one atomic operation."""
        self._ioctx.set_namespace(ns)
        try:
            with rados.WriteOpCtx() as op:
                op.write_full(data)
                self._ioctx.operate_write_op(op, obj)
        except rados.Error as e:
            raise StoreError(f"cannot write {_name(ns, obj)} to {self._describe()}: {_reason(e)}") from None

    def remove(self, ns: str, obj: str) -> None:
        self._ioctx.set_namespace(ns)
        try:
            self._ioctx.remove_object(obj)
        except rados.ObjectNotFound:
            pass
        except rados.Error as e:
            raise StoreError(f"cannot remove {_name(ns, obj)} from {self._describe()}: {_reason(e)}") from None

    # -- the mon config-key store (deploy's config-key layout) -----------------

    def _mon(self, cmd: dict[str, str], inbuf: bytes = b"") -> tuple[int, bytes, str]:
        try:
            ret, out, err = self._cluster.mon_command(json.dumps(cmd), inbuf)
        except rados.Error as e:
            raise StoreError(f"mon command {cmd['prefix']} failed: {_reason(e)}") from None
        return int(ret), bytes(out), str(err)

    def config_key_get(self, key: str) -> bytes | None:
        ret, out, err = self._mon({"prefix": "config-key get", "key": key})
        if ret == -2:  # ENOENT
            return None
        if ret != 0:
            raise StoreError(f"cannot read config-key {key} as {self.cfg.user}: {err or ret}; check its mon caps")
        return out

    def config_key_set(self, key: str, value: bytes) -> None:
        ret, _, err = self._mon({"prefix": "config-key set", "key": key}, value)
        if ret != 0:
            raise StoreError(f"cannot set config-key {key} as {self.cfg.user}: {err or ret}; check its mon caps")

    # -- certificate sets ----------------------------------------------------

    @staticmethod
    def set_namespace(staging: bool) -> str:
        return NS_STAGING if staging else NS_PRODUCTION

    def read_set(self, name: str, staging: bool = False, which: str = "current") -> CertSet | None:
        ns = self.set_namespace(staging)
        data = self.read(ns, f"{name}/{which}")
        if data is None:
            return None
        return CertSet.from_bytes(data, f"{_name(ns, f'{name}/{which}')} in pool {self.cfg.pool}")

    def write_set(self, new: CertSet, staging: bool, legacy: bool) -> None:
        """Store a new generation, keeping the one it replaces as `previous`.

        `current` is written last and whole, so a crash at any point leaves a
        complete set there: the old one or the new one.
        """
        ns = self.set_namespace(staging)
        old = self.read(ns, f"{new.name}/current")
        if old is not None:
            self.write(ns, f"{new.name}/previous", old)
        self.write(ns, f"{new.name}/current", new.to_bytes())
        if legacy:
            self.write_legacy(new, staging)

    def write_legacy(self, new: CertSet, staging: bool) -> None:
        """The legacy objects `privkey.pem`, `cert.pem`, `chain.pem`, for `rados get` and old scripts.

        Written after `current`, so a crash can skip them.
        """
        ns = self.set_namespace(staging)
        for obj, pem in zip(LEGACY_OBJECTS, (new.key_pem, new.cert_pem, new.chain_pem), strict=True):
            self.write(ns, obj, pem.encode())

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
            raise LockHeld(
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

        name = "rgwtls-restart"
        deadline = time.monotonic() + wait
        pause = 0.1
        while True:
            for i in range(slots):
                obj, what = f"restart-slot.{i}", f"restart slot {i}"
                cookie = self._try_lock(NS_DEPLOY, obj, name, hold, what)
                if cookie is None:
                    continue
                try:
                    yield functools.partial(self._fence_slot, obj, name, cookie, hold, what)
                finally:
                    self._unlock(NS_DEPLOY, obj, name, cookie, what)
                return
            if time.monotonic() >= deadline:
                others = ", ".join(self._lock_holder(NS_DEPLOY, f"restart-slot.{i}") for i in range(slots))
                raise LockHeld(
                    f"no restart slot free within {wait:g}s: {slots} gateway(s) restarting ({others}); "
                    "nothing changed here, the next run tries again"
                )
            log.info("waiting for a restart slot: %d gateway(s) restarting", slots)
            # Jitter, so that gateways that wait together do not retry together.
            time.sleep(pause * random.uniform(0.5, 1.5))  # noqa: S311 - spreading retries, not secrecy
            pause = min(pause * 2, 2.0)

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

    def confirm_mon(self) -> None:
        """StoreError unless a mon answers a command within `ceph.timeout`.

        radosgw needs a mon to start, while OSD operations (reading the set,
        taking a slot) work without one: this is what tells a deploy that a
        restart would not come back.
        """
        started = time.monotonic()
        try:
            ret, _, err = self._cluster.mon_command(json.dumps({"prefix": "mon stat", "format": "json"}), b"")
            problem = "" if ret == 0 else err.strip() or (os.strerror(-ret) if ret < 0 else str(ret))
        except rados.Error as e:
            problem = _reason(e)
        if problem:
            raise StoreError(
                f"ceph: no mon answered within {self.cfg.timeout:g}s "
                f"({problem} after {time.monotonic() - started:.1f}s)"
            )

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
            return raw.decode(errors="replace")
        if holder.host == _host() and not holder.dead_here():
            return f"{holder.describe()}, still running on this host"
        return holder.describe()

    def _renew(self, ioctx: Any, cookie: str) -> None:
        """Extend our issuer lock; rados.Error if it is no longer ours (ENOENT: lapsed, EBUSY: taken)."""
        ioctx.lock_exclusive(
            ISSUER_LOCK,
            ISSUER_LOCK_NAME,
            cookie,
            desc=Holder.me(cookie).describe(),
            duration=_seconds(self.cfg.lock_duration),
            flags=LOCK_FLAG_MUST_RENEW,
        )


class IssuerLock:
    """The issuer lock while we hold it: renewed in a thread until released, confirmed before a store.

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
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="issuer-lock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ioctx: Any = None
        try:
            ioctx = self._pool._cluster.open_ioctx(self._pool.cfg.pool)
            ioctx.set_namespace(NS_ISSUER)
            while not self._stop.wait(self._duration / 3):
                try:
                    self._pool._renew(ioctx, self._cookie)
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

    @classmethod
    def me(cls, cookie: str) -> Holder:
        pid = os.getpid()
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return cls(_host(), _boot_id(), pid, _process_start(pid) or 0, since, cookie)

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
            )
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"{self.host} pid {self.pid} since {self.since}"

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


def _name(ns: str, obj: str) -> str:
    return f"{ns}/{obj}" if ns else obj


def _reason(e: Exception) -> str:
    """librados errors carry errno text and a prefix; keep what an operator can act on."""
    text = str(e).strip() or type(e).__name__
    if isinstance(e, rados.PermissionError):
        return f"permission denied ({text}); check the user's caps"
    if isinstance(e, rados.TimedOut):
        return f"timed out ({text})"
    return text
