"""`rgwtls issue` against a difficult CA: nonce rejection, failed validation, ARI."""

from __future__ import annotations

import datetime as dt
import json
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509

from devsite.bind import bind_server
from devsite.pebble import BOOKWORM_PEBBLE, Pebble, finds_by_serial, pebble_server
from devsite.ports import free_port
from devsite.tlsca import TestCA
from rgwtls.acmeflow import _NewOrder
from tests.conftest import POOL, ZONE, Result, Stack, run_cli
from tests.test_issue_crash_e2e import Site, finish, hold_at_the_hook_and_stop_the_osd, last_issue
from tests.test_issue_e2e import (
    account_of,
    assert_one_error_line,
    no_challenge_records,
    stored_account,
    stored_set,
)

CLI = Callable[..., Result]


@pytest.fixture(scope="module")
def nonce_rejecting_pebble(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA, bind: Any) -> Iterator[Pebble]:
    with pebble_server(
        tmp_path_factory.mktemp("pebble-nonce"), test_ca, bind.port, env={"PEBBLE_WFE_NONCEREJECT": "50"}
    ) as p:
        yield p


def test_issue_survives_a_ca_rejecting_half_the_nonces(stack: Stack, cli: CLI, nonce_rejecting_pebble: Pebble) -> None:
    settings = stack.settings()
    settings["acme"]["directory"] = nonce_rejecting_pebble.directory_url
    res = cli(stack.write_config(settings), "issue")
    assert res.code == 0, res.stderr
    assert stored_set(stack) is not None
    assert no_challenge_records(stack)


def test_ca_validation_failure_is_reported_per_name_in_the_cas_words(
    stack: Stack, cli: CLI, tmp_path: Path, test_ca: TestCA
) -> None:
    # The CA asks a server that never gets the records (a split-horizon
    # mistake): our own check at the configured servers passes, the CA's fails.
    with (
        bind_server(tmp_path / "other-view", zones=(ZONE,)) as other_view,
        pebble_server(tmp_path / "pebble", test_ca, other_view.port) as blind_pebble,
    ):
        settings = stack.settings()
        settings["acme"]["directory"] = blind_pebble.directory_url
        settings["dns"]["nameservers"] = [f"127.0.0.1:{stack.bind.port}"]
        res = cli(stack.write_config(settings), "issue")
    assert_one_error_line(res, "ACME: the CA rejected the DNS challenge", f"*.{ZONE}: ", f"{ZONE}: ", "unauthorized")
    assert stored_set(stack) is None
    assert no_challenge_records(stack)


class AriServer:
    """A directory with a renewalInfo of its own, for ARI where the CA cannot be made to show it (a proxy's tests)."""

    def __init__(self, pebble: Pebble, ca: TestCA) -> None:
        self.window: tuple[dt.datetime, dt.datetime] | None = None
        self.asked: list[str] = []
        directory = requests.get(pebble.directory_url, verify=str(pebble.ca_bundle), timeout=5).json()
        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        directory["renewalInfo"] = f"{self.url}/renewal-info"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/dir":
                    self._send(200, directory)
                elif self.path.startswith("/renewal-info/") and outer.window:
                    outer.asked.append(self.path.rsplit("/", 1)[1])
                    start, end = outer.window
                    self._send(
                        200,
                        {
                            "suggestedWindow": {
                                "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                "end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            }
                        },
                        {"Retry-After": "21600"},
                    )
                else:
                    self._send(404, {"type": "urn:ietf:params:acme:error:malformed"})

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        cert, key = ca.issue("ari")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def replaceable_set(stack: Stack, issue: Callable[..., Result]) -> dict[str, Any]:
    """The pool's set, issued again (`issue("--force")`) while Pebble could not find its order from a
    `replaces` (devsite.pebble.finds_by_serial): the tests of what the CA answers to one need its answer."""
    for _ in range(5):  # 1 in 256 a time
        s = stored_set(stack)
        assert s is not None
        if finds_by_serial(str(s["cert_pem"])):
            return s
        res = issue("--force")
        assert res.code == 0, res.stderr
    raise AssertionError("five certificates in a row whose serials Pebble cannot look up")


def test_ari_window_decides_renewal(stack: Stack, cli: CLI) -> None:
    """The CA's own renewalInfo, its window moved through Pebble's set-renewal-info."""
    config = stack.write_config(stack.settings())
    assert cli(config, "issue").code == 0
    first = replaceable_set(stack, lambda *args: cli(config, "issue", *args))
    now = dt.datetime.now(dt.UTC)
    # A fresh certificate, but the CA asks for renewal now (say, a mass revocation).
    stack.pebble.set_renewal_info(str(first["cert_pem"]), now - dt.timedelta(hours=2), now - dt.timedelta(hours=1))
    res = cli(config, "issue")
    assert res.code == 0, res.stderr
    assert "renewal window (ARI)" in res.stderr
    s = stored_set(stack)
    assert s is not None
    assert s["generation"] == first["generation"] + 1
    # The new order named the old certificate in `replaces`, and the CA took it.
    assert "is a replacement of" in stack.pebble.server.log.read_text()
    # And a window in the future defers renewal, whatever the lifetime rule says.
    stack.pebble.set_renewal_info(str(s["cert_pem"]), now + dt.timedelta(days=5), now + dt.timedelta(days=6))
    res = cli(config, "-v", "issue")
    assert res.code == 0, res.stderr
    assert "nothing to do" in res.stderr
    # From the window's start, the moment check warns from (not RFC 9773's random moment: one issuer a fleet).
    opens = re.search(r"window \(ARI\) opens (\S+ \S+) UTC", res.stderr)
    assert opens is not None, res.stderr
    when = dt.datetime.strptime(opens.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=dt.UTC)
    assert now + dt.timedelta(days=5, minutes=-1) <= when <= now + dt.timedelta(days=6)


