"""dns-persist-01 end to end, against Debian sid's Pebble 2.10: one standing record, then orders with no DNS write."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devsite.bind import Bind, bind_server
from devsite.pebble import PERSIST_ISSUER, pebble_server
from devsite.tlsca import TestCA
from tests.conftest import ZONE, Result, Stack
from tests.test_issue_crash_e2e import last_issue
from tests.test_issue_e2e import assert_one_error_line, stored, stored_set

CLI = Callable[..., Result]
NAME = f"_validation-persist.{ZONE}"
ISSUER = PERSIST_ISSUER


def persist_settings(stack: Stack, **dns: Any) -> dict[str, Any]:
    settings = stack.settings()
    settings["dns"].update(challenge="dns-persist-01", **dns)
    return settings


def account_of(res: Result) -> str:
    """The accounturi in `rgwtls persist`'s one line."""
    found = re.search(r"accounturi=(\S+?);", res.stdout)
    assert found is not None, res.stdout + res.stderr
    return found.group(1)


@pytest.fixture
def hand(stack: Stack) -> Iterator[list[tuple[Bind, str, str]]]:
    """Records a test writes straight into a BIND, as a person would; removed after it."""
    made: list[tuple[Bind, str, str]] = []
    yield made
    for bind, name, value in made:
        with contextlib.suppress(Exception):  # gone already
            bind.delete_txt(name, value)


def test_persist_prints_the_exact_record_and_publish_never_duplicates_it(stack: Stack, cli: CLI) -> None:
    config = stack.write_config(persist_settings(stack))
    res = cli(config, "persist")
    assert res.code == 0, res.stderr
    account = account_of(res)
    assert account.startswith(stack.pebble.directory_url.removesuffix("/dir"))
    value = f"{ISSUER}; accounturi={account}; policy=wildcard"
    assert res.stdout == f'{NAME}. 60 IN TXT "{value}"\n'
    assert stack.bind.txt(NAME) == set()
    assert stack.wapi.records() == []
    # Published once, through the back end.
    res = cli(config, "persist", "--publish")
    assert res.code == 0, res.stderr
    assert f"published TXT {NAME}" in res.stderr
    assert stack.bind.txt(NAME) == {value}
    assert [r["text"] for r in stack.wapi.records()] == [value]
    # Again: every server answers it, so nothing is written, and the back end is not even asked.
    stack.wapi.clear_log()
    res = cli(config, "persist", "--publish")
    assert res.code == 0, res.stderr
    assert res.stderr == ""
    assert stack.wapi.requests_log == []
    assert [r["text"] for r in stack.wapi.records()] == [value]
    # The same account: the record names the account the issuer uses.
    assert account_of(res) == account
    res = cli(config, "persist", "--remove")
    assert res.code == 0, res.stderr
    assert stack.bind.txt(NAME) == set()
    assert stack.wapi.records() == []


def test_publish_once_then_issue_several_times_without_dns_credentials(stack: Stack, cli: CLI) -> None:
    settings = persist_settings(stack)
    assert cli(stack.write_config(settings), "persist", "--publish").code == 0
    stack.wapi.clear_log()
    # The issuer keeps no Infoblox credentials from now on.
    Path(settings["dns"]["infoblox"]["password_file"]).unlink()
    del settings["dns"]["infoblox"]
    config = stack.write_config(settings)
    for generation, args in enumerate((("issue",), ("issue", "--force"), ("issue", "--force")), start=1):
        res = cli(config, *args)
        assert res.code == 0, res.stderr
        s = stored_set(stack)
        assert s is not None
        assert s["generation"] == generation
    assert stack.wapi.requests_log == []
    assert not stack.bind.txt(f"_acme-challenge.{ZONE}")
    assert stored(stack, "challenges.journal", ns="acme") is None
    log = stack.pebble.server.log.read_text()
    assert "DNS-PERSIST-01" not in log or "No valid TXT record" not in log


def test_issue_without_the_record_names_it_where_and_the_fix_before_ordering(stack: Stack, cli: CLI) -> None:
    config = stack.write_config(persist_settings(stack))
    orders = stack.pebble.server.log.read_text().count("orders in the db")
    res = cli(config, "issue")
    assert_one_error_line(
        res, "dns-persist-01:", f"{NAME} at 127.0.0.1:{stack.bind.port}: missing", "run: rgwtls persist --publish"
    )
    assert stack.pebble.server.log.read_text().count("orders in the db") == orders
    assert stored_set(stack) is None
    assert last_issue(stack)["ok"] is False
    # The fix it names works.
    assert cli(config, "persist", "--publish").code == 0
    res = cli(config, "issue")
    assert res.code == 0, res.stderr


