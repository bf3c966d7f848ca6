"""The CA through a real proxy (tinyproxy), the DNS back end direct, against the whole stack.

Pebble also answers to a name only the proxy can resolve (ONLY_VIA_PROXY): by
that name the CA is reachable through the proxy and not at all directly, as at
a site whose gateways have no route to the internet.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devsite.ports import free_port
from devsite.proxy import Tinyproxy, tinyproxy
from devsite.tlsca import TestCA
from tests.conftest import Result, Stack
from tests.test_issue_ca_e2e import AriServer
from tests.test_issue_e2e import assert_one_error_line, no_challenge_records, stored_set

CLI = Callable[..., Result]


def through(stack: Stack, proxy: Tinyproxy, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stack's settings with acme.proxy set to `proxy`, its password in a 0600 file."""
    s = settings or stack.settings()
    s["acme"]["proxy"] = proxy.url
    if proxy.user:
        s["acme"]["proxy_password_file"] = str(stack.secret_file("proxy-password", proxy.password))
    return s


def only_via_proxy(stack: Stack, settings: dict[str, Any]) -> dict[str, Any]:
    settings["acme"]["directory"] = stack.pebble.proxied_directory_url
    settings["acme"]["staging_directory"] = stack.pebble.proxied_directory_url + "?staging"
    return settings


def pebble_at(stack: Stack) -> str:
    return f"127.0.0.1:{stack.pebble.port}"


def wapi_at(stack: Stack) -> str:
    return stack.wapi.url.removeprefix("https://")


def nothing_kept(stack: Stack) -> bool:
    state = stack.dir / "state"
    return not state.exists() or not any(p.is_file() for p in state.rglob("*") if "lock" not in p.name)


# -- the way there -------------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {},
        # A proxy for everything in the environment: WAPI must not go through it.
        {"HTTPS_PROXY": "PROXY"},
        # And a NO_PROXY that would send the CA direct: acme.proxy wins.
        {"HTTPS_PROXY": "PROXY", "NO_PROXY": "127.0.0.1,localhost"},
    ],
    ids=["no-env", "https-proxy-env", "no-proxy-env"],
)
def test_issue_with_acme_proxy_connects_to_pebble_through_it_and_to_wapi_direct(
    stack: Stack, cli: CLI, proxy: Tinyproxy, env: dict[str, str]
) -> None:
    env = {k: v.replace("PROXY", proxy.bare_url) for k, v in env.items()}
    res = cli(stack.write_config(through(stack, proxy)), "-v", "issue", env=env)
    assert res.code == 0, res.stderr
    assert stored_set(stack) is not None
    assert no_challenge_records(stack)
    connects = proxy.connects()
    assert connects, proxy.log_text()
    assert set(connects) == {pebble_at(stack)}, connects
    assert wapi_at(stack) not in connects
    # -v names the way each kind of connection goes, without the password.
    assert f"go through proxy {proxy.bare_url} (acme.proxy, as user rgwtls)" in res.stderr
    assert "infoblox: WAPI requests to" in res.stderr
    assert "go direct (dns.infoblox.proxy: direct, or unset while acme.proxy is set)" in res.stderr
    assert proxy.password not in res.stderr + res.stdout


def test_pebble_reachable_only_through_the_proxy_issues_with_it_and_fails_without(
    stack: Stack, cli: CLI, proxy: Tinyproxy
) -> None:
    without = only_via_proxy(stack, stack.settings())
    res = cli(stack.write_config(without, "direct.toml"), "issue")
    assert_one_error_line(res, f"cannot reach {stack.pebble.proxied_directory_url} directly")
    assert stored_set(stack) is None
    assert no_challenge_records(stack)
    assert proxy.connects() == []

    # "direct" is direct even when the environment names a proxy that would work.
    direct = only_via_proxy(stack, stack.settings())
    direct["acme"]["proxy"] = "direct"
    env = {"HTTPS_PROXY": f"http://{proxy.user}:{proxy.password}@127.0.0.1:{proxy.port}"}
    res = cli(stack.write_config(direct, "forced-direct.toml"), "issue", env=env)
    assert_one_error_line(res, "directly")
    assert proxy.password not in res.stderr
    assert proxy.connects() == []

    res = cli(stack.write_config(through(stack, proxy, only_via_proxy(stack, stack.settings()))), "issue")
    assert res.code == 0, res.stderr
    assert stored_set(stack) is not None
    assert no_challenge_records(stack)
    assert set(proxy.connects()) == {f"{stack.pebble.proxied_directory_url.split('/')[2]}"}


