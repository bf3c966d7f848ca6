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
import contextvars
import dataclasses
import errno
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rados

from rgwtls import unwatch
from rgwtls.config import CephConfig
from rgwtls.errors import Fenced, IssuerBusy, LockHeld, StoreError
from rgwtls.log import notice
from rgwtls.scrub import clean

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
# Namespace deploy: the object `issue` notifies after storing and `deploy --watch` watches.
ANNOUNCE = "announce"
ISSUER_LOCK = "issuer.lock"
ISSUER_LOCK_NAME = "rgwtls-issuer"
HOLDER_XATTR = "holder"
SLOT_LOCK = "rgwtls-restart"
# librados' subsystems whose debug entries a long-lived connection need not keep in memory.
_QUIET = ("monc", "objecter", "rados", "ms", "auth", "mgrc", "timer", "finisher", "context", "crypto", "asok")
# Set by whoever knows which service of the host this process acts for (fleet: the
# gateway's endpoint), so that a slot's holder record names the gateway, not only its host.
HOLDER_LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("HOLDER_LABEL", default="")
# LIBRADOS_LOCK_FLAG_MUST_RENEW: renew only a lock we still hold (ENOENT if it
# lapsed, EBUSY if another took it); flag 1, MAY_RENEW, would quietly take a
# lapsed lock again although another issuer may have held it meanwhile.
LOCK_FLAG_MUST_RENEW = 2
# cls_lock's ClsLockType for an exclusive lock, as assert_locked wants it.
LOCK_TYPE_EXCLUSIVE = 1
# The omap key of every set object that holds its generation: the fence of `fenced_write`.
FENCE_KEY = "generation"


class TooLarge(StoreError):
    """An object past MAX_OBJECT: no set is, so it is not one of ours (rollout skips such a gateway record)."""


