"""Fallback CAs through the real stack: two Pebbles with different roots, a dead CA, one answering 500 or 429.

The primary CA is tried first in every run; only the CA's own failures
(unreachable, 5xx after the retries, 429, its order failing) move on to the
next [[acme.fallback]]. Each CA has its own account, `replaces` goes only to
the CA that issued the predecessor, and a set from a fallback is renewed by
its dates, never for being a fallback's.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devsite.bind import Bind
from devsite.pebble import Pebble, pebble_server
from devsite.ports import free_port
from devsite.tlsca import TestCA
from tests.conftest import Stack, run_cli
from tests.test_issue_e2e import account_of, assert_one_error_line, no_challenge_records, stored, stored_set


@pytest.fixture
def other_pebble(tmp_path: Path, test_ca: TestCA, bind: Bind) -> Iterator[Pebble]:
    """A second CA, with roots of its own; a test may stop it (stopping twice is harmless)."""
    with pebble_server(tmp_path / "pebble-other", test_ca, bind.port) as p:
        yield p


class _Failing(BaseHTTPRequestHandler):
    """A CA front end that answers everything with one problem document: 500 serverInternal, or 429 rateLimited."""

    status = 500
    asked = 0

    def _fail(self) -> None:
        type(self).asked += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        typ = "rateLimited" if self.status == 429 else "serverInternal"
        body = json.dumps(
            {
                "type": f"urn:ietf:params:acme:error:{typ}",
                "detail": f"test CA answers {self.status}",
                "status": self.status,
            }
        ).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        if self.status == 429:
            self.send_header("Retry-After", "3600")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _fail

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def failing_ca(test_ca: TestCA) -> Iterator[type[_Failing]]:
    cert, key = test_ca.issue("failing-ca")
    handler = type("Handler", (_Failing,), {"asked": 0})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"https://localhost:{server.server_address[1]}/dir"  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def with_fallback(stack: Stack, primary: str, fallbacks: list[str], ca_bundle: str = "") -> Path:
    settings = stack.settings()
    bundle = ca_bundle or settings["acme"]["ca_bundle"]
    settings["acme"].update(directory=primary, retries=1, retry_backoff=0.1)
    settings["acme"]["fallback"] = [{"directory": d, "ca_bundle": bundle} for d in fallbacks]
    return stack.write_config(settings, "fallback.toml")


def dead_url() -> str:
    return f"https://localhost:{free_port()}/dir"


def only_warning(stderr: str) -> str:
    warnings = [line for line in stderr.splitlines() if line.startswith("WARNING:")]
    assert len(warnings) == 1, stderr
    assert "ERROR" not in stderr
    return warnings[0]


def test_primary_ca_down_issues_from_the_fallback_with_one_warning(stack: Stack) -> None:
    primary = dead_url()
    config = with_fallback(stack, primary, [stack.pebble.directory_url])
    res = run_cli(config, "issue")
    assert res.code == 0, res.stderr
    warning = only_warning(res.stderr)
    assert primary in warning
    assert f"issued by fallback CA {stack.pebble.directory_url}" in warning
    s = stored_set(stack)
    assert s is not None
    assert s["directory"] == stack.pebble.directory_url
    assert stored(stack, account_of(stack), ns="acme") is not None
    status = run_cli(config, "status")
    assert f"CA {stack.pebble.directory_url}" in status.stdout
    assert "worked around" in status.stdout
    # The next run starts with the primary again, but has nothing to do: a fallback's set is judged by its dates.
    again = run_cli(config, "issue")
    assert again.code == 0, again.stderr
    assert again.stderr == ""
    assert stored_set(stack) == s
    assert no_challenge_records(stack)


def test_two_cas_with_different_roots_each_keep_their_own_account(stack: Stack, other_pebble: Pebble) -> None:
    config = with_fallback(stack, other_pebble.directory_url, [stack.pebble.directory_url])
    assert run_cli(config, "issue").code == 0
    first = stored_set(stack)
    assert first is not None
    assert first["directory"] == other_pebble.directory_url
    # The primary dies: the fallback renews, under its own account; the primary's account is kept.
    other_pebble.stop()
    res = run_cli(config, "issue", "--force")
    assert res.code == 0, res.stderr
    assert other_pebble.directory_url in only_warning(res.stderr)
    second = stored_set(stack)
    assert second is not None
    assert second["directory"] == stack.pebble.directory_url
    assert second["generation"] == 2
    assert second["chain_pem"] != first["chain_pem"]  # another CA, other roots
    from rgwtls.issue import account_object

    assert stored(stack, account_object(other_pebble.directory_url), ns="acme") is not None
    assert stored(stack, account_object(stack.pebble.directory_url), ns="acme") is not None


@pytest.mark.parametrize(("status", "said"), [(500, "serverInternal"), (429, "rate limited")])
def test_primary_answering_500_or_429_issues_from_the_fallback(
    stack: Stack, failing_ca: type[_Failing], status: int, said: str
) -> None:
    failing_ca.status = status
    url: str = failing_ca.url  # type: ignore[attr-defined]
    config = with_fallback(stack, url, [stack.pebble.directory_url])
    res = run_cli(config, "issue")
    assert res.code == 0, res.stderr
    warning = only_warning(res.stderr)
    assert url in warning
    assert said in warning
    s = stored_set(stack)
    assert s is not None
    assert s["directory"] == stack.pebble.directory_url


def test_every_ca_failing_is_one_error_naming_each_and_nothing_is_left(
    stack: Stack, failing_ca: type[_Failing]
) -> None:
    primary, fallback = dead_url(), failing_ca.url  # type: ignore[attr-defined]
    res = run_cli(with_fallback(stack, primary, [fallback]), "issue")
    assert_one_error_line(res, "no CA could issue it", primary, fallback, "nothing stored")
    assert stored_set(stack) is None
    assert no_challenge_records(stack)


def test_a_failure_of_ours_is_not_taken_to_the_fallback(stack: Stack, failing_ca: type[_Failing]) -> None:
    """A wrong WAPI password would fail at every CA: the fallback is never asked."""
    settings = stack.settings()
    settings["dns"]["infoblox"]["password_file"] = str(stack.secret_file("bad-pw", "wrong"))
    settings["acme"]["fallback"] = [{"directory": failing_ca.url}]  # type: ignore[attr-defined]
    res = run_cli(stack.write_config(settings), "issue")
    assert_one_error_line(res, "infoblox:")
    assert failing_ca.asked == 0
