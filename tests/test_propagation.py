"""propagation: what one authoritative server's answer means, with the server faked at dns.query."""

from __future__ import annotations

from collections.abc import Callable

import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import pytest

from rgwtls import propagation
from rgwtls.config import DnsConfig
from rgwtls.errors import PropagationError
from rgwtls.propagation import Server, txt_values

NAME = "_acme-challenge.cog.example.org."
OURS = {"K3c1dTF0a2VuLXZhbHVlLWFwZXg", "d2lsZGNhcmQtdG9rZW4tdmFsdWU"}
FOREIGN_BINARY = b"\xff\xfe legacy-binary-token"


def answer(strings: list[bytes], rcode: dns.rcode.Rcode = dns.rcode.NOERROR) -> Callable[..., dns.message.Message]:
    """A fake dns.query.udp: this rcode, and one TXT rdata per string."""

    def udp(q: dns.message.Message, where: str, **_: object) -> dns.message.Message:
        resp = dns.message.make_response(q)
        resp.set_rcode(rcode)
        if strings:
            rrset = dns.rrset.RRset(q.question[0].name, dns.rdataclass.IN, dns.rdatatype.TXT)
            for s in strings:
                rrset.add(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [s]), 60)
            resp.answer.append(rrset)
        return resp

    return udp


def test_a_foreign_non_utf8_txt_value_is_read_and_never_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dns.query, "udp", answer([FOREIGN_BINARY, *(v.encode() for v in OURS)]))
    values = txt_values(Server("127.0.0.1", 53), NAME, 1.0)
    assert values >= OURS
    assert len(values) == 3


def test_a_foreign_non_utf8_txt_value_does_not_stop_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dns.query, "udp", answer([FOREIGN_BINARY, *(v.encode() for v in OURS)]))
    cfg = DnsConfig(nameservers=("127.0.0.1:5300",), propagation_timeout=1.0, propagation_interval=0.1)
    took = propagation.wait_for_values({NAME: OURS}, cfg, sleep=lambda _: pytest.fail("no wait needed"))
    assert took < 1.0


def test_a_server_shows_its_name_and_address() -> None:
    assert Server("192.0.2.1", 53, "ns1.example.org").named() == "ns1.example.org (192.0.2.1)"
    assert Server("192.0.2.1", 5300, "ns1.example.org").named() == "ns1.example.org (192.0.2.1:5300)"
    assert Server("192.0.2.1", 5300, "192.0.2.1").named() == "192.0.2.1:5300"
    assert str(Server("192.0.2.1", 5300, "ns1.example.org")) == "192.0.2.1:5300"  # what persist's lines show


@pytest.mark.parametrize("rcode", [dns.rcode.SERVFAIL, dns.rcode.REFUSED])
def test_the_line_names_the_server_that_answered_an_error(
    monkeypatch: pytest.MonkeyPatch, rcode: dns.rcode.Rcode
) -> None:
    good = answer([v.encode() for v in OURS])
    bad = answer([], rcode)
    monkeypatch.setattr(dns.query, "udp", lambda q, where, **kw: (bad if where == "192.0.2.2" else good)(q, where))
    cfg = DnsConfig(
        nameservers=("192.0.2.1:5300", "192.0.2.2:5300"),
        resolvers=("127.0.0.1:9",),
        propagation_timeout=0.2,
        propagation_interval=0.05,
    )
    with pytest.raises(PropagationError) as e:
        propagation.wait_for_values({NAME: OURS}, cfg)
    line = str(e.value)
    assert f"192.0.2.2:5300 for {NAME}: answered {dns.rcode.to_text(rcode)}" in line
    assert "192.0.2.1" not in line
    assert "missing" not in line


def test_nxdomain_is_no_value_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dns.query, "udp", answer([], dns.rcode.NXDOMAIN))
    assert txt_values(Server("192.0.2.1", 53), NAME, 1.0) == set()
