"""The Ansible role's issuer: its proxy, profile, chain, External Account Binding and Universal DDI
variables, several issuer hosts, and a site whose issuer ran as root before.

Run for real on a fleet of its own (tests/ansible_site.py), beside
tests/test_ansible.py's under xdist.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from devsite.bind import Bind
from devsite.pebble import ONLY_VIA_PROXY, PROFILES, Pebble, pebble_server
from devsite.proxy import Tinyproxy, tinyproxy
from devsite.tlsca import TestCA
from devsite.uddi import UddiEmulator
from rgwtls.config import load
from tests.ansible_helpers import (
    Play,
    run_job,
)
from tests.ansible_site import (
    HOSTS,
    ISSUER_USER,
    Site,
    assert_clean,
    converged_site,
    installed_state,
    issue_minute,
    issuer_config,
    issuer_overrides,
    owner,
    shared_copy,
)
from tests.conftest import SiteServices
from tests.test_chain_e2e import root_name, stored_chain_ends_at
from tests.test_issue_e2e import stored_set


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, site_services: SiteServices) -> Iterator[Site]:
    with converged_site(tmp_path_factory, site_services) as fleet:
        yield fleet


# -- the issuer's proxy, profile, chain, External Account Binding and Universal DDI ------
#
# Two converges, shared by the tests below: the issuer with every one of these
# variables set (the DNS back end Universal DDI, the CA a Pebble that requires a
# binding and is reachable only through the proxy), then the same with each
# secret emptied and the back end Infoblox again. Both converge rgw1 and rgw2
# alone (CONVERGED): what they prove of the other gateways, rgw2 shows. The
# second leaves rgw1 off the group's variables; the test after this section
# converges the group's again.

PROXY_USER = "rgwtls"
PROXY_PASSWORD = "proxy-pw-" + secrets.token_hex(8)
EAB_KID = "kid-rgwtls-ansible"
EAB_HMAC_KEY = secrets.token_urlsafe(48)
STAGING_EAB_KID = "kid-rgwtls-ansible-staging"
STAGING_EAB_HMAC_KEY = secrets.token_urlsafe(48)
# The secret file each variable becomes on the issuer.
SECRET_FILES = {
    "rgwtls_acme_proxy_password": "proxy-password",
    "rgwtls_acme_eab_hmac_key": "eab-hmac",
    "rgwtls_acme_staging_eab_hmac_key": "eab-hmac-staging",
    "rgwtls_uddi_api_key": "uddi-api-key",
}


@pytest.fixture(scope="module")
def ca_pebble(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA, bind: Bind) -> Iterator[Pebble]:
    """A CA as HARICA or ZeroSSL run one: a binding required; Let's Encrypt's profiles; an alternate root."""
    with pebble_server(
        tmp_path_factory.mktemp("pebble-ansible"),
        test_ca,
        bind.port,
        env={"PEBBLE_ALTERNATE_ROOTS": "1"},
        profiles=PROFILES,
        eab_keys={EAB_KID: EAB_HMAC_KEY, STAGING_EAB_KID: STAGING_EAB_HMAC_KEY},
        eab_required=True,
    ) as p:
        yield p


@pytest.fixture(scope="module")
def site_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tinyproxy]:
    """The site's outbound proxy, wanting a password; it alone resolves the CA's name (ONLY_VIA_PROXY)."""
    with tinyproxy(
        tmp_path_factory.mktemp("tinyproxy"),
        user=PROXY_USER,
        password=PROXY_PASSWORD,
        hosts={ONLY_VIA_PROXY: "127.0.0.1"},
    ) as p:
        yield p


CONVERGED = ("rgw1", "rgw2")


class Converge:
    """A converge with extra variables (`-e @FILE`, the secrets from a vault-encrypted `-e @FILE`)."""

    def __init__(self, play: Play, args: list[str], secrets: dict[str, str]) -> None:
        self.play, self.args, self.secrets = play, args, secrets


def _converge_with(
    site: Site, name: str, values: dict[str, Any], vault: dict[str, str], before: tuple[str, ...] = ()
) -> Converge:
    """Converge the fleet with these variables on top of `before`'s (a later `-e` wins)."""
    site.fleet.ensure_order(list(HOSTS))
    args = [*before, "-e", f"@{site.fleet.vars_file(f'{name}.json', values)}"]
    if vault:
        args += ["-e", f"@{site.fleet.vars_file(f'{name}-vault.yml', vault, vault=True)}"]
    # The issuer, and one gateway to prove that none of it reaches the others: rgw3 is rgw2's twin.
    play = site.fleet.play("--diff", "-v", "--limit", ",".join(CONVERGED), *args, order=list(HOSTS))
    assert_clean(play, CONVERGED)
    return Converge(play, args, vault)