def test_environment_decides_when_the_config_names_no_proxy(stack: Stack, cli: CLI, proxy: Tinyproxy) -> None:
    # HTTPS_PROXY in the environment with its credentials, no proxy key: as requests always did,
    # both the CA and WAPI go through it.
    settings = only_via_proxy(stack, stack.settings())
    env = {"HTTPS_PROXY": f"http://{proxy.user}:{proxy.password}@127.0.0.1:{proxy.port}"}
    res = cli(stack.write_config(settings), "-v", "issue", env=env)
    assert res.code == 0, res.stderr
    assert stored_set(stack) is not None
    connects = set(proxy.connects())
    assert wapi_at(stack) in connects
    assert stack.pebble.proxied_directory_url.split("/")[2] in connects
    assert f"go through proxy {proxy.bare_url} (as the environment's HTTPS_PROXY and NO_PROXY say" in res.stderr
    assert proxy.password not in res.stderr


def test_infoblox_proxy_of_its_own_carries_wapi_and_not_the_ca(stack: Stack, cli: CLI, tmp_path: Path) -> None:
    with tinyproxy(tmp_path / "internal-proxy") as internal:
        settings = stack.settings()
        settings["dns"]["infoblox"]["proxy"] = internal.url
        res = cli(stack.write_config(settings), "issue")
        assert res.code == 0, res.stderr
        assert set(internal.connects()) == {wapi_at(stack)}
    assert no_challenge_records(stack)


def test_renewal_info_request_goes_through_the_proxy(stack: Stack, cli: CLI, proxy: Tinyproxy, test_ca: TestCA) -> None:
    ari = AriServer(stack.pebble, test_ca)  # Pebble 2.4 has no ARI: a directory with renewalInfo added
    try:
        settings = through(stack, proxy)
        settings["acme"]["directory"] = f"{ari.url}/dir"
        config = stack.write_config(settings)
        assert cli(config, "issue").code == 0
        now = dt.datetime.now(dt.UTC)
        ari.window = (now + dt.timedelta(days=5), now + dt.timedelta(days=6))
        before = len(proxy.connects())
        res = cli(config, "-v", "issue")
        assert res.code == 0, res.stderr
        assert "the CA's renewal window (ARI) opens" in res.stderr, res.stderr
        assert ari.asked
        assert ari.url.removeprefix("https://") in proxy.connects()[before:]
        # Through a proxy that is down, the CA's answers are missed, and the line says where.
        dead = f"http://127.0.0.1:{free_port()}"
        settings["acme"]["proxy"] = dead
        del settings["acme"]["proxy_password_file"]
        res = cli(stack.write_config(settings, "dead-proxy.toml"), "-v", "issue")
        assert res.code == 0, res.stderr
        assert "renewal info unavailable" in res.stderr
        assert f"cannot connect to proxy {dead} (acme.proxy)" in res.stderr
    finally:
        ari.close()


def test_status_and_check_judge_as_without_the_proxy_when_it_is_dead_and_only_note_the_cas_window(
    stack: Stack, cli: CLI
) -> None:
    # The verdict comes from the pool, this host's files and the gateway's handshake: internal only.
    # Only the CA's renewal window (ARI) goes through acme.proxy: a dead proxy is a note on the line, never a state.
    first = cli(stack.write_config(stack.settings()), "issue")
    assert first.code == 0, first.stderr
    without = cli(stack.write_config(stack.settings(), "no-proxy.toml"), "check")
    settings = stack.settings()
    settings["acme"]["proxy"] = f"http://127.0.0.1:{free_port()}"
    # A state directory of its own: the first check's ARI answer is kept in the other one.
    settings["deploy"]["state_dir"] = str(stack.dir / "state-dead-proxy")
    (stack.dir / "state-dead-proxy").mkdir()
    config = stack.write_config(settings, "dead-proxy.toml")
    status = cli(config, "status", "--json")
    assert "proxy" not in status.stderr, status.stderr
    assert '"pool"' in status.stdout, status.stdout
    check = cli(config, "check")
    assert check.code == without.code, check.stdout  # a verdict, not UNKNOWN (3), and the same one
    assert "the CA's renewal window (ARI) was not asked: " in check.stdout
    assert "cannot connect to proxy http://127.0.0.1:" in check.stdout
    assert check.stderr == ""


