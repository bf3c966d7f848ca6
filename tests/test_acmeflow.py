"""The ACME layer's retries and error lines; the CA faked at the HTTP boundary.

The real CA (Pebble, with nonce rejection) is exercised in test_issue_e2e.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from josepy.b64 import b64decode

from rgwtls.acmeflow import Acme, new_account_key
from rgwtls.config import AcmeConfig
from rgwtls.errors import AcmeError

DIRECTORY = {
    "newNonce": "https://ca.test/nonce",
    "newAccount": "https://ca.test/account",
    "newOrder": "https://ca.test/order",
    "revokeCert": "https://ca.test/revoke",
    "keyChange": "https://ca.test/key",
}
PROBLEM = "application/problem+json"


def response(
    status: int,
    body: Any = None,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = json.dumps(body).encode() if body is not None else b""
    r.headers.update({"Replay-Nonce": "AAAA", "Content-Type": content_type, **(headers or {})})
    r.url = "https://ca.test/"
    return r


def problem(status: int, typ: str, detail: str, headers: dict[str, str] | None = None) -> requests.Response:
    body = {"type": f"urn:ietf:params:acme:error:{typ}", "detail": detail, "status": status}
    return response(status, body, headers, PROBLEM)


class FakeCA:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.queue: list[requests.Response] = []
        self.calls: list[tuple[str, str]] = []
        self.payloads: list[dict[str, Any]] = []
        monkeypatch.setattr(requests.Session, "request", self.request)
        monkeypatch.setattr("time.sleep", lambda s: self.sleeps.append(s))
        self.sleeps: list[float] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        self.calls.append((method, url))
        if kwargs.get("data"):
            payload = json.loads(kwargs["data"])["payload"]
            self.payloads.append(json.loads(b64decode(payload)) if payload else {})
        if method == "GET" and url.endswith("/dir"):
            return response(200, DIRECTORY)
        if method == "HEAD":
            return response(200)
        return self.queue.pop(0)


@pytest.fixture
def ca(monkeypatch: pytest.MonkeyPatch) -> FakeCA:
    return FakeCA(monkeypatch)


def acme(**cfg: Any) -> Acme:
    return Acme(AcmeConfig(**cfg), "https://ca.test/dir", new_account_key())


def test_bad_nonce_is_retried_more_than_the_librarys_once(ca: FakeCA) -> None:
    a = acme(nonce_retries=10)
    ca.queue = [problem(400, "badNonce", "stale")] * 6 + [
        response(201, {"status": "valid"}, {"Location": "https://ca.test/acct/1"})
    ]
    a.register("ops@example.org")
    assert len([c for c in ca.calls if c[0] == "POST"]) == 7
    assert ca.sleeps == []  # badNonce is retried at once, with the fresh nonce it carries


def test_bad_nonce_beyond_the_limit_is_one_line(ca: FakeCA) -> None:
    a = acme(nonce_retries=2)
    ca.queue = [problem(400, "badNonce", "stale nonce")] * 3
    with pytest.raises(AcmeError, match=r"ACME: could not register the ACME account: stale nonce \(.*badNonce\)"):
        a.register("")


def test_server_errors_are_retried_with_backoff(ca: FakeCA) -> None:
    a = acme(retries=4, retry_backoff=1.0)
    ca.queue = [
        response(503, None, content_type="text/html"),
        problem(500, "serverInternal", "oops"),
        response(201, {"status": "valid"}, {"Location": "https://ca.test/acct/1"}),
    ]
    a.register("")
    assert ca.sleeps == [1.0, 2.0]


def test_server_error_retry_honours_retry_after(ca: FakeCA) -> None:
    a = acme(retries=2)
    ca.queue = [
        response(503, None, {"Retry-After": "7"}, "text/html"),
        response(201, {"status": "valid"}, {"Location": "https://ca.test/acct/1"}),
    ]
    a.register("")
    assert ca.sleeps == [7.0]


def test_persistent_server_error_gives_up_with_the_status(ca: FakeCA) -> None:
    a = acme(retries=2)
    ca.queue = [response(502, None, content_type="text/html")] * 3
    with pytest.raises(AcmeError, match="HTTP 502"):
        a.register("")


def test_rate_limit_is_reported_with_its_retry_after(ca: FakeCA) -> None:
    a = acme()
    ca.queue = [problem(429, "rateLimited", "too many certificates for cog.example.org", {"Retry-After": "3600"})]
    with pytest.raises(AcmeError, match=r"rate limited .*too many certificates.*retry after 3600s"):
        a.register("")
    assert ca.sleeps == []  # never sleep through a rate limit


def test_unreachable_ca_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> requests.Response:
        raise requests.ConnectionError("refused")

    monkeypatch.setattr(requests.Session, "request", refuse)
    monkeypatch.setattr("time.sleep", lambda s: None)
    with pytest.raises(AcmeError, match=r"could not fetch the directory .*cannot reach"):
        acme(retries=1)


ORDER = {"status": "ready", "identifiers": [{"type": "dns", "value": "cog.example.org"}], "authorizations": []}
ORDER_CREATED = {"Location": "https://ca.test/order/1"}


@pytest.mark.parametrize(
    ("status", "typ", "detail"),
    [
        (409, "alreadyReplaced", "certificate with serial 0123 already has a replacement order"),
        (403, "unauthorized", "requester account did not request the certificate being replaced by this order"),
    ],
)
def test_refused_replacement_is_ordered_again_once_without_replaces(
    ca: FakeCA, status: int, typ: str, detail: str
) -> None:
    a = acme()
    ca.queue = [problem(status, typ, detail), response(201, ORDER, ORDER_CREATED)]
    order, refused = a.new_order(["cog.example.org"], "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE")
    assert order.uri == "https://ca.test/order/1"
    assert refused is not None
    assert typ in refused
    assert detail in refused
    assert "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE" in refused
    assert [p.get("replaces") for p in ca.payloads] == ["aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE", None]


def test_replacement_order_the_ca_keeps_failing_is_ordered_again_once_without_replaces(ca: FakeCA) -> None:
    """Pebble 2.10 answers 500 when the replaced certificate's serial starts with a 0x00 DER byte (pebble#550)."""
    a = acme(retries=1)
    lost = "could not find an order for the given certificate"
    ca.queue = [
        problem(500, "serverInternal", lost),
        problem(500, "serverInternal", lost),
        response(201, ORDER, ORDER_CREATED),
    ]
    order, refused = a.new_order(["cog.example.org"], "RTAINB8QAcdWz54id2aMkYdCnDI.AIWf94paRX4")
    assert order.uri == "https://ca.test/order/1"
    assert refused is not None
    assert "serverInternal" in refused
    assert [p.get("replaces") for p in ca.payloads] == ["RTAINB8QAcdWz54id2aMkYdCnDI.AIWf94paRX4"] * 2 + [None]