@pytest.fixture(scope="module")
def acme_converge(site: Site, ca_pebble: Pebble, site_proxy: Tinyproxy, uddi_server: UddiEmulator) -> Converge:
    vault = {
        "vault_rgwtls_acme_proxy_password": PROXY_PASSWORD,
        "vault_rgwtls_acme_eab_hmac_key": EAB_HMAC_KEY,
        "vault_rgwtls_acme_staging_eab_hmac_key": STAGING_EAB_HMAC_KEY,
        "vault_rgwtls_uddi_api_key": uddi_server.api_key,
    }
    values = {
        "rgwtls_acme_directory": ca_pebble.proxied_directory_url,
        "rgwtls_acme_staging_directory": ca_pebble.proxied_directory_url + "?staging",
        "rgwtls_acme_proxy": site_proxy.url,
        "rgwtls_acme_profile": "tlsserver",
        "rgwtls_acme_preferred_chain": root_name(ca_pebble, 1),
        "rgwtls_acme_eab_kid": EAB_KID,
        "rgwtls_acme_staging_eab_kid": STAGING_EAB_KID,
        "rgwtls_dns_provider": "uddi",
        "rgwtls_uddi_portal": uddi_server.portal,
        "rgwtls_uddi_ca_bundle": shared_copy(site.fleet.workdir, uddi_server.ca_bundle),
        "rgwtls_issuer_config_overrides": issuer_overrides(site.stack, "uddi"),
        # As group_vars/rgws/main.yml points them at the vault.
        **{var: f"{{{{ vault_{var} }}}}" for var in SECRET_FILES},
    }
    return _converge_with(site, "acme", values, vault)


@pytest.fixture(scope="module")
def emptied_converge(site: Site, acme_converge: Converge, site_proxy: Tinyproxy) -> Converge:
    """The same variables with every new secret emptied, and with what needs each: no proxy user, no
    binding, and the back end Infoblox again, whose WAPI is told to go direct."""
    values = {
        **dict.fromkeys(SECRET_FILES, ""),
        "rgwtls_acme_proxy": site_proxy.bare_url,
        "rgwtls_acme_eab_kid": "",
        "rgwtls_acme_staging_eab_kid": "",
        "rgwtls_dns_provider": "infoblox",
        "rgwtls_infoblox_proxy": "direct",
        "rgwtls_issuer_config_overrides": issuer_overrides(site.stack, "infoblox"),
    }
    return _converge_with(site, "emptied", values, {}, before=tuple(acme_converge.args))


def _files_holding(site: Site, needles: dict[str, str]) -> dict[str, list[Path]]:
    """Every file under the fleet's directory (the venvs aside) that holds each secret in plain text."""
    found: dict[str, list[Path]] = {what: [] for what in needles}
    for path in site.fleet.workdir.rglob("*"):
        if "opt" in path.relative_to(site.fleet.workdir).parts or not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        for what, needle in needles.items():
            if needle.encode() in data:
                found[what].append(path)
    return found


