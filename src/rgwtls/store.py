"""The certificate sets, the ACME account and the issuer lock, in the RADOS pool.

Layout of the pool (default `rgwtls`), by RADOS namespace:

- `""` (default): production sets, readable by every gateway.
  `<name>/current` and `<name>/previous` hold a whole set (key, cert, chain
  and metadata) as one JSON object, each written by one RADOS operation so
  that no reader ever sees the key of one generation with the cert of another.
  The first configured certificate is also written as the seed's
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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import rados

from rgwtls.config import CephConfig
from rgwtls.errors import LockHeld, StoreError

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

    def to_bytes(self) -> bytes:
        doc = {"format": SET_FORMAT, **dataclasses.asdict(self)}
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> CertSet:
        try:
            doc = json.loads(data)
            if doc.pop("format") != SET_FORMAT:
                raise ValueError("unknown format")
            doc["domains"] = tuple(doc["domains"])
            doc["generation"] = int(doc["generation"])
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
            for obj, pem in zip(LEGACY_OBJECTS, (new.key_pem, new.cert_pem, new.chain_pem), strict=True):
                self.write(ns, obj, pem.encode())

    # -- the issuer lock -----------------------------------------------------

    def _try_lock(self, ns: str, obj: str, name: str, duration: float, what: str) -> str | None:
        """Take an exclusive RADOS lock that expires by itself; its cookie, or None if another holds it.

        The holder is written beside the lock, so that whoever finds it taken
        can say by whom.
        """
        import secrets

        cookie = secrets.token_hex(8)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        holder = f"{os.uname().nodename} pid {os.getpid()} since {since}"
        self._ioctx.set_namespace(ns)
        try:
            self._ioctx.lock_exclusive(obj, name, cookie, desc=holder, duration=int(duration))
        except rados.ObjectBusy:
            return None
        except rados.Error as e:
            raise StoreError(f"cannot take {what} in {self._describe()}: {_reason(e)}") from None
        with contextlib.suppress(rados.Error):
            self._ioctx.set_xattr(obj, "holder", holder.encode())
        return cookie

    def _unlock(self, ns: str, obj: str, name: str, cookie: str, what: str) -> None:
        self._ioctx.set_namespace(ns)
        try:
            self._ioctx.unlock(obj, name, cookie)
        except rados.Error as e:
            log.warning("could not release %s (it expires by itself): %s", what, _reason(e))

    @contextlib.contextmanager
    def issuer_lock(self) -> Iterator[None]:
        """A cluster-wide exclusive lock, so that two issuers never run at once, whoever started them."""
        obj, name, what = "issuer.lock", "rgwtls-issuer", "the issuer lock"
        cookie = self._try_lock(NS_ISSUER, obj, name, self.cfg.lock_duration, what)
        if cookie is None:
            raise LockHeld(
                f"another issuer holds the lock in pool {self.cfg.pool} ({self._lock_holder(obj)}); "
                "nothing issued. It expires by itself after "
                f"{int(self.cfg.lock_duration)}s if that issuer died"
            )
        try:
            yield
        finally:
            self._unlock(NS_ISSUER, obj, name, cookie, what)

    @contextlib.contextmanager
    def restart_slot(self, slots: int, wait: float, hold: float) -> Iterator[None]:
        """One of `slots` fleet-wide restart slots: a counting semaphore made of RADOS locks.

        Each slot is an exclusive lock that expires after `hold` seconds, so a
        gateway that dies while restarting frees its slot by itself.
        """
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
                    yield
                finally:
                    self._unlock(NS_DEPLOY, obj, name, cookie, what)
                return
            if time.monotonic() >= deadline:
                others = ", ".join(self._lock_holder(f"restart-slot.{i}") for i in range(slots))
                raise LockHeld(
                    f"no restart slot free within {wait:g}s: {slots} gateway(s) restarting ({others}); "
                    "nothing changed here, the next run tries again"
                )
            log.info("waiting for a restart slot: %d gateway(s) restarting", slots)
            # Jitter, so that gateways that wait together do not retry together.
            time.sleep(pause * random.uniform(0.5, 1.5))  # noqa: S311 - spreading retries, not secrecy
            pause = min(pause * 2, 2.0)

    def _lock_holder(self, obj: str) -> str:
        try:
            return str(self._ioctx.get_xattr(obj, "holder").decode())
        except rados.Error:
            return "holder unknown"


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
