"""Fenced set writes against the real cluster: an issuer whose lease lapsed writes nothing, whatever it checked before.

A frozen process is one whose lease nobody renews: these tests stop the
renewal thread (what SIGSTOP does to it) and then let the "frozen" issuer
write straight away, past every check it would make first, so that only the
fence in the RADOS operation itself stands in its way.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator

import pytest

from devsite.certmaker import make_cert
from rgwtls.config import CephConfig
from rgwtls.errors import Fenced, IssuerBusy
from rgwtls.store import NS_PRODUCTION, CertSet, IssuerLock, Pool
from tests import waits
from tests.conftest import POOL, Stack

NAME = "fence.example.org"
CURRENT = f"{NAME}/current"


def ceph_config(stack: Stack, lock_duration: float = 2.0) -> CephConfig:
    """The pool's config with a short lock: these tests wait for a frozen issuer's lease to lapse, as only time does.

    Not the 1 s cls_lock would keep: under scripts/cpu-hog a live issuer then
    misses a renewal (every third of it) and loses the lock it still uses.
    """
    return CephConfig(**{**stack.settings()["ceph"], "lock_duration": lock_duration})


def a_set(generation: int, by: str) -> CertSet:
    now = dt.datetime.now(dt.UTC)
    key, cert = make_cert((NAME,), now - dt.timedelta(hours=1), now + dt.timedelta(days=30))
    return CertSet(NAME, generation, key, cert, "", (NAME,), now.isoformat(), by, "https://ca.example/dir")


def stored_current(stack: Stack, which: str = "current") -> dict[str, object]:
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    try:
        doc: dict[str, object] = json.loads(ioctx.read(f"{NAME}/{which}", 1 << 20))
        return doc
    finally:
        ioctx.close()


def freeze(lock: IssuerLock) -> None:
    """What SIGSTOP does to the lease: nothing renews it any more."""
    lock._stop.set()
    lock._thread.join(5)


def wait_until_lapsed(pool: Pool) -> None:
    """Until another issuer could take the lock: a frozen issuer's lapses (cls_lock expires it a little late)."""

    def taken() -> bool:
        try:
            with pool.issuer_lock():
                return True
        except IssuerBusy:
            return False

    bound = pool.cfg.lock_duration + pool.cfg.timeout
    waits.wait_for("the frozen issuer's lock lapsed", taken, bound, why="ceph.lock_duration and ceph.timeout")


def store_as_issuer(pool: Pool, generation: int, by: str) -> CertSet:
    with pool.issuer_lock() as lock:
        lock.claim(NS_PRODUCTION, CURRENT)
        assert pool.basis(NAME, False).next_generation == generation
        new = a_set(generation, by)
        pool.write_set(new, False, False, lock.lease(NS_PRODUCTION, CURRENT))
        return new


@pytest.fixture
def pools(stack: Stack) -> Iterator[tuple[Pool, Pool]]:
    with Pool(ceph_config(stack)) as a, Pool(ceph_config(stack)) as b:
        yield a, b


def test_issuer_frozen_past_its_lock_cannot_overwrite_the_set_another_issuer_stored(
    stack: Stack, pools: tuple[Pool, Pool]
) -> None:
    a, b = pools
    store_as_issuer(a, 1, "first")
    with a.issuer_lock() as frozen:
        frozen.claim(NS_PRODUCTION, CURRENT)
        basis = a.basis(NAME, False)
        assert basis.next_generation == 2
        freeze(frozen)
        wait_until_lapsed(b)  # past lock_duration: the lock and the lease lapse
        stored = store_as_issuer(b, 2, "standby")
        # The frozen issuer wakes after its last check and writes at once.
        with pytest.raises(Fenced, match=r"lease on fence\.example\.org/current in pool rgwtls is gone"):
            a.write_set(a_set(2, "frozen"), False, True, frozen.lease(NS_PRODUCTION, CURRENT))
    current = stored_current(stack)
    assert current["issued_by"] == "standby"
    assert current["cert_pem"] == stored.cert_pem
    assert current["generation"] == 2
    assert stored_current(stack, "previous")["issued_by"] == "first"