def test_new_variables_write_their_keys_into_the_issuer_config_which_rgwtls_loads(
    site: Site, acme_converge: Converge, ca_pebble: Pebble, site_proxy: Tinyproxy, uddi_server: UddiEmulator
) -> None:
    conf = site.host("rgw1").config_dir
    doc = issuer_config(site)
    assert {k: v for k, v in doc["acme"].items() if k not in ("email", "ca_bundle", "key_type")} == {
        "directory": ca_pebble.proxied_directory_url,
        "staging_directory": ca_pebble.proxied_directory_url + "?staging",
        "proxy": f"http://{PROXY_USER}@127.0.0.1:{site_proxy.port}",
        "proxy_password_file": str(conf / "proxy-password"),
        "profile": "tlsserver",
        "preferred_chain": root_name(ca_pebble, 1),
        "eab_kid": EAB_KID,
        "eab_hmac_key_file": str(conf / "eab-hmac"),
        "staging_eab_kid": STAGING_EAB_KID,
        "staging_eab_hmac_key_file": str(conf / "eab-hmac-staging"),
        "run_as": ISSUER_USER,
        **issuer_overrides(site.stack, "uddi")["acme"],
    }
    assert doc["dns"]["provider"] == "uddi"
    assert "infoblox" not in doc["dns"]
    assert doc["dns"]["uddi"] == {
        "portal": uddi_server.portal,
        "api_key_file": str(conf / "uddi-api-key"),
        "view": "",
        "ca_bundle": shared_copy(site.fleet.workdir, uddi_server.ca_bundle),
        "timeout": 3.0,
    }
    # rgwtls' own validation (the role's `validate` ran it before the file went in place).
    cfg = load(conf / "issuer.toml")
    assert cfg.acme.proxy_password_file == str(conf / "proxy-password")
    assert cfg.acme.eab(staging=True) == (STAGING_EAB_KID, str(conf / "eab-hmac-staging"), "acme.staging_eab_")
    assert cfg.dns.uddi.api_key_file == str(conf / "uddi-api-key")
    # The gateways' deploy configuration has no [acme] or [dns] at all.
    for name in HOSTS:
        assert set(tomllib.loads((site.host(name).config_dir / "rgwtls.toml").read_text())) == {
            "ceph",
            "deploy",
            "certificate",
        }


def test_new_secrets_are_0600_files_on_the_issuer_only(site: Site, acme_converge: Converge) -> None:
    issuer = site.host("rgw1")
    for var, name in SECRET_FILES.items():
        path = issuer.config_dir / name
        assert path.read_text().strip() == acme_converge.secrets[f"vault_{var}"], var
        assert path.stat().st_mode & 0o777 == 0o600, path
    # The back end is uddi now: the WAPI password went.
    assert sorted(p.name for p in issuer.config_dir.iterdir()) == sorted(
        ["issuer.toml", "rgwtls.toml", *SECRET_FILES.values()]
    )
    assert sorted(p.name for p in site.host("rgw2").config_dir.iterdir()) == ["rgwtls.toml"]
    assert acme_converge.play.changed()["rgw2"] == 0
    # Nowhere else in plain text: not in the inventory, the play's temporary files or any host's files.
    found = _files_holding(site, acme_converge.secrets)
    assert found == {f"vault_{var}": [issuer.config_dir / name] for var, name in SECRET_FILES.items()}


def test_issuer_converged_with_a_proxy_issues_through_it_with_its_binding_profile_chain_and_uddi(
    site: Site, acme_converge: Converge, ca_pebble: Pebble, site_proxy: Tinyproxy, pool: str, uddi: UddiEmulator
) -> None:
    # The CA's name resolves only in the proxy, and the CA refuses an account without a binding.
    res = run_job(site.host("rgw1").cron_jobs()["rgwtls issue"], timeout=180)
    assert res.returncode == 0, res.stderr
    for what, secret in acme_converge.secrets.items():
        assert secret not in res.stdout + res.stderr, what
    connects = site_proxy.connects()
    assert connects, site_proxy.log_text()
    assert set(connects) == {f"{ONLY_VIA_PROXY}:{ca_pebble.port}"}
    s = stored_set(site.stack)
    assert s is not None
    assert s["profile"] == "tlsserver"
    leaf = x509.load_pem_x509_certificate(str(s["cert_pem"]).encode())
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert round(lifetime.total_seconds() / 3600) == PROFILES["tlsserver"] // 3600
    assert stored_chain_ends_at(site.stack) == root_name(ca_pebble, 1)
    # The challenges went through Universal DDI (direct, not through the proxy), and are gone again.
    calls = [(m, p.split("?")[0]) for m, p, _ in uddi.requests_log]
    assert calls.count(("POST", "/api/ddi/v1/dns/record")) == 2
    assert not uddi.records()
    assert uddi.portal not in connects


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"rgwtls_acme_proxy_password": ""}, "rgwtls_acme_proxy names the user rgwtls: set rgwtls_acme_proxy_password"),
        (
            {"rgwtls_acme_proxy": "http://127.0.0.1:3128"},
            "rgwtls_acme_proxy names no user: write it as http://USER@host:port",
        ),
        (
            {"rgwtls_acme_eab_hmac_key": ""},
            "External Account Binding needs both rgwtls_acme_eab_kid and rgwtls_acme_eab_hmac_key",
        ),
    ],
    ids=["proxy-user-without-password", "password-without-proxy-user", "eab-kid-without-key"],
)
def test_a_half_set_proxy_login_or_binding_is_refused_before_anything_changes(
    site: Site, acme_converge: Converge, extra: dict[str, str], message: str
) -> None:
    before = installed_state(site, ("rgw1",))
    play = site.fleet.play("--limit", "rgw1", *acme_converge.args, "-e", json.dumps(extra))
    assert play.code != 0
    assert message in play.output
    assert play.recap["rgw1"]["changed"] == 0
    assert installed_state(site, ("rgw1",)) == before
    for what, secret in acme_converge.secrets.items():
        assert secret not in play.output, what