def test_ca_that_fails_every_order_fails_the_run_after_one_order_without_replaces(ca: FakeCA) -> None:
    a = acme(retries=0)
    ca.queue = [problem(500, "serverInternal", "database unavailable")] * 2
    with pytest.raises(AcmeError, match="database unavailable"):
        a.new_order(["cog.example.org"], "RTAINB8QAcdWz54id2aMkYdCnDI.AIWf94paRX4")
    assert [p.get("replaces") for p in ca.payloads] == ["RTAINB8QAcdWz54id2aMkYdCnDI.AIWf94paRX4", None]


def test_refused_order_without_replaces_is_not_ordered_again(ca: FakeCA) -> None:
    a = acme()
    ca.queue = [problem(403, "unauthorized", "requester account did not request the certificate being replaced")]
    with pytest.raises(AcmeError, match=r"could not create an order for cog\.example\.org: requester account"):
        a.new_order(["cog.example.org"], None)
    assert len(ca.payloads) == 1


def test_other_refusals_of_a_replacement_order_are_not_retried(ca: FakeCA) -> None:
    a = acme()
    ca.queue = [problem(403, "unauthorized", "account is not allowed to issue for cog.example.org")]
    with pytest.raises(AcmeError, match="not allowed to issue"):
        a.new_order(["cog.example.org"], "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE")
    assert len(ca.payloads) == 1
