"""The ACME account survives a failed run: kept per CA, written only once a CA registered it, never replaced by a typo.

Through the real stack: the account that External Account Binding bound,
that dns-persist-01 records name and that ARI's `replaces` belongs to must
outlive a mistyped acme.directory, a CA that is down, and a damaged object.
"""

from __future__ import annotations

import json

import pytest

from devsite.ports import free_port
from rgwtls.issue import account_object
from tests.conftest import POOL, Stack, run_cli
from tests.test_issue_e2e import account_of, assert_one_error_line, stored, stored_account, stored_set


def accounts(stack: Stack) -> list[str]:
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    try:
        ioctx.set_namespace("acme")
        return sorted(o.key for o in ioctx.list_objects() if o.key.startswith("account."))
    finally:
        ioctx.close()


def test_mistyped_directory_keeps_the_account_and_going_back_finds_it(stack: Stack) -> None:
    settings = stack.settings()
    config = stack.write_config(settings)
    assert run_cli(config, "issue").code == 0
    account = stored_account(stack)
    assert account is not None
    typo = f"https://localhost:{free_port()}/dri"
    settings["acme"]["directory"] = typo
    res = run_cli(stack.write_config(settings, "typo.toml"), "issue", "--force")
    assert_one_error_line(res, typo)
    # The run reached no CA: no account was made for the typo, and the first one is as it was.
    assert accounts(stack) == [account_of(stack)]
    assert stored(stack, account_object(typo), ns="acme") is None
    assert stored_account(stack) == account
    # Back at the first CA: the same account, no new registration.
    again = run_cli(config, "issue", "--force")
    assert again.code == 0, again.stderr
    assert stored_account(stack) == account
    s = stored_set(stack)
    assert s is not None
    assert s["generation"] == 2


def test_account_of_the_old_layout_is_adopted_not_replaced(stack: Stack) -> None:
    """Before accounts were per CA, production's was acme/account.production: a run after the upgrade keeps using it."""
    config = stack.write_config(stack.settings())
    assert run_cli(config, "issue").code == 0
    account = stored_account(stack)
    assert account is not None
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    try:
        ioctx.set_namespace("acme")
        ioctx.write_full("account.production", account)
        ioctx.remove_object(account_of(stack))
    finally:
        ioctx.close()
    res = run_cli(config, "-v", "issue", "--force")
    assert res.code == 0, res.stderr
    assert "is now kept in acme/account." in res.stderr
    assert stored_account(stack) == account
    assert "registered a new account" not in res.stderr


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"{not json", "it is not JSON"),
        (b'["a", "list"]', "it is a JSON list, not an object"),
        (json.dumps({"directory": "X", "key": "not a PEM key"}).encode(), "its key is not a PEM private key"),
        (
            json.dumps(
                {"directory": "X", "key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}
            ).encode(),
            "its key does not load",
        ),
    ],
    ids=["not-json", "a-list", "not-pem", "bad-pem"],
)
def test_unusable_account_object_is_one_line_naming_it_and_is_left_as_it_was(
    stack: Stack, content: bytes, said: str
) -> None:
    config = stack.write_config(stack.settings())
    assert run_cli(config, "issue").code == 0
    obj = account_of(stack)
    doc = content.replace(b'"X"', json.dumps(stack.pebble.directory_url).encode())
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    try:
        ioctx.set_namespace("acme")
        ioctx.write_full(obj, doc)
    finally:
        ioctx.close()
    res = run_cli(config, "issue", "--force")
    assert_one_error_line(res, f"acme/{obj}", said, f"-N acme rm {obj}", "nothing was changed")
    assert "unexpected" not in res.stderr
    assert stored(stack, obj, ns="acme") == doc
