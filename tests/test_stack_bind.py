"""Smoke tests of the stack's BIND: what the DNS back ends and the checks rely on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import dns.update
import pytest

from devsite.bind import Bind, UpdateFailed, bind_server

ZONE = "cog.example.org"
NAME = f"_acme-challenge.{ZONE}"


@pytest.fixture(scope="module")
def bind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bind]:
    with bind_server(tmp_path_factory.mktemp("bind"), zones=(ZONE,)) as b:
        yield b


def test_signed_txt_add_and_delete_are_answered_at_once(bind: Bind) -> None:
    assert bind.txt(NAME) == set()
    bind.add_txt(NAME, "apex-value")
    bind.add_txt(NAME, "wildcard-value")
    assert bind.txt(NAME) == {"apex-value", "wildcard-value"}
    bind.delete_txt(NAME, "apex-value")
    assert bind.txt(NAME) == {"wildcard-value"}
    bind.delete_txt(NAME, "wildcard-value")
    assert bind.txt(NAME) == set()


def test_zone_answers_its_fixed_records(bind: Bind) -> None:
    for name in (ZONE, f"ns1.{ZONE}", f"anybucket.{ZONE}"):
        resp = bind.query(name, "A")
        assert resp.rcode() == dns.rcode.NOERROR
        assert [rd.address for rrset in resp.answer for rd in rrset] == ["127.0.0.1"], name


def test_unsigned_update_is_refused(bind: Bind) -> None:
    upd = dns.update.UpdateMessage(ZONE)
    upd.add(NAME, 60, "TXT", '"unsigned"')
    with pytest.raises(UpdateFailed) as err:
        bind.send_update(upd)
    assert err.value.rcode == dns.rcode.REFUSED
    assert bind.txt(NAME) == set()


def test_signed_a_record_update_is_refused(bind: Bind) -> None:
    upd = bind.signed_update(ZONE)
    upd.replace(f"www.{ZONE}", 60, "A", "192.0.2.1")
    with pytest.raises(UpdateFailed) as err:
        bind.send_update(upd)
    assert err.value.rcode == dns.rcode.REFUSED
    assert bind.query(f"www.{ZONE}", "A").answer[0][0].address == "127.0.0.1"


def test_signed_txt_outside_acme_challenge_is_refused(bind: Bind) -> None:
    with pytest.raises(UpdateFailed) as err:
        bind.add_txt(f"www.{ZONE}", "not-a-challenge")
    assert err.value.rcode == dns.rcode.REFUSED
    with pytest.raises(UpdateFailed):
        bind.add_txt(f"_acme-challenge.www.{ZONE}", "not-granted-without-acme_hosts")


def test_two_instances_of_the_zone_run_at_once_and_share_a_key(bind: Bind, tmp_path: Path) -> None:
    with bind_server(tmp_path / "second", zones=(ZONE,), tsig_secret=bind.tsig_secret) as other:
        assert other.port != bind.port
        assert other.tsig_secret == bind.tsig_secret
        bind.add_txt(NAME, "only-on-the-first")
        try:
            assert bind.txt(NAME) == {"only-on-the-first"}
            assert other.txt(NAME) == set()
            other.add_txt(NAME, "only-on-the-second")  # the shared key works there too
            assert other.txt(NAME) == {"only-on-the-second"}
            assert bind.txt(NAME) == {"only-on-the-first"}
        finally:
            bind.delete_txt(NAME, "only-on-the-first")
    assert other.server is not None
    assert not other.server.running()


def test_acme_hosts_grant_their_own_challenge_names(tmp_path: Path) -> None:
    host = f"rgw1.{ZONE}"
    with bind_server(tmp_path / "hosts", zones=(ZONE,), acme_hosts=(host,)) as b:
        b.add_txt(f"_acme-challenge.{host}", "per-host")
        assert b.txt(f"_acme-challenge.{host}") == {"per-host"}
        with pytest.raises(UpdateFailed):
            b.add_txt(f"_acme-challenge.rgw2.{ZONE}", "not-granted")
