"""cls_lock's inputs, byte for byte as Ceph decodes them (test_fence.py, test_deploy_slot.py run them on Ceph)."""

from __future__ import annotations

from rgwtls.store.clslock import assert_locked_op, renew_op, seconds


def test_assert_locked_names_the_lock_an_exclusive_type_the_cookie_and_an_empty_tag() -> None:
    body = b"\x02\x00\x00\x00lk" + b"\x01" + b"\x03\x00\x00\x00abc" + b"\x00\x00\x00\x00"
    assert assert_locked_op("lk", "abc") == b"\x01\x01" + len(body).to_bytes(4, "little") + body


def test_renewal_adds_the_description_the_whole_seconds_and_must_renew() -> None:
    head = assert_locked_op("lk", "abc")[6:]
    body = head + b"\x01\x00\x00\x00d" + (61).to_bytes(4, "little") + bytes(4) + b"\x02"
    assert renew_op("lk", "abc", 60.6, "d") == b"\x01\x01" + len(body).to_bytes(4, "little") + body


def test_a_lock_lasts_at_least_one_whole_second() -> None:
    assert [seconds(0.2), seconds(1.4), seconds(299.6)] == [1, 1, 300]