def test_a_value_rgwtls_refuses_stops_the_play_with_its_message_and_keeps_the_old_config(
    site: Site, acme_converge: Converge
) -> None:
    config = site.host("rgw1").config_dir / "issuer.toml"
    before = config.read_bytes()
    play = site.fleet.play("--limit", "rgw1", *acme_converge.args, "-e", '{"rgwtls_acme_profile": "classic please"}')
    assert play.code != 0
    assert "acme.profile: 'classic please' is not a profile name such as classic" in play.output
    assert play.recap["rgw1"]["changed"] == 0
    assert config.read_bytes() == before


def test_no_new_secret_appears_in_the_output(acme_converge: Converge, emptied_converge: Converge) -> None:
    # Both ran with --diff -v: the first wrote each secret, the second removed each.
    for play in (acme_converge.play, emptied_converge.play):
        for what, secret in acme_converge.secrets.items():
            assert secret not in play.output, what


def test_emptied_secret_variables_remove_their_files_and_keys(
    site: Site, emptied_converge: Converge, site_proxy: Tinyproxy
) -> None:
    issuer = site.host("rgw1")
    assert sorted(p.name for p in issuer.config_dir.iterdir()) == ["issuer.toml", "rgwtls.toml", "wapi-password"]
    assert sorted(p.name for p in site.host("rgw2").config_dir.iterdir()) == ["rgwtls.toml"]
    assert emptied_converge.play.changed()["rgw2"] == 0
    doc = issuer_config(site)
    assert doc["acme"]["proxy"] == site_proxy.bare_url
    assert doc["acme"]["profile"] == "tlsserver"  # what was not emptied stays
    emptied = {"proxy_password_file", "eab_kid", "eab_hmac_key_file", "staging_eab_kid", "staging_eab_hmac_key_file"}
    assert not emptied & set(doc["acme"])
    assert doc["dns"]["provider"] == "infoblox"
    assert doc["dns"]["infoblox"]["proxy"] == "direct"
    assert "uddi" not in doc["dns"]
    load(issuer.config_dir / "issuer.toml")


# -- several issuers; the move from a root issuer ------------------------------------


