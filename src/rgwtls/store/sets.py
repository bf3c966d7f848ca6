"""Certificate sets: one generation of a certificate, stored whole, and the fenced writes that keep it whole.

A set is one JSON object (`CertSet`) written by one RADOS operation, so that
no reader sees the key of one generation with the cert of another. Every
write carries the object's generation as its fence, and the issuer's lease
(`rgwtls.store.locks`), in the same operation: an issuer frozen past its lock
writes nothing.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
from dataclasses import dataclass

import rados

from rgwtls.errors import Fenced, StoreError
from rgwtls.store.clslock import assert_locked_op
from rgwtls.store.connection import Connection, reason
from rgwtls.store.layout import FENCE_KEY, ISSUER_LOCK_NAME, LEGACY_OBJECTS, NS_PRODUCTION, NS_STAGING, object_name

# The name the pool's lines have always carried, whichever of its modules logs them.
log = logging.getLogger("rgwtls.store")

SET_FORMAT = "rgwtls-set/1"


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


class Sets(Connection):
    """The certificate sets of the pool's set namespaces, read whole and written fenced."""

    @staticmethod
    def set_namespace(staging: bool) -> str:
        return NS_STAGING if staging else NS_PRODUCTION

    def read_set(self, name: str, staging: bool = False, which: str = "current") -> CertSet | None:
        ns = self.set_namespace(staging)
        data = self.read(ns, f"{name}/{which}")
        if data is None:
            return None
        return CertSet.from_bytes(data, f"{object_name(ns, f'{name}/{which}')} in pool {self.cfg.pool}")

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
                    op.execute("lock", "assert_locked", assert_locked_op(ISSUER_LOCK_NAME, lease))
                elif lease == "":
                    op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
                else:
                    op.new(rados.LIBRADOS_CREATE_IDEMPOTENT)  # omap_cmp needs an object to compare with
                op.omap_cmp(FENCE_KEY, _fence(below), rados.LIBRADOS_CMPXATTR_OP_LT)
                self._ioctx.set_omap(op, (FENCE_KEY,), (_fence(generation).encode(),))
                op.write_full(data)
                self._ioctx.operate_write_op(op, obj)
        except rados.Error as e:
            where = f"{object_name(ns, obj)} in pool {self.cfg.pool}"
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
            raise StoreError(f"cannot write {object_name(ns, obj)} to {self._describe()}: {reason(e)}") from None

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
            raise StoreError(f"cannot read {object_name(ns, obj)} from {self._describe()}: {reason(e)}") from None
        try:
            return int(raw) if raw else 0
        except ValueError:
            return 0


def _fence(generation: int) -> str:
    return f"{generation:020d}"
