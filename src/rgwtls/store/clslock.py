"""cls_lock's operations as Ceph encodes them, for a WriteOp.execute beside the write they guard.

python-rados takes and releases locks, but it cannot assert one inside
another write operation: that is what fences a write made under a lease
(a set under the issuer's lease, a restart under its slot). So the sets and
the slots build cls_lock's input themselves, here, in one encoding.
"""

from __future__ import annotations

# cls_lock's ClsLockType for an exclusive lock, as assert_locked wants it.
LOCK_TYPE_EXCLUSIVE = 1
# LIBRADOS_LOCK_FLAG_MUST_RENEW: renew only a lock we still hold (ENOENT if it
# lapsed, EBUSY if another took it); flag 1, MAY_RENEW, would quietly take a
# lapsed lock again although another issuer may have held it meanwhile.
LOCK_FLAG_MUST_RENEW = 2


def seconds(duration: float) -> int:
    """A lock's duration as cls_lock takes it: whole seconds, at least one."""
    return max(1, round(duration))


def assert_locked_op(name: str, cookie: str) -> bytes:
    """cls_lock_assert_op: name, type (exclusive), cookie, tag (empty, as rados_lock_exclusive sets it)."""
    return _encode(name, bytes([LOCK_TYPE_EXCLUSIVE]), cookie, "")


def renew_op(name: str, cookie: str, hold: float, desc: str) -> bytes:
    """cls_lock_lock_op renewing our lock: as above, then description, duration (s, ns) and MUST_RENEW."""
    duration = seconds(hold).to_bytes(4, "little") + bytes(4)
    return _encode(name, bytes([LOCK_TYPE_EXCLUSIVE]), cookie, "", desc, duration, bytes([LOCK_FLAG_MUST_RENEW]))


def _encode(*fields: str | bytes) -> bytes:
    """A struct as Ceph's ENCODE_START(1, 1) writes it: version, compat, length, each field (a string length first)."""
    body = b"".join(f if isinstance(f, bytes) else len(f.encode()).to_bytes(4, "little") + f.encode() for f in fields)
    return b"\x01\x01" + len(body).to_bytes(4, "little") + body