def test_two_issuer_hosts_each_issue_hourly_half_an_hour_apart_and_the_third_gets_nothing_of_the_issuer(
    site: Site,
) -> None:
    site.fleet.ensure_order(list(HOSTS))
    two = ["-e", json.dumps({"rgwtls_issuer_hosts": ["rgw1", "rgw2"]})]
    try:
        play = site.fleet.play(*two)
        assert_clean(play)
        assert play.changed()["rgw3"] == 0, play.output
        base = issue_minute("rgw1")
        for name, minute in (("rgw1", base), ("rgw2", (base + 30) % 60)):
            host = site.host(name)
            issue = host.cron_jobs()["rgwtls issue"]
            assert (issue.schedule, issue.user) == ([str(minute), "*", "*", "*", "*"], ISSUER_USER)
            assert owner(host.keyring_dir / "ceph.client.rgwtls-issuer.keyring") == (ISSUER_USER, ISSUER_USER, 0o600)
            assert (host.config_dir / "wapi-password").exists()
        assert "rgwtls issue" not in site.host("rgw3").cron_jobs()
        assert sorted(p.name for p in site.host("rgw3").config_dir.iterdir()) == ["rgwtls.toml"]
        # The standby's job runs as the issuer's user, with what the role gave it there (the
        # pool's set came from the previous tests' CA, so it renews, and says only that).
        res = run_job(site.host("rgw2").cron_jobs()["rgwtls issue"])
        assert res.returncode == 0, res.stderr
        assert all(line.startswith("NOTICE") for line in res.stderr.splitlines()), res.stderr
        # rgw3 changed nothing above: the second run and the way back are the issuers' alone.
        issuers = ("rgw1", "rgw2")
        again = site.fleet.play(*two, "--limit", ",".join(issuers))
        assert_clean(again, issuers)
        assert again.changed() == dict.fromkeys(issuers, 0), again.output
    finally:
        back = site.fleet.play("--limit", "rgw1,rgw2")
    assert_clean(back, ("rgw1", "rgw2"))
    rgw2 = site.host("rgw2")
    assert "rgwtls issue" not in rgw2.cron_jobs()
    assert sorted(p.name for p in rgw2.config_dir.iterdir()) == ["rgwtls.toml"]
    assert sorted(p.name for p in rgw2.keyring_dir.iterdir()) == ["ceph.client.rgwtls-deploy.keyring"]


def test_a_site_whose_issuer_ran_as_root_gets_its_files_re_owned_and_its_kept_sets_moved_then_no_change(
    site: Site,
) -> None:
    site.fleet.ensure_order(list(HOSTS))
    issuer = site.host("rgw1")
    as_root = site.fleet.play("--limit", "rgw1", "-e", "rgwtls_issuer_user=root")
    assert_clean(as_root, ("rgw1",))
    assert issuer.cron_jobs()["rgwtls issue"].user == "root"
    assert owner(issuer.config_dir / "wapi-password") == ("root", "root", 0o600)
    assert "run_as" not in issuer_config(site)["acme"]
    # Before issue 22 the issuer kept its sets in deploy's state directory.
    old = issuer.prefix / "var/lib/rgwtls/issued"
    old.mkdir(mode=0o700)
    (old / "cog.example.org.order").write_text('{"a note": "of an order in flight"}\n')
    (old / "cog.example.org.order").chmod(0o600)
    moved = issuer.issuer_state_dir / "issued/cog.example.org.order"
    try:
        # The other gateways have not changed since the last converge: the move is rgw1's alone.
        play = site.fleet.play("--limit", "rgw1")
        assert_clean(play, ("rgw1",))
        assert issuer.cron_jobs()["rgwtls issue"].user == ISSUER_USER
        assert owner(issuer.config_dir / "wapi-password") == (ISSUER_USER, ISSUER_USER, 0o600)
        assert owner(issuer.keyring_dir / "ceph.client.rgwtls-issuer.keyring") == (ISSUER_USER, ISSUER_USER, 0o600)
        assert not old.exists()
        assert moved.read_text() == '{"a note": "of an order in flight"}\n'
        assert owner(moved) == (ISSUER_USER, ISSUER_USER, 0o600)
        again = site.fleet.play("--limit", "rgw1")
        assert_clean(again, ("rgw1",))
        assert again.changed() == {"rgw1": 0}, again.output
    finally:
        moved.unlink(missing_ok=True)
        shutil.rmtree(old, ignore_errors=True)


def test_a_client_name_in_rgwtls_issuer_user_is_taken_as_the_cephx_user_and_the_play_says_so(site: Site) -> None:
    # Stopped by the next check (no certificate), so that nothing runs as the user `rgwtls`.
    play = site.fleet.play(
        "--limit", "rgw1", "-e", json.dumps({"rgwtls_issuer_user": "client.rgwtls-issuer", "rgwtls_certificates": []})
    )
    assert "rgwtls_issuer_user is client.rgwtls-issuer, a cephx user: that is rgwtls_issuer_cephx_user now" in (
        " ".join(play.output.split())
    )
    assert "Set rgwtls_certificates" in play.output
    assert play.recap["rgw1"]["changed"] == 0
