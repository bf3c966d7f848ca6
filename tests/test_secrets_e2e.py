"""A secret file that is not UTF-8, or not one line, stops `issue` before anything is ordered (real stack)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ZONE, Stack, run_cli
from tests.test_issue_e2e import account_of, stored

LATIN1_SECRET = "\xffs3cr3t\xe9".encode("latin-1")
# A key with a line inside would reach an HTTP header, whose library error quotes the whole value.
TWO_LINES_SECRET = b"s3cr3t\nsecond-s3cr3t-line\n"
SECRET_TRACES = ("s3cr3t", "0xff", "0xe9", "\xff", "\xe9", "position")
BAD_SECRETS = {
    "latin1": (LATIN1_SECRET, "is not UTF-8 text; save it as UTF-8"),
    "two-lines": (TWO_LINES_SECRET, "holds a line break or another control character; keep it on one line"),
}
KEYS = {"infoblox": "password_file", "rfc2136": "tsig_secret_file", "uddi": "api_key_file"}


def bad_secret(stack: Stack, name: str, content: bytes = LATIN1_SECRET) -> Path:
    p = stack.dir / name
    p.write_bytes(content)
    p.chmod(0o600)
    return p


@pytest.mark.parametrize("bad", sorted(BAD_SECRETS))
@pytest.mark.parametrize("provider", ["infoblox", "rfc2136", "uddi"])
def test_a_bad_dns_secret_orders_nothing_publishes_nothing_and_records_no_byte(
    request: pytest.FixtureRequest, stack: Stack, provider: str, bad: str
) -> None:
    content, problem = BAD_SECRETS[bad]
    if provider == "uddi":
        stack = request.getfixturevalue("uddi_stack")
    settings = stack.settings(provider)
    secret = bad_secret(stack, f"{provider}-secret", content)
    settings["dns"][provider][KEYS[provider]] = str(secret)
    config = stack.write_config(settings)
    res = run_cli(config, "issue")
    key = f"dns.{provider}.{KEYS[provider]}"
    assert res.code == 1, res.stderr
    assert res.lines == [f"ERROR: config {config}: {key}: secret file {secret} {problem}"]
    assert not any(t in res.stderr for t in SECRET_TRACES)
    # Nothing was ordered: no account key was even made, and no record is anywhere.
    assert stored(stack, account_of(stack), "acme") is None
    assert stored(stack, f"{ZONE}/last-issue") is None
    assert stored(stack, f"{ZONE}/current") is None
    assert not stack.bind.txt(f"_acme-challenge.{ZONE}")
    assert stack.wapi.requests_log == []
    if stack.uddi is not None:
        assert stack.uddi.requests_log == []
    # With the secret saved right, the next run issues.
    assert run_cli(stack.write_config(stack.settings(provider)), "issue").code == 0
    assert stored(stack, f"{ZONE}/current") is not None
    assert stored(stack, account_of(stack), "acme") is not None  # the object the checks above looked for


def test_a_latin1_eab_key_is_one_line_before_any_account_is_made(stack: Stack) -> None:
    settings = stack.settings()
    secret = bad_secret(stack, "eab-hmac")
    settings["acme"].update(eab_kid="kid-1", eab_hmac_key_file=str(secret))
    res = run_cli(stack.write_config(settings), "issue")
    assert res.code == 1, res.stderr
    assert res.lines[-1].endswith(f"acme.eab_hmac_key_file: secret file {secret} is not UTF-8 text; save it as UTF-8")
    assert len(res.lines) == 1
    assert not any(t in res.stderr for t in SECRET_TRACES)
    assert stored(stack, account_of(stack), "acme") is None
    assert stack.wapi.requests_log == []
