"""External Account Binding against a Pebble that requires it, as Sectigo, HARICA, ZeroSSL and Google do."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devsite.bind import Bind
from devsite.pebble import Pebble, pebble_server
from devsite.tlsca import TestCA
from tests.conftest import Result, Stack
from tests.test_issue_e2e import assert_one_error_line, stored_set

CLI = Callable[..., Result]
# As a CA hands them out: a key ID, and an HMAC key in base64url.
KID = "kid-rgwtls-1"
HMAC_KEY = secrets.token_urlsafe(48)
STAGING_KID = "kid-rgwtls-staging"
STAGING_HMAC_KEY = secrets.token_urlsafe(48)


@pytest.fixture(scope="module")
def eab_pebble(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA, bind: Bind) -> Iterator[Pebble]:
    keys = {KID: HMAC_KEY, STAGING_KID: STAGING_HMAC_KEY}
    with pebble_server(
        tmp_path_factory.mktemp("pebble-eab"), test_ca, bind.port, eab_keys=keys, eab_required=True
    ) as p:
        yield p


def settings_for(stack: Stack, pebble: Pebble, kid: str = KID, key: str = HMAC_KEY) -> dict[str, Any]:
    settings = stack.settings()
    settings["acme"]["directory"] = pebble.directory_url
    settings["acme"]["staging_directory"] = pebble.directory_url + "?staging"
    if kid:
        settings["acme"]["eab_kid"] = kid
        settings["acme"]["eab_hmac_key_file"] = str(stack.secret_file("eab-hmac", key))
    return settings


def test_a_good_binding_registers_and_later_runs_use_the_account_without_it(
    stack: Stack, cli: CLI, eab_pebble: Pebble
) -> None:
    config = stack.write_config(settings_for(stack, eab_pebble))
    res = cli(config, "-v", "issue")
    assert res.code == 0, res.stderr
    assert f"registered a new account at {eab_pebble.directory_url}, bound to key ID {KID}" in res.stderr
    assert stored_set(stack) is not None
    # The account exists now: it is looked up, and no binding is sent again.
    res = cli(config, "-v", "--debug", "issue", "--force")
    assert res.code == 0, res.stderr
    assert "registered a new account" not in res.stderr
    assert HMAC_KEY not in res.stderr  # the secret goes nowhere but into the binding's MAC
    s = stored_set(stack)
    assert s is not None
    assert s["generation"] == 2


def test_a_wrong_hmac_key_is_one_line(stack: Stack, cli: CLI, eab_pebble: Pebble) -> None:
    wrong = secrets.token_urlsafe(48)
    res = cli(stack.write_config(settings_for(stack, eab_pebble, key=wrong)), "issue")
    assert_one_error_line(
        res, "could not register the ACME account", f"External Account Binding key ID '{KID}'", "acme.eab_kid"
    )
    assert wrong not in res.stderr
    assert stored_set(stack) is None


def test_a_missing_binding_where_the_ca_requires_one_is_one_line(stack: Stack, cli: CLI, eab_pebble: Pebble) -> None:
    res = cli(stack.write_config(settings_for(stack, eab_pebble, kid="")), "issue")
    assert_one_error_line(res, "requires External Account Binding", "set acme.eab_kid and acme.eab_hmac_key_file")
    assert stored_set(stack) is None


def test_staging_has_its_own_binding(stack: Stack, cli: CLI, eab_pebble: Pebble, tmp_path: Path) -> None:
    settings = settings_for(stack, eab_pebble)
    config = stack.write_config(settings)
    res = cli(config, "issue", "--staging")
    assert_one_error_line(res, "requires External Account Binding", "acme.staging_eab_kid")
    settings["acme"]["staging_eab_kid"] = STAGING_KID
    settings["acme"]["staging_eab_hmac_key_file"] = str(stack.secret_file("eab-staging", STAGING_HMAC_KEY))
    res = cli(stack.write_config(settings), "-v", "issue", "--staging")
    assert res.code == 0, res.stderr
    assert f"bound to key ID {STAGING_KID}" in res.stderr
    assert stored_set(stack, ns="staging") is not None
    assert stored_set(stack) is None


def test_a_key_that_is_not_base64url_is_one_line(stack: Stack, cli: CLI, eab_pebble: Pebble) -> None:
    res = cli(stack.write_config(settings_for(stack, eab_pebble, key="not base64url!")), "issue")
    assert_one_error_line(res, "acme.eab_hmac_key_file", "does not hold a base64url key")


def test_a_hmac_key_file_others_can_read_is_warned_about(stack: Stack, cli: CLI, eab_pebble: Pebble) -> None:
    settings = settings_for(stack, eab_pebble)
    Path(settings["acme"]["eab_hmac_key_file"]).chmod(0o644)
    res = cli(stack.write_config(settings), "issue")
    assert res.code == 0, res.stderr
    assert "is accessible by group or others (mode 0644); run: chmod 600" in res.stderr


@pytest.mark.parametrize(
    ("acme", "missing"),
    [
        ({"eab_kid": KID}, "acme.eab_hmac_key_file"),
        ({"eab_hmac_key_file": "/etc/rgwtls/eab-hmac"}, "acme.eab_kid"),
        ({"staging_eab_kid": KID}, "acme.staging_eab_hmac_key_file"),
    ],
)
def test_half_a_binding_in_the_config_is_one_line(acme: dict[str, str], missing: str) -> None:
    from rgwtls.config import parse
    from rgwtls.errors import ConfigError

    raw = {"acme": acme, "certificate": [{"name": "cog.example.org", "domains": ["cog.example.org"]}]}
    with pytest.raises(ConfigError, match=f"{missing}: required: External Account Binding needs both"):
        parse(raw, Path("/etc/rgwtls/rgwtls.toml"))


@pytest.mark.parametrize("name", ["letsencrypt", "geant-tcs-harica", "zerossl", "google-trust-services"])
def test_each_ca_example_loads_and_says_where_its_directory_url_comes_from(name: str) -> None:
    from rgwtls.config import load

    path = Path(__file__).resolve().parent.parent / "examples" / f"ca-{name}.toml"
    cfg = load(path)
    assert cfg.acme.directory.startswith("https://")
    assert "Directory URL" in path.read_text()
    assert bool(cfg.acme.eab_kid) is (name != "letsencrypt")
