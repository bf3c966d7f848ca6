"""Delegated challenges (CNAME alias mode) end to end: Pebble validates through the CNAME, every back end
writes in the challenge zone only, and nothing is ever written to the production zone.

The site's BIND serves the production zone `cog.example.org`, whose
`_acme-challenge` is a CNAME into the challenge zone `acme.example.net`. The
challenge zone has a key of its own, as a site gives the issuer: the
production zone's key is never needed, and the production zone must keep its
first serial and never get a journal.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devsite.bind import Bind, bind_server, resolver_server
from devsite.ceph import CephCluster
from devsite.pebble import Pebble, pebble_server
from devsite.ports import free_port
from devsite.tlsca import TestCA
from devsite.uddi import UddiEmulator, uddi_emulator
from devsite.wapi import WapiEmulator, wapi_emulator
from tests import waits
from tests.conftest import POOL, ZONE, Result, Stack
from tests.test_issue_e2e import assert_one_error_line, stored, stored_set, verify_against_pebble, write_hook

CLI = Callable[..., Result]

ALIAS_ZONE = "acme.example.net"
TARGET = f"{ZONE}.{ALIAS_ZONE}"  # where _acme-challenge.cog.example.org points
CHAIN = f"chain.{ZONE}"  # _acme-challenge.chain -> step -> chain.cog.example.org.acme.example.net
AT_ALIAS = f"alias.{ZONE}"  # _acme-challenge.alias -> _acme-challenge.acme.example.net
LOOP = f"loop.{ZONE}"
DANGLING = f"dangling.{ZONE}"
PRODUCTION_RECORDS = (
    f"_acme-challenge IN CNAME {TARGET}.",
    f"_acme-challenge.chain IN CNAME step.{ZONE}.",
    f"step IN CNAME {CHAIN}.{ALIAS_ZONE}.",
    f"_acme-challenge.alias IN CNAME _acme-challenge.{ALIAS_ZONE}.",
    f"_acme-challenge.loop IN CNAME hop.{ZONE}.",
    f"hop IN CNAME _acme-challenge.loop.{ZONE}.",
    "_acme-challenge.dangling IN CNAME _acme-challenge.nowhere.example.invalid.",
)


@pytest.fixture(scope="module")
def site_bind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bind]:
    with bind_server(
        tmp_path_factory.mktemp("alias-bind"),
        zones=(ZONE, ALIAS_ZONE),
        own_keys=(ALIAS_ZONE,),
        txt_names=(TARGET, f"{CHAIN}.{ALIAS_ZONE}"),
        records={ZONE: PRODUCTION_RECORDS},
    ) as b:
        yield b


@pytest.fixture(scope="module")
def site_pebble(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA, site_bind: Bind) -> Iterator[Pebble]:
    # The CA asks a resolver, which follows the CNAME into the challenge zone.
    with (
        resolver_server(tmp_path_factory.mktemp("alias-resolver"), site_bind) as resolver,
        pebble_server(tmp_path_factory.mktemp("alias-pebble"), test_ca, resolver.port) as p,
    ):
        yield p


@pytest.fixture(scope="module")
def site_wapi(tmp_path_factory: pytest.TempPathFactory, site_bind: Bind) -> Iterator[WapiEmulator]:
    with wapi_emulator(tmp_path_factory.mktemp("alias-wapi"), site_bind) as w:
        yield w


@pytest.fixture(scope="module")
def site_uddi(tmp_path_factory: pytest.TempPathFactory, site_bind: Bind) -> Iterator[UddiEmulator]:
    with uddi_emulator(tmp_path_factory.mktemp("alias-uddi"), site_bind) as u:
        yield u


@pytest.fixture
def site(
    tmp_path: Path,
    site_bind: Bind,
    site_pebble: Pebble,
    ceph: CephCluster,
    site_wapi: WapiEmulator,
    site_uddi: UddiEmulator,
    issuer_keyring: Path,
    pool: str,
) -> Iterator[Stack]:
    site_wapi.reset()
    site_uddi.reset()
    yield Stack(tmp_path, site_bind, site_pebble, ceph, site_wapi, issuer_keyring, site_uddi)
    site_wapi.reset()
    site_uddi.reset()
    # The resolver caches nothing, but BIND keeps even an answer of TTL 0
    # until its clock's second ends: the next test's CA must not get this one's values.
    # Time must pass, to the end of that second (asking the resolver would cache an answer again).
    last_asked = time.time()
    waits.wait_for(
        "the second of the CA's last question ended",
        lambda: time.time() >= int(last_asked) + 1.02,
        1.1,
        why="BIND keeps a TTL-0 answer to the end of its clock's second",
    )
    # The one promise of this mode: the production zone was never written to.
    assert site_bind.serial(ZONE) == 1
    assert not site_bind.journal(ZONE).exists()


def alias_rfc2136(site: Stack) -> dict[str, object]:
    name, secret = site.bind.key_of(ALIAS_ZONE)
    return {
        "alias_server": "127.0.0.1",
        "alias_port": site.bind.port,
        "alias_tsig_key_name": name,
        "alias_tsig_secret_file": str(site.secret_file("alias-tsig", secret)),
    }


def challenge_records(site: Stack) -> set[str]:
    names = (TARGET, f"{CHAIN}.{ALIAS_ZONE}", f"_acme-challenge.{ALIAS_ZONE}", f"_acme-challenge.{ZONE}")
    return {f"{n} {v}" for n in names for v in site.bind.txt(n)}


def issued(site: Stack, name: str = ZONE) -> None:
    """The pool holds a certificate for `name` and its wildcard that Pebble's root verifies."""
    raw = stored(site, f"{name}/current")
    assert raw is not None
    s = json.loads(raw)
    assert s["domains"] == [name, f"*.{name}"]
    verify_against_pebble(site, s["cert_pem"], s["chain_pem"], name)
    verify_against_pebble(site, s["cert_pem"], s["chain_pem"], f"bucket.{name}")