# -- failures: one line naming the proxy and the CA, no record, nothing stored ----------


def _proxy_failure(stack: Stack, cli: CLI, settings: dict[str, Any], *needles: str) -> Result:
    started = time.monotonic()
    res = cli(stack.write_config(settings), "issue")
    # The CA by its address: the step may be any, the directory fetch or a later one.
    assert_one_error_line(res, pebble_at(stack), *needles)
    assert stored_set(stack) is None
    assert no_challenge_records(stack)
    assert nothing_kept(stack)
    assert time.monotonic() - started < 30
    return res


def test_proxy_that_is_down_is_one_line_naming_it_and_the_ca(stack: Stack, cli: CLI) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = stack.settings()
    settings["acme"]["proxy"] = dead
    _proxy_failure(
        stack,
        cli,
        settings,
        f"cannot connect to proxy {dead} (acme.proxy) for {pebble_at(stack)}",
        "Connection refused",
    )


def test_proxy_that_refuses_connect_is_one_line_with_its_403(stack: Stack, cli: CLI, tmp_path: Path) -> None:
    with tinyproxy(tmp_path / "strict-proxy", connect_ports=(443,)) as strict:
        settings = stack.settings()
        settings["acme"]["proxy"] = strict.url
        res = _proxy_failure(
            stack, cli, settings, f"proxy {strict.bare_url} refused CONNECT to {pebble_at(stack)}", "answered 403"
        )
        # Refused is final: asked once, not retried.
        assert len(strict.connects()) == 1, strict.connects()
    assert "retry" not in res.stderr


def test_wrong_proxy_password_is_one_line_naming_the_user_never_the_password(
    stack: Stack, cli: CLI, proxy: Tinyproxy
) -> None:
    settings = stack.settings()
    settings["acme"]["proxy"] = proxy.url
    settings["acme"]["proxy_password_file"] = str(stack.secret_file("wrong-proxy-password", "not-the-password"))
    res = _proxy_failure(stack, cli, settings, f"proxy {proxy.bare_url} refused the password of user rgwtls")
    assert len(proxy.connects()) == 1
    # --force: the retry schedule would hold a second attempt this soon back.
    debug = cli(stack.write_config(settings), "--debug", "issue", "--force")
    assert debug.code == 1
    assert "not-the-password" not in res.stderr + debug.stderr + debug.stdout


def test_proxy_that_wants_a_password_says_so(stack: Stack, cli: CLI, proxy: Tinyproxy) -> None:
    settings = stack.settings()
    settings["acme"]["proxy"] = proxy.bare_url
    _proxy_failure(stack, cli, settings, f"proxy {proxy.bare_url} wants a user and password", "answered 407")


def test_no_proxy_password_reaches_the_output_even_with_debug(stack: Stack, cli: CLI, proxy: Tinyproxy) -> None:
    res = cli(stack.write_config(through(stack, proxy)), "--debug", "issue")
    assert res.code == 0, res.stderr
    assert proxy.password not in res.stdout + res.stderr
    assert proxy.connects()


def test_infoblox_proxy_that_refuses_connect_is_one_infoblox_line(stack: Stack, cli: CLI, tmp_path: Path) -> None:
    with tinyproxy(tmp_path / "internal-proxy", connect_ports=(443,)) as strict:
        settings = stack.settings()
        settings["dns"]["infoblox"]["proxy"] = strict.url
        res = cli(stack.write_config(settings), "issue")
    assert_one_error_line(res, "infoblox:", f"proxy {strict.bare_url} refused CONNECT to {wapi_at(stack)}", "403")
    assert stored_set(stack) is None
    assert no_challenge_records(stack)
