"""Smoke tests of the Universal DDI emulator: it answers as the documented API does and writes into BIND."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devsite.bind import Bind, bind_server
from devsite.uddi import UddiEmulator, uddi_emulator

ZONE = "cog.example.org"
NAME = f"_acme-challenge.{ZONE}"


@pytest.fixture(scope="module")
def bind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bind]:
    with bind_server(tmp_path_factory.mktemp("bind"), zones=(ZONE,)) as b:
        yield b


@pytest.fixture(scope="module")
def uddi_server(tmp_path_factory: pytest.TempPathFactory, bind: Bind) -> Iterator[UddiEmulator]:
    with uddi_emulator(tmp_path_factory.mktemp("uddi"), bind) as u:
        yield u


@pytest.fixture
def uddi(uddi_server: UddiEmulator) -> Iterator[UddiEmulator]:
    uddi_server.reset()
    yield uddi_server
    uddi_server.reset()


@pytest.fixture
def session(uddi: UddiEmulator) -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.trust_env = False
        s.verify = str(uddi.ca_bundle)
        s.headers["Authorization"] = f"Token {uddi.api_key}"
        yield s


def create(s: requests.Session, uddi: UddiEmulator, text: str, **extra: Any) -> requests.Response:
    body = {
        "type": "TXT",
        "name_in_zone": "_acme-challenge",
        "zone": uddi.zone_id(ZONE),
        "rdata": {"text": text},
        "ttl": 60,
        "tags": {"rgwtls": "acme-challenge"},
        **extra,
    }
    return s.post(uddi.url + "dns/record", json=body, timeout=5)


def test_zone_is_found_by_its_fqdn_filter(uddi: UddiEmulator, session: requests.Session) -> None:
    for flt in (f"fqdn eq '{ZONE}.'", f'fqdn=="{ZONE}."'):
        found = session.get(uddi.url + "dns/auth_zone", params={"_filter": flt}, timeout=5)
        assert found.status_code == 200
        [zone] = found.json()["results"]
        assert zone["id"] == uddi.zone_id(ZONE)
        assert zone["id"].startswith("dns/auth_zone/")
        assert zone["view"] == uddi.views["default"]
    none = session.get(uddi.url + "dns/auth_zone", params={"_filter": "fqdn eq 'example.org.'"}, timeout=5)
    assert none.json() == {"results": []}
    bad = session.get(uddi.url + "dns/auth_zone", params={"_filter": "fqdn is cog"}, timeout=5)
    assert bad.status_code == 400
    assert "invalid filter" in bad.json()["error"][0]["message"]


def test_create_answers_201_with_the_record_and_bind_answers_the_value(
    uddi: UddiEmulator, bind: Bind, session: requests.Session
) -> None:
    resp = create(session, uddi, "value-1")
    assert resp.status_code == 201, resp.text
    rec = resp.json()["result"]
    assert rec["id"].startswith("dns/record/")
    assert rec["absolute_name_spec"] == f"{NAME}."
    assert rec["rdata"] == {"text": "value-1"}
    assert bind.txt(NAME) == {"value-1"}
    got = session.get(uddi.url + rec["id"], timeout=5)
    assert got.json()["result"] == rec


def test_apex_and_wildcard_values_coexist_and_a_filter_finds_each(
    uddi: UddiEmulator, bind: Bind, session: requests.Session
) -> None:
    ids = {create(session, uddi, t).json()["result"]["id"] for t in ("apex", "wildcard")}
    assert len(ids) == 2
    assert bind.txt(NAME) == {"apex", "wildcard"}
    flt = f"type=='TXT' and zone=='{uddi.zone_id(ZONE)}' and name_in_zone=='_acme-challenge'"
    found = session.get(uddi.url + "dns/record", params={"_filter": flt}, timeout=5).json()["results"]
    assert {r["id"] for r in found} == ids
    tagged = session.get(uddi.url + "dns/record", params={"_tfilter": "rgwtls=='acme-challenge'"}, timeout=5)
    assert len(tagged.json()["results"]) == 2


def test_duplicate_is_409_and_delete_is_by_id_then_404(
    uddi: UddiEmulator, bind: Bind, session: requests.Session
) -> None:
    rid = create(session, uddi, "same").json()["result"]["id"]
    dup = create(session, uddi, "same")
    assert dup.status_code == 409
    assert "already exists" in dup.json()["error"][0]["message"]
    keep = create(session, uddi, "keep").json()["result"]["id"]
    assert session.delete(uddi.url + rid, timeout=5).status_code == 200
    assert bind.txt(NAME) == {"keep"}
    assert [r["id"] for r in uddi.records()] == [keep]
    again = session.delete(uddi.url + rid, timeout=5)
    assert again.status_code == 404


def test_unknown_zone_is_404_and_other_types_are_refused(uddi: UddiEmulator, session: requests.Session) -> None:
    assert create(session, uddi, "x", zone="dns/auth_zone/nope").status_code == 404
    assert create(session, uddi, "x", type="A").status_code == 400
    assert create(session, uddi, "x", colour="blue").status_code == 400
    assert uddi.records() == []


def test_a_wrong_or_missing_key_is_401(uddi: UddiEmulator) -> None:
    for headers in ({"Authorization": "Token wrong"}, {"Authorization": f"Bearer {uddi.api_key}"}, {}):
        resp = requests.get(uddi.url + "dns/view", headers=headers, verify=str(uddi.ca_bundle), timeout=5)
        assert resp.status_code == 401
        assert "not authorized" in resp.json()["error"][0]["message"]


def test_a_zone_in_another_view_never_reaches_bind(uddi: UddiEmulator, bind: Bind, session: requests.Session) -> None:
    other = uddi.add_zone(ZONE, "external")
    assert create(session, uddi, "external-only", zone=other).status_code == 201
    assert bind.txt(NAME) == set()
    views = session.get(uddi.url + "dns/view", params={"_filter": "name=='external'"}, timeout=5).json()["results"]
    assert [v["id"] for v in views] == [uddi.views["external"]]


def test_fail_429_carries_retry_after_and_5xx_is_the_gateways_page(
    uddi: UddiEmulator, session: requests.Session
) -> None:
    uddi.fail(429, count=1, methods={"POST"}, retry_after="7")
    assert session.get(uddi.url + "dns/view", timeout=5).status_code == 200  # not a POST
    limited = create(session, uddi, "after-429")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"
    assert uddi.records() == []
    assert create(session, uddi, "after-429").status_code == 201
    uddi.fail(503)
    down = session.get(uddi.url + "dns/view", timeout=5)
    assert down.status_code == 503
    assert down.headers["Content-Type"].startswith("text/html")
    uddi.fail(None)
    assert [s for _, _, s in uddi.requests_log] == [200, 429, 201, 503]


def test_slow_delays_answers_after_the_work_is_done(uddi: UddiEmulator, bind: Bind, session: requests.Session) -> None:
    uddi.slow(1.0, methods={"POST"})
    started = time.monotonic()
    body = {"type": "TXT", "name_in_zone": "_acme-challenge", "zone": uddi.zone_id(ZONE), "rdata": {"text": "slow"}}
    with pytest.raises(requests.Timeout):
        session.post(uddi.url + "dns/record", json=body, timeout=0.3)
    assert time.monotonic() - started < 0.9
    assert bind.txt(NAME) == {"slow"}  # created all the same
    uddi.slow(None)
