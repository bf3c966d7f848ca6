"""Waiting for the challenge values at the real BIND, through `rgwtls issue` with Pebble and Ceph."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import pytest

from devsite.bind import Bind, bind_server
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


def test_a_server_that_refuses_the_zone_is_named_in_the_line(stack: Stack, cli: CLI, tmp_path: Path) -> None:
    # A real BIND that serves another zone: asked for ours, without recursion, it answers REFUSED.
    with bind_server(tmp_path / "elsewhere", zones=("elsewhere.example.net",)) as elsewhere:
        assert elsewhere.query(CHALLENGE).rcode() == dns.rcode.REFUSED
        settings = stack.settings()
        settings["dns"]["nameservers"] = [f"127.0.0.1:{stack.bind.port}", f"127.0.0.1:{elsewhere.port}"]
        settings["dns"]["propagation_timeout"] = 1.0
        res = cli(stack.write_config(settings), "issue")
    assert res.code == 1, res.stderr
    errors = [line for line in res.lines if line.startswith("ERROR:")]
    assert len(errors) == 1, res.stderr
    assert f"127.0.0.1:{elsewhere.port} for {CHALLENGE}: answered REFUSED" in errors[0]
    assert f"127.0.0.1:{stack.bind.port}" not in errors[0]  # the server that has the values is not blamed
    assert "missing" not in errors[0]
    assert not stack.bind.txt(CHALLENGE)
