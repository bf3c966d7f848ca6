"""Smoke tests of the WAPI emulator: it answers as an appliance does and writes into BIND."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devsite.bind import Bind, bind_server
from devsite.wapi import WapiEmulator, wapi_emulator

ZONE = "cog.example.org"
NAME = f"_acme-challenge.{ZONE}"
VERSION = "2.11"


@pytest.fixture(scope="module")
def bind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bind]:
    with bind_server(tmp_path_factory.mktemp("bind"), zones=(ZONE,)) as b:
        yield b


@pytest.fixture(scope="module")
def wapi_server(tmp_path_factory: pytest.TempPathFactory, bind: Bind) -> Iterator[WapiEmulator]:
    with wapi_emulator(tmp_path_factory.mktemp("wapi"), bind) as w:
        yield w


@pytest.fixture
def wapi(wapi_server: WapiEmulator) -> Iterator[WapiEmulator]:
    wapi_server.reset()
    yield wapi_server
    wapi_server.reset()


@pytest.fixture
def session(wapi: WapiEmulator) -> Iterator[requests.Session]:
    with requests.Session() as s:
        # Without this, REQUESTS_CA_BUNDLE in the environment silently beats
        # s.verify (psf/requests#3829) and the emulator's CA is not used.
        s.trust_env = False
        s.verify = str(wapi.ca_bundle)
        s.auth = (wapi.username, wapi.password)
        yield s


def url(wapi: WapiEmulator, path: str) -> str:
    return f"{wapi.url}/wapi/v{VERSION}/{path}"


def create(s: requests.Session, wapi: WapiEmulator, text: str, **extra: object) -> requests.Response:
    body = {
        "name": NAME,
        "text": text,
        "view": "default",
        "ttl": 60,
        "use_ttl": True,
        "comment": "rgwtls acme-challenge by test",
        **extra,
    }
    return s.post(url(wapi, "record:txt"), json=body, timeout=5)


def test_create_returns_201_and_a_ref_and_bind_answers_the_value(
    wapi: WapiEmulator, bind: Bind, session: requests.Session
) -> None:
    resp = create(session, wapi, "value-1")
    assert resp.status_code == 201, resp.text
    ref = resp.json()
    assert isinstance(ref, str)
    assert ref.startswith("record:txt/")
    assert ref.endswith(f":{NAME}/default")
    assert bind.txt(NAME) == {"value-1"}
    assert wapi.wapi_version == VERSION
    got = session.get(url(wapi, ref), params={"_return_fields+": "ttl,comment"}, timeout=5)
    assert got.status_code == 200
    assert got.json() == {
        "_ref": ref,
        "name": NAME,
        "text": "value-1",
        "view": "default",
        "ttl": 60,
        "comment": "rgwtls acme-challenge by test",
    }


def test_apex_and_wildcard_values_coexist_and_a_name_search_lists_both(
    wapi: WapiEmulator, bind: Bind, session: requests.Session
) -> None:
    refs = {create(session, wapi, t).json() for t in ("apex", "wildcard")}
    assert len(refs) == 2
    assert bind.txt(NAME) == {"apex", "wildcard"}
    found = session.get(url(wapi, "record:txt"), params={"name": NAME, "view": "default"}, timeout=5)
    assert found.status_code == 200
    assert {(r["_ref"], r["text"]) for r in found.json()} == {(r["_ref"], r["text"]) for r in wapi.records()}
    assert {r["_ref"] for r in found.json()} == refs
    # An exact search on text too picks one; a regex on the name finds both.
    one = session.get(url(wapi, "record:txt"), params={"name": NAME, "text": "apex"}, timeout=5).json()
    assert [r["text"] for r in one] == ["apex"]
    rx = session.get(url(wapi, "record:txt"), params={"name~": "^_acme-challenge\\."}, timeout=5).json()
    assert len(rx) == 2
    only = session.get(url(wapi, "record:txt"), params={"name": NAME, "_return_fields": "text"}, timeout=5).json()
    assert all(set(r) == {"_ref", "text"} for r in only)


def test_delete_by_ref_removes_exactly_that_value_from_bind(
    wapi: WapiEmulator, bind: Bind, session: requests.Session
) -> None:
    keep = create(session, wapi, "keep").json()
    drop = create(session, wapi, "drop").json()
    resp = session.delete(url(wapi, drop), timeout=5)
    assert resp.status_code == 200
    assert resp.json() == drop
    assert bind.txt(NAME) == {"keep"}
    assert [r["_ref"] for r in wapi.records()] == [keep]
    again = session.delete(url(wapi, drop), timeout=5)
    assert again.status_code == 404
    assert again.json()["code"] == "Client.Ibap.Data.NotFound"


def test_bad_password_gets_the_web_servers_html_401(wapi: WapiEmulator) -> None:
    resp = requests.get(url(wapi, "record:txt"), auth=(wapi.username, "wrong"), verify=str(wapi.ca_bundle), timeout=5)
    assert resp.status_code == 401
    assert resp.headers["Content-Type"].startswith("text/html")
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="InfoBlox ONE Platform"'
    assert "401 Authorization Required" in resp.text
    assert "ibapauth" not in resp.cookies
    assert wapi.basic_logins == 0
    none = requests.get(url(wapi, "record:txt"), verify=str(wapi.ca_bundle), timeout=5)
    assert none.status_code == 401


def test_session_cookie_is_reused_without_a_new_basic_login(wapi: WapiEmulator, session: requests.Session) -> None:
    first = session.get(url(wapi, "record:txt"), params={"name": NAME}, timeout=5)
    assert first.status_code == 200
    assert "ibapauth" in session.cookies
    assert "httponly" in first.headers["Set-Cookie"].lower()
    assert wapi.basic_logins == 1
    session.auth = None  # from now on only the cookie
    for _ in range(3):
        assert session.get(url(wapi, "record:txt"), params={"name": NAME}, timeout=5).status_code == 200
    assert wapi.basic_logins == 1
    wapi.expire_sessions()
    assert session.get(url(wapi, "record:txt"), timeout=5).status_code == 401


def test_duplicate_record_is_a_400_conflict(wapi: WapiEmulator, session: requests.Session) -> None:
    assert create(session, wapi, "same").status_code == 201
    dup = create(session, wapi, "same")
    assert dup.status_code == 400
    err = dup.json()
    assert err["code"] == "Client.Ibap.Data.Conflict"
    assert err["Error"].startswith("AdmConDataError: None (IBDataConflictError: IB.Data.Conflict:")
    assert "already exists" in err["text"]
    assert len(wapi.records()) == 1


def test_unknown_view_is_a_404_not_found(wapi: WapiEmulator, bind: Bind, session: requests.Session) -> None:
    resp = create(session, wapi, "v", view="nosuchview")
    assert resp.status_code == 404
    assert resp.json() == {
        "Error": "AdmConDataNotFoundError: View nosuchview not found",
        "code": "Client.Ibap.Data.NotFound",
        "text": "View nosuchview not found",
    }
    assert bind.txt(NAME) == set()


def test_other_view_is_kept_but_never_reaches_dns(wapi: WapiEmulator, bind: Bind, session: requests.Session) -> None:
    assert create(session, wapi, "external-only", view="external").status_code == 201
    assert [r["view"] for r in wapi.records()] == ["external"]
    assert bind.txt(NAME) == set()


def test_name_outside_the_zones_and_bad_requests_are_refused(wapi: WapiEmulator, session: requests.Session) -> None:
    outside = session.post(
        url(wapi, "record:txt"), json={"name": "_acme-challenge.example.net", "text": "x"}, timeout=5
    )
    assert outside.status_code == 400
    assert outside.json()["text"] == "The action is not allowed. A parent was not found."
    unknown = create(session, wapi, "x", colour="blue")
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "Client.Ibap.Proto"
    not_json = session.post(
        url(wapi, "record:txt"),
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert not_json.status_code == 400
    assert not_json.json()["code"] == "Client.Ibap.Proto"
    assert wapi.records() == []


def test_fail_503_answers_like_the_web_server_and_then_clears(wapi: WapiEmulator, session: requests.Session) -> None:
    wapi.fail(503, count=1, methods={"POST"})
    assert session.get(url(wapi, "record:txt"), timeout=5).status_code == 200  # not a POST
    down = create(session, wapi, "after-503")
    assert down.status_code == 503
    assert "Service Unavailable" in down.text
    assert wapi.records() == []
    assert create(session, wapi, "after-503").status_code == 201
    wapi.fail(500)
    assert session.get(url(wapi, "record:txt"), timeout=5).json()["code"] == "Server"
    wapi.fail(None)
    assert session.get(url(wapi, "record:txt"), timeout=5).status_code == 200
    assert [s for _, _, s in wapi.requests_log] == [200, 503, 201, 500, 200]


def test_slow_delays_answers_past_a_client_timeout(wapi: WapiEmulator, session: requests.Session) -> None:
    wapi.slow(1.0, methods={"GET"})
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        session.get(url(wapi, "record:txt"), timeout=0.3)
    assert time.monotonic() - started < 0.9
    assert create(session, wapi, "posts-are-not-slow").status_code == 201
    wapi.slow(None)
    assert session.get(url(wapi, "record:txt"), timeout=2).status_code == 200


def test_records_planted_directly_are_in_bind_too(wapi: WapiEmulator, bind: Bind) -> None:
    ref = wapi.add_record(NAME, "left-by-crash", comment="rgwtls acme-challenge by rgw1")
    assert bind.txt(NAME) == {"left-by-crash"}
    assert wapi.records()[0]["comment"] == "rgwtls acme-challenge by rgw1"
    wapi.delete_record(ref)
    assert bind.txt(NAME) == set()


def test_emulator_stops_cleanly_with_an_idle_keep_alive_connection(bind: Bind, tmp_path: Path) -> None:
    with wapi_emulator(tmp_path, bind) as w, requests.Session() as s:
        s.trust_env = False
        s.verify = str(w.ca_bundle)
        r = s.get(f"{w.url}/wapi/v2.5/record:txt", auth=(w.username, w.password), timeout=5)
        assert r.status_code == 200
        assert w.wapi_version == "2.5"
        started = time.monotonic()
        w.stop()  # the session's connection is still open: stop must not hang on it
        assert time.monotonic() - started < 2


def test_trickle_sends_the_whole_answer_a_byte_at_a_time_status_line_included(
    wapi: WapiEmulator, session: requests.Session
) -> None:
    wapi.trickle(0.01, {"GET"})
    started = time.monotonic()
    resp = session.get(url(wapi, "record:txt"), params={"name": NAME}, timeout=5)
    took = time.monotonic() - started
    assert resp.status_code == 200
    assert resp.json() == []
    assert took > 0.01 * len("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    wapi.trickle(None)
    started = time.monotonic()
    assert session.get(url(wapi, "record:txt"), params={"name": NAME}, timeout=5).status_code == 200
    assert time.monotonic() - started < took / 2