def test_a_wildcard_record_without_policy_wildcard_is_named_before_ordering(
    stack: Stack, cli: CLI, hand: list[tuple[Bind, str, str]]
) -> None:
    config = stack.write_config(persist_settings(stack))
    account = account_of(cli(config, "persist"))
    value = f"{ISSUER}; accounturi={account}"
    stack.bind.add_txt(NAME, value)
    hand.append((stack.bind, NAME, value))
    res = cli(config, "issue")
    assert_one_error_line(res, f"{NAME} at 127.0.0.1:{stack.bind.port}: mismatched", f"policy=wildcard, which *.{ZONE}")


@pytest.mark.parametrize(
    ("what_the_ca_sees", "rejected", "accepted", "said"),
    [
        (
            f"{ISSUER}; accounturi=https://127.0.0.1:1/my-account/0; policy=wildcard",
            [f"*.{ZONE}", ZONE],
            [],
            "accounturi mismatch",
        ),
        ("{issuer}; accounturi={account}", [f"*.{ZONE}"], [ZONE], 'policy mismatch: expected "wildcard"'),
    ],
    ids=["wrong-accounturi", "no-policy-wildcard"],
)
def test_the_cas_rejection_is_reported_per_name_in_its_words(
    stack: Stack,
    cli: CLI,
    tmp_path: Path,
    test_ca: TestCA,
    what_the_ca_sees: str,
    rejected: list[str],
    accepted: list[str],
    said: str,
) -> None:
    # Our servers answer the right record; the CA asks another one (a split-horizon
    # mistake, or a record someone changed) that answers `what_the_ca_sees`.
    with (
        bind_server(tmp_path / "other-view", zones=(ZONE,)) as other_view,
        pebble_server(tmp_path / "pebble", test_ca, other_view.port) as blind_pebble,
    ):
        settings = persist_settings(stack, nameservers=[f"127.0.0.1:{stack.bind.port}"])
        settings["acme"]["directory"] = blind_pebble.directory_url
        config = stack.write_config(settings)
        res = cli(config, "persist", "--publish")
        assert res.code == 0, res.stderr
        account = account_of(res)
        other_view.add_txt(NAME, what_the_ca_sees.format(issuer=ISSUER, account=account))
        res = cli(config, "issue")
    assert_one_error_line(res, "ACME: the CA rejected the dns-persist-01 validation", said)
    error = next(line for line in res.lines if line.startswith("ERROR:"))
    for name in rejected:
        assert f"{name}: " in error, error
    for name in accepted:
        assert f"; {name}: " not in error, error
        assert f"validation: {name}: " not in error, error
    assert stored_set(stack) is None


def test_status_and_check_warn_of_a_missing_or_mismatched_record_before_it_breaks_a_renewal(
    stack: Stack, cli: CLI, hand: list[tuple[Bind, str, str]]
) -> None:
    config = stack.write_config(persist_settings(stack))
    res = cli(config, "persist", "--publish")
    account = account_of(res)
    assert cli(config, "issue").code == 0
    res = cli(config, "status")
    assert f'persist   {NAME} TXT "{ISSUER}; accounturi={account}; policy=wildcard": answered by every' in res.stdout
    assert "dns-persist-01" not in cli(config, "check").stdout
    # Someone removes it: a renewal would fail, the certificate is still good.
    assert cli(config, "persist", "--remove").code == 0
    where = f"127.0.0.1:{stack.bind.port}"
    res = cli(config, "status")
    assert f"at {where}: missing (no value for issuer {ISSUER})" in res.stdout, res.stdout
    res = cli(config, "check")
    assert f"{ZONE}: dns-persist-01 record {NAME} at {where}: missing" in res.stdout, res.stdout
    assert "run 'rgwtls persist --publish' on the issuer" in res.stdout
    # Or it names another account (the account key was replaced).
    other = f"{ISSUER}; accounturi={account}0; policy=wildcard"
    stack.bind.add_txt(NAME, other)
    hand.append((stack.bind, NAME, other))
    res = cli(config, "check")
    assert f"at {where}: mismatched: accounturi={account}0 is not this account" in res.stdout, res.stdout
    doc = json.loads(cli(config, "status", "--json").stdout)
    (st,) = doc["certificates"]
    assert st["persist"][0]["record"] == NAME
    assert "mismatched" in st["persist"][0]["problems"][0]
    assert len(st["persist_warnings"]) == 1
