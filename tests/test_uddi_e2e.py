"""`rgwtls issue` with the Universal DDI back end, against real Pebble, BIND, Ceph and the UDDI emulator.

The same failure tests as the WAPI back end: each failure is one line naming
the request and its status, nothing is stored, and no record is left.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.conftest import POOL, ZONE, Result, Stack, run_cli
from tests.test_issue_e2e import assert_one_error_line, stored, stored_set, verify_against_pebble

CLI = Callable[..., Result]
NAME = f"_acme-challenge.{ZONE}"


def no_records(stack: Stack) -> bool:
    assert stack.uddi is not None
    return not stack.bind.txt(NAME) and not stack.uddi.records()


def test_uddi_issues_a_certificate_and_removes_exactly_its_records(uddi_stack: Stack, cli: CLI) -> None:
    uddi = uddi_stack.uddi
    assert uddi is not None
    res = cli(uddi_stack.write_config(uddi_stack.settings("uddi")), "issue")
    assert res.code == 0, res.stderr
    s = stored_set(uddi_stack)
    assert s is not None
    verify_against_pebble(uddi_stack, str(s["cert_pem"]), str(s["chain_pem"]), f"bucket.{ZONE}")
    assert no_records(uddi_stack)
    calls = [(m, p.split("?")[0]) for m, p, _ in uddi.requests_log]
    assert calls.count(("POST", "/api/ddi/v1/dns/record")) == 2
    assert sum(1 for m, p in calls if m == "DELETE" and p.startswith("/api/ddi/v1/dns/record/")) == 2
    # The zone was looked up by its fqdn, as the API documents it.
    assert any("fqdn+eq+%27cog.example.org.%27" in p for _, p, _ in uddi.requests_log)


@pytest.mark.parametrize(
    ("status", "needle"),
    [(401, "answered 401"), (403, "answered 403"), (404, "answered 404"), (500, "answered 500"), (503, "answered 503")],
)
def test_uddi_error_fails_cleanly_in_one_line_naming_request_and_status(
    uddi_stack: Stack, cli: CLI, status: int, needle: str
) -> None:
    assert uddi_stack.uddi is not None
    settings = uddi_stack.settings("uddi")
    settings["dns"]["uddi"]["retries"] = 2
    uddi_stack.uddi.fail(status)
    res = cli(uddi_stack.write_config(settings), "issue")
    uddi_stack.uddi.fail(None)
    assert_one_error_line(res, "uddi: could not look up zone", "GET dns/auth_zone", needle)
    assert stored_set(uddi_stack) is None
    assert no_records(uddi_stack)


def test_wrong_api_key_is_one_line_and_never_shown(uddi_stack: Stack, cli: CLI) -> None:
    settings = uddi_stack.settings("uddi")
    settings["dns"]["uddi"]["api_key_file"] = str(uddi_stack.secret_file("bad-key", "wrong-key-8c1f"))
    res = cli(uddi_stack.write_config(settings), "--debug", "issue")
    assert res.code == 1
    errors = [line for line in res.lines if line.startswith("ERROR:") or "DnsError: uddi:" in line]
    assert any("the API key was refused" in line and "answered 401" in line for line in errors), res.stderr
    assert "wrong-key-8c1f" not in res.stderr + res.stdout


def test_429_is_retried_after_its_retry_after(uddi_stack: Stack, cli: CLI) -> None:
    assert uddi_stack.uddi is not None
    uddi_stack.uddi.fail(429, count=1, methods={"POST"}, retry_after="2")
    started = time.monotonic()
    res = cli(uddi_stack.write_config(uddi_stack.settings("uddi")), "-v", "issue")
    took = time.monotonic() - started
    assert res.code == 0, res.stderr
    assert "answered 429" in res.stderr
    assert "retrying in 2.0s" in res.stderr
    assert took >= 2
    assert stored_set(uddi_stack) is not None
    assert no_records(uddi_stack)


def test_429_asking_too_long_a_wait_fails_at_once(uddi_stack: Stack, cli: CLI) -> None:
    assert uddi_stack.uddi is not None
    uddi_stack.uddi.fail(429, methods={"POST"}, retry_after="3600")
    started = time.monotonic()
    res = cli(uddi_stack.write_config(uddi_stack.settings("uddi")), "issue")
    uddi_stack.uddi.fail(None)
    assert_one_error_line(res, "uddi: could not create TXT record", "POST dns/record answered 429", "3600s")
    assert time.monotonic() - started < 30
    assert no_records(uddi_stack)


def test_transient_503_is_retried(uddi_stack: Stack, cli: CLI) -> None:
    assert uddi_stack.uddi is not None
    uddi_stack.uddi.fail(503, count=1, methods={"POST"})
    res = cli(uddi_stack.write_config(uddi_stack.settings("uddi")), "issue")
    assert res.code == 0, res.stderr
    assert stored_set(uddi_stack) is not None
    assert no_records(uddi_stack)


def test_slow_api_times_out_with_a_clear_line(uddi_stack: Stack, cli: CLI) -> None:
    assert uddi_stack.uddi is not None
    settings = uddi_stack.settings("uddi")
    settings["dns"]["uddi"]["timeout"] = 0.5
    settings["dns"]["uddi"]["retries"] = 2
    uddi_stack.uddi.slow(2.0)
    started = time.monotonic()
    res = cli(uddi_stack.write_config(settings), "issue")
    uddi_stack.uddi.slow(None)
    assert_one_error_line(res, "uddi:", "answer from", "within 0.5s")
    assert time.monotonic() - started < 30
    assert stored_set(uddi_stack) is None


def test_unknown_view_is_one_line(uddi_stack: Stack, cli: CLI) -> None:
    settings = uddi_stack.settings("uddi")
    settings["dns"]["uddi"]["view"] = "nosuchview"
    res = cli(uddi_stack.write_config(settings), "issue")
    assert_one_error_line(res, "uddi: could not find DNS view nosuchview", "dns.uddi.view")
    assert no_records(uddi_stack)


def test_a_zone_in_two_views_needs_the_view_named(uddi_stack: Stack, cli: CLI) -> None:
    assert uddi_stack.uddi is not None
    uddi_stack.uddi.add_zone(ZONE, "external")
    settings = uddi_stack.settings("uddi")
    res = cli(uddi_stack.write_config(settings), "issue")
    assert_one_error_line(res, f"uddi: zone {ZONE}. is in 2 views; set dns.uddi.view")
    settings["dns"]["uddi"]["view"] = "default"
    ok = cli(uddi_stack.write_config(settings), "issue")
    assert ok.code == 0, ok.stderr
    assert no_records(uddi_stack)


def test_records_left_by_a_crashed_run_are_removed_and_foreign_ones_kept(uddi_stack: Stack, cli: CLI) -> None:
    uddi = uddi_stack.uddi
    assert uddi is not None
    uddi.add_record(NAME, "left-by-crash", tags={"rgwtls": "acme-challenge"}, comment="rgwtls acme-challenge by rgw1")
    uddi.add_record(NAME, "someone-elses", comment="made by hand")
    journal = json.dumps([{"domain": ZONE, "token": "t", "value": "left-by-crash"}]).encode()
    ioctx = uddi_stack.ceph.admin().open_ioctx(POOL)
    ioctx.set_namespace("acme")
    ioctx.write_full("challenges.journal", journal)
    ioctx.close()
    res = cli(uddi_stack.write_config(uddi_stack.settings("uddi")), "issue")
    assert res.code == 0, res.stderr
    assert "left by an earlier run" in res.stderr
    assert {r["rdata"]["text"] for r in uddi.records()} == {"someone-elses"}
    assert uddi_stack.bind.txt(NAME) == {"someone-elses"}
    assert stored(uddi_stack, "challenges.journal", ns="acme") is None


def test_an_existing_record_of_someone_else_with_our_value_is_not_taken(uddi_stack: Stack, cli: CLI) -> None:
    uddi = uddi_stack.uddi
    assert uddi is not None
    # As if a person copied the value: we neither adopt nor delete it.
    from rgwtls.config import parse
    from rgwtls.dns import Challenge
    from rgwtls.dns.uddi import Uddi

    uddi.add_record(NAME, "copied-value", comment="made by hand")
    cfg = parse(json.loads(json.dumps(uddi_stack.settings("uddi"))), uddi_stack.dir / "x.toml")
    backend = Uddi(cfg.dns.uddi, cfg.path)
    from rgwtls.errors import DnsError

    with pytest.raises(DnsError, match="a record with this value exists and was not made by rgwtls"):
        backend.present(Challenge(ZONE, "t", "copied-value"))
    backend.cleanup(Challenge(ZONE, "t", "copied-value"))
    assert [r["rdata"]["text"] for r in uddi.records()] == ["copied-value"]


def test_no_secret_reaches_the_output_even_with_debug(uddi_stack: Stack) -> None:
    assert uddi_stack.uddi is not None
    res = run_cli(uddi_stack.write_config(uddi_stack.settings("uddi")), "--debug", "issue")
    assert res.code == 0, res.stderr
    assert uddi_stack.uddi.api_key not in res.stdout + res.stderr