def test_issuer_frozen_while_another_holds_the_lock_writes_nothing_before_the_other_stores(
    stack: Stack, pools: tuple[Pool, Pool]
) -> None:
    a, b = pools
    store_as_issuer(a, 1, "first")
    with a.issuer_lock() as frozen:
        frozen.claim(NS_PRODUCTION, CURRENT)
        freeze(frozen)
        wait_until_lapsed(b)
        with b.issuer_lock() as other:
            other.claim(NS_PRODUCTION, CURRENT)  # the lease lapsed, or is broken: it is the other's now
            with pytest.raises(Fenced):
                a.write_set(a_set(2, "frozen"), False, False, frozen.lease(NS_PRODUCTION, CURRENT))
            b.write_set(a_set(2, "standby"), False, False, other.lease(NS_PRODUCTION, CURRENT))
    assert stored_current(stack)["issued_by"] == "standby"


def test_first_set_is_written_by_one_issuer_only(stack: Stack, pools: tuple[Pool, Pool]) -> None:
    """No `current` to hold a lease on: the write creates it exclusively, so the second of two writers fails."""
    a, b = pools
    with a.issuer_lock() as lock:
        lock.claim(NS_PRODUCTION, CURRENT)
        lease = lock.lease(NS_PRODUCTION, CURRENT)
        assert lease == ""
        freeze(lock)
        wait_until_lapsed(b)
        store_as_issuer(b, 1, "standby")
        with pytest.raises(Fenced, match="created by another issuer"):
            a.write_set(a_set(1, "frozen"), False, False, lease)
    assert stored_current(stack)["issued_by"] == "standby"


def test_write_from_an_older_decision_is_refused_and_generations_only_grow(
    stack: Stack, pools: tuple[Pool, Pool]
) -> None:
    a, _ = pools
    store_as_issuer(a, 1, "first")
    store_as_issuer(a, 2, "second")
    with a.issuer_lock() as lock:
        lock.claim(NS_PRODUCTION, CURRENT)
        # Still holding the lease, but deciding from generation 1 (a memory, not the pool).
        with pytest.raises(Fenced, match="already holds generation 2"):
            a.write_set(a_set(2, "stale"), False, True, lock.lease(NS_PRODUCTION, CURRENT))
    assert stored_current(stack)["issued_by"] == "second"


def test_corrupt_current_is_replaced_by_a_higher_generation_than_it_ever_held(
    stack: Stack, pools: tuple[Pool, Pool]
) -> None:
    a, _ = pools
    store_as_issuer(a, 1, "first")
    store_as_issuer(a, 2, "second")
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    try:
        ioctx.write_full(CURRENT, b"not a set")  # the fence (its omap) stays
    finally:
        ioctx.close()
    with a.issuer_lock() as lock:
        lock.claim(NS_PRODUCTION, CURRENT)
        basis = a.basis(NAME, False)
        assert basis.current is None
        assert basis.problem is not None
        assert "not a valid rgwtls certificate set" in basis.problem
        assert basis.next_generation == 3
        a.write_set(a_set(3, "third"), False, False, lock.lease(NS_PRODUCTION, CURRENT))
    assert stored_current(stack)["generation"] == 3


def test_lease_on_the_set_is_released_with_the_lock(stack: Stack, pools: tuple[Pool, Pool]) -> None:
    a, b = pools
    store_as_issuer(a, 1, "first")
    with a.issuer_lock() as lock:
        lock.claim(NS_PRODUCTION, CURRENT)
    started = time.monotonic()
    store_as_issuer(b, 2, "next")  # no lease left to wait out or break
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("existed", [False, True], ids=["new record", "existing record"])
def test_record_replaced_under_a_lease_is_refused_to_an_issuer_frozen_past_it(
    stack: Stack, pools: tuple[Pool, Pool], existed: bool
) -> None:
    """`fenced_replace` (revoke's record and journal): the frozen writer's operation itself is refused."""
    a, b = pools
    obj = "fence-record"
    if existed:
        with a.issuer_lock() as first:
            first.claim(NS_PRODUCTION, obj)
            a.fenced_replace(NS_PRODUCTION, obj, b"first", first.lease(NS_PRODUCTION, obj))
    with a.issuer_lock() as frozen:
        frozen.claim(NS_PRODUCTION, obj)
        freeze(frozen)
        wait_until_lapsed(b)
        with b.issuer_lock() as other:
            other.claim(NS_PRODUCTION, obj)
            b.fenced_replace(NS_PRODUCTION, obj, b"standby", other.lease(NS_PRODUCTION, obj))
            with pytest.raises(Fenced):
                a.fenced_replace(NS_PRODUCTION, obj, b"frozen", frozen.lease(NS_PRODUCTION, obj))
    assert a.read(NS_PRODUCTION, obj) == b"standby"
