"""Waiting for the challenge values at the real BIND, through `rgwtls issue` with Pebble and Ceph."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import pytest

from devsite.bind import Bind
from tests.conftest import POOL, ZONE, Result, Stack

CLI = Callable[..., Result]
CHALLENGE = f"_acme-challenge.{ZONE}"
# What another tool left at the challenge name: `"\255\254 legacy-binary-token"` in zone-file syntax.
LEGACY = b"\xad\xac legacy-binary-token"


def _legacy_rdata() -> dns.rdtypes.ANY.TXT.TXT:
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [LEGACY])


@pytest.fixture
def legacy_binary_txt(stack: Stack) -> Iterator[Bind]:
    """BIND holds a non-UTF-8 TXT value at the challenge name for the test, and not after it."""
    bind = stack.bind
    owner = dns.name.from_text(CHALLENGE + ".")
    upd = bind.signed_update(bind.zone_of(CHALLENGE))
    upd.add(owner, 60, _legacy_rdata())
    bind.send_update(upd)
    try:
        yield bind
    finally:
        upd = bind.signed_update(bind.zone_of(CHALLENGE))
        upd.delete(owner, _legacy_rdata())
        bind.send_update(upd)


def _raw_txt(bind: Bind) -> set[bytes]:
    return {b"".join(rd.strings) for rrset in bind.query(CHALLENGE).answer for rd in rrset}


def test_a_foreign_non_utf8_txt_value_does_not_block_issuance(stack: Stack, legacy_binary_txt: Bind, cli: CLI) -> None:
    assert _raw_txt(legacy_binary_txt) == {LEGACY}
    res = cli(stack.write_config(stack.settings()), "issue")
    assert res.code == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "unexpected" not in res.stderr
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    try:
        stored = json.loads(bytes(ioctx.read(f"{ZONE}/current", 1 << 20)))
    finally:
        ioctx.close()
    assert "BEGIN CERTIFICATE" in stored["cert_pem"]
    # Ours are gone again; the foreign value stays, byte for byte.
    assert _raw_txt(legacy_binary_txt) == {LEGACY}