@dataclass(frozen=True)
class Basis:
    """What an issuer decided from: `current` (None if absent or unusable) and the generation a new set follows."""

    current: CertSet | None
    generation: int
    problem: str | None = None

    @property
    def next_generation(self) -> int:
        return self.generation + 1


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
        # The watch on the announcements, and watches whose close failed: this connection's to end (rgwtls.unwatch).
        self._watches: list[Any] = []
        self._kept: list[Any] = []

    def _describe(self) -> str:
        return f"pool {self.cfg.pool} as {self.cfg.user}"

    def connect(self, long_lived: bool = False) -> Pool:
        """Connect and open the pool; `long_lived`: a connection that idles for hours (the watcher's watch).

        librados formats debug entries it keeps in memory (for a crash dump)
        at every tick of its mon session and its watches: a long-lived
        connection keeps none unless --debug. Its ticks stay as they are:
        with 30 s ticks (and a watch timeout beyond them) a watch that a
        whole-cluster outage broke went unnoticed for over a minute and the
        notifies meanwhile were lost, while the idle CPU did not measurably
        drop: the mon session's own upkeep is most of it (docs/performance.md).
        """
        timeout = str(int(max(1, self.cfg.timeout)))
        conf = {
            "client_mount_timeout": timeout,
            "rados_mon_op_timeout": timeout,
            "rados_osd_op_timeout": timeout,
        }
        debug = logging.getLogger("rgwtls").isEnabledFor(logging.DEBUG)
        if not debug:
            # librados writes its own lines to stderr (six for a missing
            # keyring, each blaming nothing in particular): cron mail gets
            # rgwtls's one line instead, which names the cause. --debug keeps them.
            conf.update(log_to_stderr="false", err_to_stderr="false", log_to_file="false", log_file="")
        if long_lived and not debug:
            conf.update({f"debug_{sub}": "0/0" for sub in _QUIET})
        if self.cfg.keyring:
            conf["keyring"] = self.cfg.keyring
            unusable = _unusable_keyring(Path(self.cfg.keyring))
            if unusable is not None:
                raise StoreError(f"ceph.keyring: {unusable}; nothing was changed")
        started = time.monotonic()
        try:
            self._cluster = rados.Rados(conffile=self.cfg.conf, name=self.cfg.user, conf=conf)
            self._cluster.connect(timeout=int(timeout))
        except rados.Error as e:
            self.close()
            raise StoreError(
                f"cannot connect to the Ceph cluster (conf {self.cfg.conf}, user {self.cfg.user}) "
                f"after {time.monotonic() - started:.1f}s: {self._connect_failure(e)}"
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

    def _connect_failure(self, e: rados.Error) -> str:
        """What librados' errno means at connect, where its own words (now silenced) would have said it."""
        code = getattr(e, "errno", None)
        keyring = self.cfg.keyring or "the default keyring paths (/etc/ceph/ceph.USER.keyring, ...)"
        if code == errno.ENOENT and self.cfg.keyring:
            # The file is there and readable (checked before): Tentacle says ENOENT for one that does not parse.
            fix = f"write it with 'ceph auth get {self.cfg.user}'"
            return (
                f"keyring {keyring} is not a Ceph keyring for {self.cfg.user} (it holds no key of this user's); {fix}"
            )
        if code == errno.ENOENT:
            return f"no keyring for {self.cfg.user} in {keyring}; set ceph.keyring to its file"
        if code == errno.EISDIR:
            return f"keyring {keyring} is a directory; set ceph.keyring to the keyring file in it"
        if code == errno.EIO:
            fix = f"write it with 'ceph auth get {self.cfg.user}'"
            return f"keyring {keyring} is not a Ceph keyring (it does not parse); {fix}"
        if code == errno.EACCES:
            return (
                f"the cluster refused the key of {self.cfg.user} from {keyring} (revoked, or not this user's); "
                f"compare it with 'ceph auth get {self.cfg.user}'"
            )
        return f"{_reason(e)}; check that the mons are up ('ceph -s') and the keyring is readable"

    def close(self) -> None:
        while self._watches:
            unwatch.close(self._watches.pop(), self._kept, f"the watch on {_name(NS_DEPLOY, ANNOUNCE)}")
        ioctx, self._ioctx = self._ioctx, None
        cluster, self._cluster = self._cluster, None
        if ioctx is not None:
            ioctx.close()
        if cluster is not None:
            unwatch.drop(self._kept, cluster.shutdown)

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
            raise TooLarge(f"{_name(ns, obj)} in pool {self.cfg.pool} is larger than {MAX_OBJECT} bytes")
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

    def basis(self, name: str, staging: bool) -> Basis:
        """What an issuer decides from: the set in `current`, and the highest generation the object ever held.

        The generation comes from the object's fence (see `fenced_write`), so a
        corrupt `current` is still replaced by a higher generation, never a lower one.
        """
        ns = self.set_namespace(staging)
        obj = f"{name}/current"
        problem = None
        try:
            current = self.read_set(name, staging)
        except StoreError as e:
            current, problem = None, str(e)
        fenced = self._fence_of(ns, obj)
        return Basis(current, max(fenced, current.generation if current else 0), problem)

    def write_set(self, new: CertSet, staging: bool, legacy: bool, lease: str | None) -> None:
        """Store a new generation, keeping the one it replaces as `previous`; every write is fenced.

        `current` is written whole in one operation, so a reader sees the old
        set or the new one. That write holds only while `lease` (the issuer's
        cookie on `current`; "" if `current` did not exist when the issuer
        decided) is still ours and the object holds an older generation: an
        issuer frozen past its lock writes nothing. `previous` follows, fenced
        so that it never goes back a generation; a crash between the two
        leaves `previous` one generation behind, never wrong.
        """
        ns = self.set_namespace(staging)
        cur, prev = f"{new.name}/current", f"{new.name}/previous"
        old = self.read(ns, cur)
        self.fenced_write(ns, cur, new.to_bytes(), new.generation, below=new.generation, lease=lease or "")
        if old is not None:
            try:
                old_generation = CertSet.from_bytes(old, cur).generation
            except StoreError:
                old_generation = 0  # a corrupt set is no fallback: `previous` keeps what it had
            if old_generation:
                try:
                    self.fenced_write(ns, prev, old, old_generation, below=old_generation + 1)
                except Fenced as e:
                    log.info("%s holds a newer set than the one replaced (%s); it keeps it", prev, e)
        if legacy:
            self.write_legacy(new, staging)

    def write_legacy(self, new: CertSet, staging: bool) -> None:
        """The legacy objects `privkey.pem`, `cert.pem`, `chain.pem`, for `rados get` and old scripts.

        Written after `current`, so a crash can skip them; each is fenced, so
        a frozen issuer never puts an older key back.
        """
        ns = self.set_namespace(staging)
        for obj, pem in zip(LEGACY_OBJECTS, (new.key_pem, new.cert_pem, new.chain_pem), strict=True):
            self.fenced_write(ns, obj, pem.encode(), new.generation, below=new.generation + 1)

    def fenced_write(
        self, ns: str, obj: str, data: bytes, generation: int, below: int, lease: str | None = None
    ) -> None:
        """Replace the object whole, in ONE operation that holds only if the object's generation is below `below`.

        The generation is kept in the object's omap under `generation`, zero
        padded so that omap_cmp's byte order is numeric order, and set in the
        same operation. `lease`, if given, is also asserted in that operation:
        a cookie (cls_lock's assert_locked on the object), or "" for an object
        that did not exist when the writer decided, which must still not exist.
        """
        self._ioctx.set_namespace(ns)
        try:
            with rados.WriteOpCtx() as op:
                if lease:
                    op.execute("lock", "assert_locked", _assert_locked_op(ISSUER_LOCK_NAME, lease))
                elif lease == "":
                    op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
                else:
                    op.new(rados.LIBRADOS_CREATE_IDEMPOTENT)  # omap_cmp needs an object to compare with
                op.omap_cmp(FENCE_KEY, _fence(below), rados.LIBRADOS_CMPXATTR_OP_LT)
                self._ioctx.set_omap(op, (FENCE_KEY,), (_fence(generation).encode(),))
                op.write_full(data)
                self._ioctx.operate_write_op(op, obj)
        except rados.Error as e:
            where = f"{_name(ns, obj)} in pool {self.cfg.pool}"
            code = getattr(e, "errno", None)
            if code == errno.ECANCELED:
                raise Fenced(
                    f"{where} already holds generation {self._fence_of(ns, obj)}, not one below {below}: "
                    "another issuer stored meanwhile, so this run wrote nothing"
                ) from None
            if code == errno.EBUSY:
                raise Fenced(
                    f"this run's lease on {where} is gone (it lapsed or another issuer took it), so it wrote nothing"
                ) from None
            if code == errno.EEXIST:
                raise Fenced(f"{where} was created by another issuer meanwhile, so this run wrote nothing") from None
            raise StoreError(f"cannot write {_name(ns, obj)} to {self._describe()}: {_reason(e)}") from None

    def fenced_replace(self, ns: str, obj: str, data: bytes, lease: str) -> None:
        """Replace a small record under the issuer's `lease`, its fence one up: Fenced if anyone wrote it meanwhile."""
        generation = self._fence_of(ns, obj) + 1
        self.fenced_write(ns, obj, data, generation, below=generation, lease=lease)

    def _fence_of(self, ns: str, obj: str) -> int:
        """The generation an object's fence holds; 0 for none (an absent object, or one stored before fencing)."""
        self._ioctx.set_namespace(ns)
        try:
            with rados.ReadOpCtx() as op:
                values, _ = self._ioctx.get_omap_vals_by_keys(op, (FENCE_KEY,))
                self._ioctx.operate_read_op(op, obj)
                raw = dict(values).get(FENCE_KEY)
        except rados.ObjectNotFound:
            return 0
        except rados.Error as e:
            raise StoreError(f"cannot read {_name(ns, obj)} from {self._describe()}: {_reason(e)}") from None
        try:
            return int(raw) if raw else 0
        except ValueError:
            return 0

    def names(self, ns: str, prefix: str) -> list[str | bytes]:
        """The namespace's object names that start with `prefix`, sorted; a name that is not UTF-8 as its bytes.

        A deploy user may create any name in `deploy` (the rados CLI takes
        any bytes). python-rados decodes each name and raises on one that is
        not UTF-8, after its cursor moved past it: the listing goes on, and
        the name is kept as bytes, to be named in a warning (python-rados
        cannot read or remove it: its calls take names as str only).
        """
        self._ioctx.set_namespace(ns)
        found: list[str | bytes] = []
        try:
            listing = iter(self._ioctx.list_objects())
            while True:
                try:
                    key: str | bytes = next(listing).key
                except StopIteration:
                    break
                except UnicodeDecodeError as e:
                    key = bytes(e.object)
                if key.startswith(prefix) if isinstance(key, str) else key.startswith(prefix.encode()):
                    found.append(key)
        except rados.Error as e:
            raise StoreError(f"cannot list namespace {ns} of {self._describe()}: {_reason(e)}") from None
        return sorted(found, key=lambda k: k.encode() if isinstance(k, str) else k)

    # -- the fleet's notifications: `issue` announces, `deploy --watch` listens ----------

    def announce(self, name: str, generation: int, staging: bool) -> int | None:
        """Tell every watching gateway that a new set is stored; how many heard, or None if nobody could.

        A push only makes the fleet faster: no watcher, no object yet (no
        gateway ever watched), or a cap missing is fine, and cron converges.
        """
        self._ioctx.set_namespace(NS_DEPLOY)
        msg = json.dumps({"name": name, "generation": generation, "staging": staging})
        try:
            self._ioctx.notify(ANNOUNCE, msg, timeout_ms=int(min(self.cfg.timeout, 5.0) * 1000))
        except rados.Error as e:
            log.info("no gateway was told of generation %d at once (%s); their cron finds it", generation, _reason(e))
            return None
        return 1

    def watch(self, callback: Callable[[], None], lost: Callable[[str], None]) -> None:
        """Watch the fleet's announcements (creating their object if need be), until `close`.

        `callback` runs in librados' thread on every notify; `lost` when the
        watch broke (the cluster was unreachable past its timeout): the
        watcher then connects and watches again.
        """
        self._ioctx.set_namespace(NS_DEPLOY)
        try:
            with rados.WriteOpCtx() as op:
                op.new(rados.LIBRADOS_CREATE_IDEMPOTENT)
                self._ioctx.operate_write_op(op, ANNOUNCE)
            handle = self._ioctx.watch(
                ANNOUNCE,
                lambda *_: callback(),
                # librados calls it with the watch's id, then the (negative) errno.
                lambda *args: lost(f"the watch broke ({_errno_text(args[-1] if args else 0)})"),
                timeout=int(max(self.cfg.timeout, 5)),
            )
        except rados.Error as e:
            raise StoreError(f"cannot watch {_name(NS_DEPLOY, ANNOUNCE)} in {self._describe()}: {_reason(e)}") from None
        # Only the connection holds the handle: one whose close fails must outlive the shutdown (rgwtls.unwatch).
        self._watches.append(handle)

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

    def probe(self, pool: str, obj: str) -> str:
        """How a stat of `obj` in another pool (radosgw's, for health.py) ends within this connection's timeout.

        "ok" when its PG answered, the object there or not; "no pool", "denied"
        (the user's caps), or librados' reason ("timed out").
        """
        try:
            ioctx = self._cluster.open_ioctx(pool)
        except rados.ObjectNotFound:
            return "no pool"
        except rados.Error as e:
            return _reason(e)
        try:
            ioctx.stat(obj)
        except rados.ObjectNotFound:
            pass
        except (rados.PermissionError, rados.PermissionDeniedError):
            return "denied"
        except rados.Error as e:
            return _reason(e)
        finally:
            ioctx.close()
        return "ok"

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


def _unusable_keyring(path: Path) -> str | None:
    """Why librados could not use this keyring file, said as an operator fixes it; None if it looks usable."""
    import pwd

    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as e:
        return f"cannot look at {path}: {e.strerror}"
    if path.is_dir():
        return f"{path} is a directory, not a keyring file"
    if not os.access(path, os.R_OK):
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = str(st.st_uid)
        try:
            me = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            me = str(os.geteuid())
        return f"{path} (owner {owner}, mode {st.st_mode & 0o7777:04o}) is not readable by {me}, whom rgwtls runs as"
    return None


def _errno_text(err: object) -> str:
    try:
        code = abs(int(err))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return str(err)
    return f"{errno.errorcode.get(code, 'errno')} {code}: {os.strerror(code)}"


def _fence(generation: int) -> str:
    return f"{generation:020d}"


def _encoded(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<I", len(raw)) + raw


def _assert_locked_op(name: str, cookie: str) -> bytes:
    """cls_lock_assert_op as Ceph encodes it (ENCODE_START(1, 1): name, type, cookie, tag), for WriteOp.execute."""
    body = _encoded(name) + bytes([LOCK_TYPE_EXCLUSIVE]) + _encoded(cookie) + _encoded("")
    return bytes([1, 1]) + struct.pack("<I", len(body)) + body


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
