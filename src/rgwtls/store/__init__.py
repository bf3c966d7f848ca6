"""The RADOS pool: certificate sets, the ACME account, the issuer lock, the restart slots.

The pool's layout by namespace is in `rgwtls.store.layout`; each room of it
is a module of this package, and `Pool` is all of them on one connection.
The rest of rgwtls imports from here only.
"""

from __future__ import annotations

from rgwtls.store.announce import Announcements
from rgwtls.store.clslock import LOCK_FLAG_MUST_RENEW, LOCK_TYPE_EXCLUSIVE
from rgwtls.store.connection import MAX_OBJECT, Connection, TooLarge
from rgwtls.store.holder import HOLDER_LABEL, Holder
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
from rgwtls.store.locks import IssuerLock
from rgwtls.store.sets import SET_FORMAT, Basis, CertSet, Sets
from rgwtls.store.slots import Slots

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


class Pool(Sets, Slots, Announcements):
    """One connection to the cluster and one I/O context on the pool, with every room of the pool on it.

    The rooms are views of one connection, not objects of their own: cls_lock
    knows a lock's holder by its client instance, so the issuer lock, its
    leases and the fenced writes that assert them must share one cluster
    handle, and every call sets the shared I/O context's namespace itself.
    """