def test_bookworms_pebble_2_4_still_issues(stack: Stack, cli: CLI, tmp_path: Path, test_ca: TestCA) -> None:
    """A smoke test against the CA of two years ago: no profiles, no ARI; the lifetime rule decides."""
    with pebble_server(tmp_path / "pebble", test_ca, stack.bind.port, binary=BOOKWORM_PEBBLE) as old:
        settings = stack.settings()
        settings["acme"]["directory"] = old.directory_url
        config = stack.write_config(settings)
        res = cli(config, "issue")
        assert res.code == 0, res.stderr
        res = cli(config, "-v", "issue")
    assert res.code == 0, res.stderr
    assert "renewal due" in res.stderr
    s = stored_set(stack)
    assert s is not None
    assert s["generation"] == 1


@pytest.mark.parametrize(
    ("serial", "found"),
    [
        (0x86A5402EAF00C2, False),  # the serial of a failed run: 56 bits, DER content 00 86 a5 ...
        (0x46A5402EAF00C2, True),
        (0x5A10D2C4E2B3A1F7, True),  # 63 bits, as most of Pebble's
    ],
)
def test_pebble_cannot_find_the_order_of_a_serial_whose_der_form_gains_a_leading_zero(serial: int, found: bool) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, ZONE)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder(name, name, key.public_key(), serial, now, now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    assert finds_by_serial(cert.decode()) is found


def test_new_order_sends_replaces_only_when_given() -> None:
    from acme import messages

    ident = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=ZONE)]
    assert (
        _NewOrder(identifiers=ident, replaces="aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE").to_partial_json()["replaces"]
        == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    )
    assert "replaces" not in _NewOrder(identifiers=ident).to_partial_json()


def test_ca_down_on_a_day_nothing_is_due_warns_and_exits_zero(
    stack: Stack, cli: CLI, tmp_path: Path, test_ca: TestCA
) -> None:
    with pebble_server(tmp_path / "pebble", test_ca, stack.bind.port) as own:
        settings = stack.settings()
        settings["acme"].update(directory=own.directory_url, retries=1)
        config = stack.write_config(settings)
        assert cli(config, "issue").code == 0
    # The CA is gone; the certificate has 90 days left.
    res = cli(config, "issue")
    assert res.code == 0, res.stderr
    assert res.lines == [line for line in res.lines if line.startswith("WARNING: renewal info unavailable")]
    assert len(res.lines) == 1
    s = stored_set(stack)
    assert s is not None
    assert s["generation"] == 1


# -- the CA refuses `replaces`: renewal goes on without it ---------------------------


def ask_to_renew_now(pebble: Pebble, cert_pem: str) -> None:
    now = dt.datetime.now(dt.UTC)
    pebble.set_renewal_info(cert_pem, now - dt.timedelta(hours=2), now - dt.timedelta(hours=1))


def assert_renewed_without_replaces(stack: Stack, res: Result, refused: str, generation: int) -> None:
    assert res.code == 0, res.stderr
    warnings = [line for line in res.lines if line.startswith("WARNING:")]
    assert len(warnings) == 1, res.stderr
    assert refused in warnings[0]
    assert "ordered it without replaces" in warnings[0]
    s = stored_set(stack)
    assert s is not None
    assert s["generation"] == generation
    record = last_issue(stack)
    assert record["ok"] is True
    assert refused in record["warning"]
    assert no_challenge_records(stack)


def test_already_replaced_after_a_lost_replacement_orders_without_replaces(stack: Stack) -> None:
    """As in production: the CA issued the replacement, then neither the pool nor this host could keep it."""
    site = Site(stack)
    res, _ = site.run()
    assert res.code == 0, res.stderr
    first = replaceable_set(stack, lambda *args: run_cli(site.config, "issue", *args))
    ask_to_renew_now(stack.pebble, str(first["cert_pem"]))
    # The kept-set safety net fails too (its directory is a file), so the certificate is lost.
    (site.state / "issued").rmdir()  # the first run made it, and left it empty
    (site.state / "issued").write_text("not a directory\n")
    try:
        proc = hold_at_the_hook_and_stop_the_osd(site)
        code, err = finish(proc, 120)
    finally:
        stack.ceph.start_osd()
    assert code == 1, err
    assert "so it is lost; the next run orders a new one" in err
    assert "is a replacement of" in stack.pebble.server.log.read_text()
    (site.state / "issued").unlink()
    # The pool still holds the replaced certificate, whose ARI window is open: the
    # CA answers alreadyReplaced, and the run orders again without `replaces`.
    res, _ = site.run()
    assert_renewed_without_replaces(stack, res, "alreadyReplaced", first["generation"] + 1)
    third = run_cli(site.config, "issue")
    assert third.code == 0, third.stderr
    assert third.stderr == ""
    assert last_issue(stack)["warning"] is None


def test_unauthorized_replacement_after_an_account_change_orders_without_replaces(stack: Stack, cli: CLI) -> None:
    config = stack.write_config(stack.settings())
    assert cli(config, "issue").code == 0
    first = replaceable_set(stack, lambda *args: cli(config, "issue", *args))
    ask_to_renew_now(stack.pebble, str(first["cert_pem"]))
    # A new account key (say, the account object was lost): the old certificate is another account's.
    assert stored_account(stack) is not None
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    try:
        ioctx.set_namespace("acme")
        ioctx.remove_object(account_of(stack))
    finally:
        ioctx.close()
    res = cli(config, "issue")
    assert_renewed_without_replaces(
        stack, res, "unauthorized: requester account did not request", first["generation"] + 1
    )
    status = cli(config, "status")
    assert "worked around: the CA refused the order as the replacement" in status.stdout