def certificate(name: str, **extra: object) -> list[dict[str, object]]:
    return [{"name": name, "domains": [name, f"*.{name}"], **extra}]


# -- following the CNAME, with each back end ----------------------------------------


def test_infoblox_follows_the_cname_and_writes_only_in_the_challenge_zone(site: Stack, cli: CLI) -> None:
    res = cli(site.write_config(site.settings()), "-v", "issue")
    assert res.code == 0, res.stderr
    issued(site)
    assert f"_acme-challenge.{ZONE} is delegated: _acme-challenge.{ZONE} -> {TARGET}" in res.stderr
    posted = [path for method, path, _ in site.wapi.requests_log if method == "POST"]
    assert len(posted) == 2  # apex and wildcard, both at the target
    assert challenge_records(site) == set()
    assert site.bind.serial(ALIAS_ZONE) > 1  # the challenge zone took the updates


def test_infoblox_writes_delegated_records_in_the_alias_view(site: Stack, cli: CLI) -> None:
    settings = site.settings()
    # The production zone is in a view we may not touch; the challenge zone in another.
    settings["dns"]["infoblox"]["view"] = "external"
    settings["dns"]["infoblox"]["alias_view"] = "default"
    res = cli(site.write_config(settings), "issue")
    assert res.code == 0, res.stderr
    issued(site)
    assert challenge_records(site) == set()


def test_uddi_follows_the_cname_into_the_challenge_zone(site: Stack, cli: CLI) -> None:
    assert site.uddi is not None
    res = cli(site.write_config(site.settings("uddi")), "issue")
    assert res.code == 0, res.stderr
    issued(site)
    lookups = [p for m, p, _ in site.uddi.requests_log if m == "GET" and "auth_zone" in p]
    # The zone was looked up above the target: the challenge zone was found, the production zone never asked for.
    assert any(f"fqdn+eq+%27{ALIAS_ZONE}.%27" in p for p in lookups), lookups
    assert not any(f"fqdn+eq+%27{ZONE}.%27" in p for p in lookups), lookups
    assert challenge_records(site) == set()


def test_records_a_killed_run_left_in_the_challenge_zone_are_removed_there(site: Stack, cli: CLI) -> None:
    site.wapi.add_record(TARGET, "left-by-crash", comment="rgwtls acme-challenge by rgw1")
    journal = json.dumps([{"domain": ZONE, "token": "t", "value": "left-by-crash", "target": TARGET}]).encode()
    ioctx = site.ceph.admin().open_ioctx(POOL)
    ioctx.set_namespace("acme")
    ioctx.write_full("challenges.journal", journal)
    ioctx.close()
    res = cli(site.write_config(site.settings()), "issue")
    assert res.code == 0, res.stderr
    assert "left by an earlier run" in res.stderr
    assert site.wapi.records() == []
    assert challenge_records(site) == set()


def test_rfc2136_writes_with_the_challenge_zones_own_key_at_its_primary(site: Stack, cli: CLI) -> None:
    settings = site.settings("rfc2136")
    # The production key could not write the challenge zone: BIND would refuse it.
    settings["dns"]["rfc2136"].update(alias_rfc2136(site))
    res = cli(site.write_config(settings), "issue")
    assert res.code == 0, res.stderr
    issued(site)
    assert challenge_records(site) == set()


