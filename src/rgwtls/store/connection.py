"""The connection to the cluster and what it does with raw objects: read, write, remove, list; the mon.

Every room of the pool (`rgwtls.store.layout`) works through one `Connection`:
one cluster handle, because cls_lock knows a lock's holder by its client
instance, and one I/O context whose namespace each call sets for itself.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import rados

from rgwtls import unwatch
from rgwtls.config import CephConfig
from rgwtls.errors import StoreError
from rgwtls.store.layout import ANNOUNCE, NS_DEPLOY, object_name

# One read of this many bytes fetches any set whole, in one operation:
# Ioctx.read returns 8192 bytes unless told more, which cuts a 4096-bit key
# with a long chain.
MAX_OBJECT = 1 << 20
# librados' subsystems whose debug entries a long-lived connection need not keep in memory.
_QUIET = ("monc", "objecter", "rados", "ms", "auth", "mgrc", "timer", "finisher", "context", "crypto", "asok")


class TooLarge(StoreError):
    """An object past MAX_OBJECT: no set is, so it is not one of ours (rollout skips such a gateway record)."""


class Connection:
    """One connection to the cluster and one I/O context on the pool.

    Each room of the pool (`Sets`, `Locks`, `Slots`, `Announcements`) builds
    on it, and `rgwtls.store.Pool` is all of them on one connection.
    """

    def __init__(self, cfg: CephConfig) -> None:
        self.cfg = cfg
        self._cluster: Any = None
        self._ioctx: Any = None
        # The watch on the announcements, and watches whose close failed: this connection's to end (rgwtls.unwatch).
        self._watches: list[Any] = []
        self._kept: list[Any] = []

    def _describe(self) -> str:
        return f"pool {self.cfg.pool} as {self.cfg.user}"

    def connect(self, long_lived: bool = False) -> Self:
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
            raise StoreError(f"cannot open {self._describe()}: {reason(e)}") from None
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
        return f"{reason(e)}; check that the mons are up ('ceph -s') and the keyring is readable"

    def close(self) -> None:
        while self._watches:
            unwatch.close(self._watches.pop(), self._kept, f"the watch on {object_name(NS_DEPLOY, ANNOUNCE)}")
        ioctx, self._ioctx = self._ioctx, None
        cluster, self._cluster = self._cluster, None
        if ioctx is not None:
            ioctx.close()
        if cluster is not None:
            unwatch.drop(self._kept, cluster.shutdown)

    def __enter__(self) -> Self:
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
            raise StoreError(f"cannot read {object_name(ns, obj)} from {self._describe()}: {reason(e)}") from None
        if len(data) >= MAX_OBJECT:
            raise TooLarge(f"{object_name(ns, obj)} in pool {self.cfg.pool} is larger than {MAX_OBJECT} bytes")
        return data

    def write(self, ns: str, obj: str, data: bytes) -> None:
        """Replace the object whole, in one atomic operation."""
        self._ioctx.set_namespace(ns)
        try:
            with rados.WriteOpCtx() as op:
                op.write_full(data)
                self._ioctx.operate_write_op(op, obj)
        except rados.Error as e:
            raise StoreError(f"cannot write {object_name(ns, obj)} to {self._describe()}: {reason(e)}") from None

    def remove(self, ns: str, obj: str) -> None:
        self._ioctx.set_namespace(ns)
        try:
            self._ioctx.remove_object(obj)
        except rados.ObjectNotFound:
            pass
        except rados.Error as e:
            raise StoreError(f"cannot remove {object_name(ns, obj)} from {self._describe()}: {reason(e)}") from None

    # -- the mon config-key store (deploy's config-key layout) -----------------

    def _mon(self, cmd: dict[str, str], inbuf: bytes = b"") -> tuple[int, bytes, str]:
        try:
            ret, out, err = self._cluster.mon_command(json.dumps(cmd), inbuf)
        except rados.Error as e:
            raise StoreError(f"mon command {cmd['prefix']} failed: {reason(e)}") from None
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
            raise StoreError(f"cannot list namespace {ns} of {self._describe()}: {reason(e)}") from None
        return sorted(found, key=lambda k: k.encode() if isinstance(k, str) else k)

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
            problem = reason(e)
        if problem:
            raise StoreError(
                f"ceph: no mon answered within {self.cfg.timeout:g}s "
                f"({problem} after {time.monotonic() - started:.1f}s)"
            )

    def probe(self, pool: str, obj: str) -> str:
        """How a stat of `obj` in another pool (radosgw's, for health.py) ends within this connection's timeout.

        "present" or "absent" when its PG answered; "no pool", "denied" (the
        user's caps), or librados' reason ("timed out").
        """

        def stat(ioctx: rados.Ioctx) -> str:
            try:
                ioctx.stat(obj)
            except rados.ObjectNotFound:
                return "absent"
            return "present"

        return self._answer(pool, stat)

    def probe_write(self, pool: str, obj: str, beside: str) -> str:
        """How a write of our own `obj`, placed in the PG of `beside` (its locator key), ends: "ok", "denied", a reason.

        One operation creates and removes it: the PG logs a write, and nothing
        is left in the pool, whatever happens to this run after.
        """

        def write(ioctx: rados.Ioctx) -> str:
            ioctx.set_locator_key(beside)
            with rados.WriteOpCtx() as op:
                op.write_full(b"")
                op.remove()
                ioctx.operate_write_op(op, obj)
            return "ok"

        return self._answer(pool, write)

    def _answer(self, pool: str, op: Callable[[rados.Ioctx], str]) -> str:
        """A probe's answer as health.py tells them apart: the op's own, "no pool", "denied", or librados' reason.

        Never an exception: a pool that does not answer is what the probe is there to find.
        """
        try:
            ioctx = self._cluster.open_ioctx(pool)
        except rados.ObjectNotFound:
            return "no pool"
        except rados.Error as e:
            return reason(e)
        try:
            return op(ioctx)
        except (rados.PermissionError, rados.PermissionDeniedError):
            return "denied"
        except rados.Error as e:
            return reason(e)
        finally:
            ioctx.close()


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


def reason(e: Exception) -> str:
    """librados errors carry errno text and a prefix; keep what an operator can act on."""
    text = str(e).strip() or type(e).__name__
    if isinstance(e, rados.PermissionError):
        return f"permission denied ({text}); check the user's caps"
    if isinstance(e, rados.TimedOut):
        return f"timed out ({text})"
    return text