def test_rfc2136_without_the_alias_key_is_refused_by_the_challenge_zone(site: Stack, cli: CLI) -> None:
    res = cli(site.write_config(site.settings("rfc2136")), "issue")
    assert_one_error_line(res, f"rfc2136: could not add TXT record {TARGET}", "REFUSED")
    assert stored_set(site) is None


def test_a_chain_of_cnames_is_followed_to_its_end(site: Stack, cli: CLI) -> None:
    settings = site.settings("rfc2136")
    settings["dns"]["rfc2136"].update(alias_rfc2136(site))
    settings["certificate"] = certificate(CHAIN)
    res = cli(site.write_config(settings), "-v", "issue")
    assert res.code == 0, res.stderr
    assert f"_acme-challenge.{CHAIN} -> step.{ZONE} -> {CHAIN}.{ALIAS_ZONE}" in res.stderr
    issued(site, CHAIN)
    assert challenge_records(site) == set()


def test_hook_receives_the_target_domain(site: Stack, cli: CLI) -> None:
    name, secret = site.bind.key_of(ALIAS_ZONE)
    secret_file = site.secret_file("hook-tsig", secret)
    calls = site.dir / "calls"
    hook = write_hook(
        site.dir / "hook.sh",
        f"""echo "$@" >> {calls}
case "$1" in
  deploy_challenge) op=add ;;
  clean_challenge) op=delete ;;
  *) exit 0 ;;
esac
printf 'server 127.0.0.1 {site.bind.port}\\nupdate %s _acme-challenge.%s. 60 TXT "%s"\\nsend\\n' \\
  "$op" "$2" "$4" | nsupdate -y "{site.bind.tsig_algorithm}:{name}:$(cat {secret_file})"
""",
    )
    settings = site.settings("hook")
    settings["dns"]["hook"] = {"command": str(hook)}
    settings["certificate"] = certificate(AT_ALIAS)
    res = cli(site.write_config(settings), "issue")
    assert res.code == 0, res.stderr
    issued(site, AT_ALIAS)
    ops = [line.split()[:2] for line in calls.read_text().splitlines()]
    assert ops.count(["deploy_challenge", ALIAS_ZONE]) == 2
    assert ops.count(["clean_challenge", ALIAS_ZONE]) == 2
    assert challenge_records(site) == set()


def test_hook_refuses_a_target_it_cannot_write_in_one_line(site: Stack, cli: CLI) -> None:
    hook = write_hook(site.dir / "hook.sh", "exit 0\n")
    settings = site.settings("hook")
    settings["dns"]["hook"] = {"command": str(hook)}
    res = cli(site.write_config(settings), "issue")
    assert_one_error_line(res, f"hook: the challenge for {ZONE} is delegated to {TARGET}", "challenge_alias")


# -- challenge_alias: no lookup at all -------------------------------------------------


def test_challenge_alias_publishes_there_without_asking_any_resolver(site: Stack, cli: CLI) -> None:
    settings = site.settings()
    # No resolver answers: the CNAME is not visible to the issuer. The servers to check are listed.
    settings["dns"]["resolvers"] = [f"127.0.0.1:{free_port()}"]
    settings["dns"]["nameservers"] = [f"127.0.0.1:{site.bind.port}"]
    settings["certificate"] = certificate(AT_ALIAS, challenge_alias=ALIAS_ZONE)
    res = cli(site.write_config(settings), "issue")
    assert res.code == 0, res.stderr
    issued(site, AT_ALIAS)
    assert {r["name"] for r in site.wapi.records()} == set()
    assert challenge_records(site) == set()


# -- a broken delegation: one line, before anything is published -----------------------


@pytest.mark.parametrize(
    ("name", "needles"),
    [
        (LOOP, ("the CNAME chain of", "loops:", f"_acme-challenge.{LOOP} -> hop.{ZONE} -> _acme-challenge.{LOOP}")),
        (DANGLING, ("is a dangling CNAME", "_acme-challenge.nowhere.example.invalid", "challenge_alias")),
    ],
)
def test_a_broken_delegation_is_one_line_before_anything_is_published(
    site: Stack, cli: CLI, name: str, needles: tuple[str, ...]
) -> None:
    settings = site.settings()
    settings["certificate"] = certificate(name)
    started = time.monotonic()
    res = cli(site.write_config(settings), "issue")
    assert_one_error_line(res, *needles)
    assert time.monotonic() - started < 30
    assert site.wapi.requests_log == []  # nothing published, nothing even asked
    assert stored_set(site) is None
