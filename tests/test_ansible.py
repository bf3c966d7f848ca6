"""The Ansible role ansible/roles/rgwtls, run for real against a fleet of three local "hosts".

One converge per module is shared: each host has its own install prefix and its
own supervised radosgw, all against the session's real stack (Ceph, Pebble,
BIND, the WAPI emulator). The end-to-end test runs the commands the role wrote
into the cron files, exactly as written.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rados
from cryptography import x509

from devsite.bind import Bind
from devsite.ceph import CephCluster
from devsite.gateway import Gateway
from devsite.haproxy import HAProxy
from devsite.pebble import ONLY_VIA_PROXY, PROFILES, Pebble, pebble_server
from devsite.proxy import Tinyproxy, tinyproxy
from devsite.tlsca import TestCA
from devsite.uddi import UddiEmulator
from devsite.wapi import WapiEmulator
from rgwtls.config import load
from rgwtls.probe import served_fingerprint
from tests import waits
from tests.ansible_helpers import (
    FakeSystemd,
    Fleet,
    Host,
    Play,
    build_wheelhouse,
    client_ceph_conf,
    run_job,
    snapshot,
)
from tests.conftest import POOL, ZONE, Stack
from tests.test_chain_e2e import root_name, stored_chain_ends_at
from tests.test_deploy_e2e import fingerprint_of_pool
from tests.test_issue_e2e import stored_set

HOSTS = ("rgw1", "rgw2", "rgw3")
# The issuer's system user the role creates on this machine (every "host" is this one),
# a name of this run's own; removed with its group after the module, whatever happened.
ISSUER_USER = f"rgwtls-t{os.getpid()}"
TSIG_SECRET = "c2VjcmV0LXRzaWcta2V5LWZvci10aGUtdGVzdHM="


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheelhouse(tmp_path_factory.mktemp("wheelhouse") / "wheels")


class Site:
    """The fleet, its gateways, and the stack they point at."""

    def __init__(self, fleet: Fleet, gateways: dict[str, Gateway], stack: Stack, converge: Play) -> None:
        self.fleet = fleet
        self.gateways = gateways
        self.stack = stack
        self.converge = converge

    def host(self, name: str) -> Host:
        return self.fleet.hosts[name]

    def secrets(self) -> dict[str, str]:
        """Every secret the role handles: the vault's, and the cephx keys of both users."""
        keys = {}
        for user in ("client.rgwtls-issuer", "client.rgwtls-deploy"):
            out = self.stack.ceph.mon_command({"prefix": "auth print-key", "entity": user})
            keys[user] = out.strip()
        return {"wapi password": self.stack.wapi.password, "tsig secret": TSIG_SECRET, **keys}


def _issuer_overrides(stack: Stack, provider: str) -> dict[str, Any]:
    """The test stack answers in a fraction of the production timings."""
    s = stack.settings()
    acme, dns, ceph = s["acme"], s["dns"], s["ceph"]
    return {
        "acme": {k: acme[k] for k in ("poll_interval", "order_timeout", "retry_backoff")},
        "ceph": {"timeout": ceph["timeout"]},
        # The test CAs' roots (devsite's Pebbles) are no public CA's.
        "deploy": {"trusted_roots": s["deploy"]["trusted_roots"]},
        "dns": {
            **{k: dns[k] for k in ("nameserver_port", "propagation_timeout", "propagation_interval", "query_timeout")},
            provider: {"timeout": 3.0},
        },
    }


def _shared(workdir: Path, path: str | Path) -> str:
    """A copy of a file any user may read, in the fleet's directory: pytest's own are root's alone,
    and the issuer runs as a user of its own, as on a host where /etc/ceph and the CA bundles are 0644."""
    # Named after the original's path too: two bundles may both be ca.pem.
    dest = workdir / "shared" / f"{hashlib.md5(str(path).encode()).hexdigest()[:8]}-{Path(path).name}"
    dest.parent.mkdir(mode=0o755, exist_ok=True)
    shutil.copyfile(path, dest)
    dest.chmod(0o644)
    return str(dest)


def _group_vars(stack: Stack, wheelhouse: Path, workdir: Path) -> dict[str, Any]:
    s = stack.settings()
    acme, dns, ceph = s["acme"], s["dns"], s["ceph"]
    infoblox = dns["infoblox"]
    (wheel,) = wheelhouse.glob("rgwtls-*.whl")
    return {
        "rgwtls_wheel": str(wheel),
        "rgwtls_pip_environment": {
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(wheelhouse),
            "PIP_NO_CACHE_DIR": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        },
        "rgwtls_ceph_conf": str(client_ceph_conf(stack.ceph.conf, workdir / "ceph.conf")),
        "rgwtls_ceph_admin_conf": str(stack.ceph.conf),
        "rgwtls_ceph_admin_keyring": str(stack.ceph.admin_keyring),
        "rgwtls_acme_directory": acme["directory"],
        "rgwtls_acme_staging_directory": acme["staging_directory"],
        "rgwtls_acme_email": acme["email"],
        "rgwtls_acme_ca_bundle": _shared(workdir, acme["ca_bundle"]),
        "rgwtls_certificates": s["certificate"],
        "rgwtls_dns_provider": "infoblox",
        "rgwtls_dns_resolvers": dns["resolvers"],
        "rgwtls_infoblox_server": infoblox["server"],
        "rgwtls_infoblox_username": infoblox["username"],
        "rgwtls_infoblox_ca_bundle": _shared(workdir, infoblox["ca_bundle"]),
        "rgwtls_infoblox_password": "{{ vault_rgwtls_infoblox_password }}",
        "rgwtls_tsig_secret": "{{ vault_rgwtls_tsig_secret }}",
        "rgwtls_issuer_user": ISSUER_USER,
        "rgwtls_deploy_owner": "",
        "rgwtls_deploy_group": "",
        "rgwtls_manage_cron_service": False,
        "rgwtls_issuer_config_overrides": _issuer_overrides(stack, "infoblox"),
        "rgwtls_deploy_config_overrides": {
            "ceph": {"timeout": ceph["timeout"]},
            "deploy": {"verify_timeout": 20.0, "restart_wait": 60.0, "trusted_roots": s["deploy"]["trusted_roots"]},
        },
    }


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
    wheelhouse: Path,
    bind: Bind,
    pebble: Pebble,
    ceph: CephCluster,
    wapi_server: WapiEmulator,
    issuer_keyring: Path,
    deploy_keyring: Path,
) -> Iterator[Site]:
    # Others may pass through (0711), as through / and /etc: the issuer's user reaches its
    # files by their own modes. Not under pytest's directories, which are root's alone.
    workdir = Path(tempfile.mkdtemp(prefix="rgwtls-ansible-"))
    workdir.chmod(0o711)
    (workdir / "stack").mkdir()
    stack = Stack(workdir / "stack", bind, pebble, ceph, wapi_server, issuer_keyring)
    gateways: dict[str, Gateway] = {}
    try:
        hosts = []
        for name in HOSTS:
            gw = gateways[name] = Gateway(stack, deploy_keyring, workdir / name / "rgw", name=f"ansible-{name}")
            hosts.append(
                Host(
                    name,
                    workdir / name,
                    {
                        "rgwtls_deploy_path": str(gw.pem),
                        "rgwtls_restart_command": gw.rgw.restart_command,
                        "rgwtls_verify_endpoint": f"127.0.0.1:{gw.rgw.port}",
                    },
                )
            )
        vault = {"vault_rgwtls_infoblox_password": wapi_server.password, "vault_rgwtls_tsig_secret": TSIG_SECRET}
        fleet = Fleet(workdir, hosts, _group_vars(stack, wheelhouse, workdir), vault)
        converge = fleet.play("--diff", "-v")
        assert converge.code == 0, converge.output
        yield Site(fleet, gateways, stack, converge)
    finally:
        for gw in gateways.values():
            gw.stop()
        _remove_user(ISSUER_USER)
        shutil.rmtree(workdir)


def _remove_user(name: str) -> None:
    """The role's system user and its group, if the module got as far as creating them."""
    for cmd in (["userdel", name], ["groupdel", name]):
        subprocess.run(cmd, capture_output=True, check=False, timeout=30)


def assert_clean(play: Play, hosts: tuple[str, ...] = HOSTS) -> None:
    assert play.code == 0, play.output
    assert sorted(play.recap) == sorted(hosts), play.output
    assert play.failed() == dict.fromkeys(hosts, 0), play.output


def installed_state(site: Site, hosts: tuple[str, ...] = HOSTS) -> dict[str, tuple[int, int, bytes]]:
    """What the role wrote on these hosts: /etc and /var by content, the venv by mode and mtime."""
    state: dict[str, tuple[int, int, bytes]] = {}
    for name in hosts:
        prefix = site.host(name).prefix
        state |= snapshot(prefix / "etc") | snapshot(prefix / "var") | snapshot(prefix / "opt", content=False)
    return state


class CheckRun:
    def __init__(self, play: Play, before: dict[str, Any], after: dict[str, Any]) -> None:
        self.play, self.before, self.after = play, before, after


@pytest.fixture(scope="module")
def check_run(site: Site) -> CheckRun:
    """One `--check --diff -v` run over the converged fleet, and what is installed before and after it."""
    site.fleet.ensure_order(list(HOSTS))
    before = installed_state(site)
    play = site.fleet.play("--check", "--diff", "-v")
    return CheckRun(play, before, installed_state(site))


# -- converge, idempotence, check mode ------------------------------------------------


def test_converge_installs_every_host_and_changes_each(site: Site) -> None:
    assert_clean(site.converge)
    assert all(n > 0 for n in site.converge.changed().values()), site.converge.output
    for name in HOSTS:
        venv = site.host(name).prefix / "opt/rgwtls/venv"
        res = subprocess.run(
            [venv / "bin/python", "-c", "import rados, rgwtls"], capture_output=True, text=True, check=False
        )
        assert res.returncode == 0, res.stderr


def test_second_run_changes_nothing(site: Site) -> None:
    play = site.fleet.play(order=list(HOSTS))
    assert_clean(play)
    assert play.changed() == dict.fromkeys(HOSTS, 0), play.output


def test_check_diff_run_reports_no_change_and_writes_nothing(check_run: CheckRun) -> None:
    assert_clean(check_run.play)
    assert check_run.play.changed() == dict.fromkeys(HOSTS, 0), check_run.play.output
    assert check_run.after == check_run.before


# -- where the jobs run -------------------------------------------------------------


def _deploy_offset(name: str) -> int:
    return int(hashlib.md5(name.encode()).hexdigest()[:8], 16) % 10


def _issue_minute(first_issuer: str) -> int:
    return int(hashlib.md5(first_issuer.encode()).hexdigest()[8:16], 16) % 60


def test_issue_job_is_on_the_first_rgw_only_hourly_as_the_issuer_user_and_deploy_on_every_one_as_root(
    site: Site,
) -> None:
    site.fleet.ensure_order(list(HOSTS))
    jobs = {name: site.host(name).cron_jobs() for name in HOSTS}
    assert sorted(jobs["rgw1"]) == ["rgwtls deploy", "rgwtls issue"]
    assert sorted(jobs["rgw2"]) == sorted(jobs["rgw3"]) == ["rgwtls deploy"]
    minutes = {name: jobs[name]["rgwtls deploy"].schedule[0] for name in HOSTS}
    assert minutes == {name: f"{_deploy_offset(name)}-59/10" for name in HOSTS}
    assert len(set(minutes.values())) > 1
    for name in HOSTS:
        deploy = jobs[name]["rgwtls deploy"]
        assert deploy.user == "root"
        venv = site.host(name).prefix / "opt/rgwtls/venv"
        assert deploy.command == f"{venv}/bin/rgwtls --config {site.host(name).config_dir}/rgwtls.toml deploy"
    issue = jobs["rgw1"]["rgwtls issue"]
    assert issue.user == ISSUER_USER
    assert issue.schedule == [str(_issue_minute("rgw1")), "*", "*", "*", "*"]
    assert issue.command.endswith(f"--config {site.host('rgw1').config_dir}/issuer.toml issue")


def test_limit_without_the_first_rgw_adds_no_issuer(site: Site) -> None:
    # run_once would have picked rgw2, the first host of this play, as the issuer.
    site.fleet.ensure_order(list(HOSTS))
    rgw1 = installed_state(site, ("rgw1",))
    play = site.fleet.play("--limit", "rgw2,rgw3")
    assert_clean(play, ("rgw2", "rgw3"))
    assert play.changed() == {"rgw2": 0, "rgw3": 0}, play.output
    for name in ("rgw2", "rgw3"):
        assert "rgwtls issue" not in site.host(name).cron_jobs()
        assert not (site.host(name).config_dir / "issuer.toml").exists()
    assert installed_state(site, ("rgw1",)) == rgw1


# -- secrets ------------------------------------------------------------------------


def test_secret_files_are_0600_and_only_on_the_hosts_that_use_them(site: Site) -> None:
    site.fleet.ensure_order(list(HOSTS))
    issuer = site.host("rgw1")
    assert (issuer.config_dir / "wapi-password").read_text().strip() == site.stack.wapi.password
    secret_files = [issuer.config_dir / "wapi-password", issuer.keyring_dir / "ceph.client.rgwtls-issuer.keyring"]
    secret_files += [site.host(name).keyring_dir / "ceph.client.rgwtls-deploy.keyring" for name in HOSTS]
    for path in secret_files:
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert sorted(p.name for p in issuer.config_dir.iterdir()) == ["issuer.toml", "rgwtls.toml", "wapi-password"]
    for name in ("rgw2", "rgw3"):
        host = site.host(name)
        assert sorted(p.name for p in host.config_dir.iterdir()) == ["rgwtls.toml"]
        assert sorted(p.name for p in host.keyring_dir.iterdir()) == ["ceph.client.rgwtls-deploy.keyring"]
        assert not host.issuer_state_dir.exists()


def _owner(path: Path) -> tuple[str, str, int]:
    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, _group(st.st_gid), st.st_mode & 0o777


def _group(gid: int) -> str:
    return grp.getgrgid(gid).gr_name


def test_the_issuer_user_owns_its_secrets_keyring_and_state_and_deploy_keeps_root_s(site: Site) -> None:
    site.fleet.ensure_order(list(HOSTS))
    issuer = site.host("rgw1")
    who = pwd.getpwnam(ISSUER_USER)
    assert who.pw_shell == "/usr/sbin/nologin"
    assert who.pw_uid < 1000  # a system user
    mine = (ISSUER_USER, ISSUER_USER, 0o600)
    assert _owner(issuer.config_dir / "wapi-password") == mine
    assert _owner(issuer.keyring_dir / "ceph.client.rgwtls-issuer.keyring") == mine
    assert _owner(issuer.issuer_state_dir) == (ISSUER_USER, ISSUER_USER, 0o700)
    # Readable by the issuer, not writable: root may run issue with it.
    assert _owner(issuer.config_dir / "issuer.toml") == ("root", ISSUER_USER, 0o640)
    for name in HOSTS:
        host = site.host(name)
        assert _owner(host.keyring_dir / "ceph.client.rgwtls-deploy.keyring") == ("root", "root", 0o600)
        assert _owner(host.config_dir / "rgwtls.toml") == ("root", "root", 0o644)
        assert _owner(host.prefix / "var/lib/rgwtls") == ("root", "root", 0o700)
    # Each command its own state: the issuer's sets apart from deploy's lock and records.
    doc = _issuer_config(site)
    assert doc["deploy"]["state_dir"] == str(issuer.issuer_state_dir)
    assert doc["acme"]["run_as"] == ISSUER_USER


def test_no_secret_appears_in_the_output(site: Site, check_run: CheckRun) -> None:
    # Both ran with --diff -v: the converge wrote every secret, the check run compared each.
    for what, secret in site.secrets().items():
        assert secret not in site.converge.output, what
        assert secret not in check_run.play.output, what


def test_deploy_user_takes_restart_slots_but_cannot_touch_the_account_keys(site: Site) -> None:
    keyring = site.host("rgw2").keyring_dir / "ceph.client.rgwtls-deploy.keyring"
    r = site.stack.ceph.connect("client.rgwtls-deploy", keyring, timeout=5)
    try:
        ioctx = r.open_ioctx(POOL)
        ioctx.set_namespace("acme")
        with pytest.raises(rados.PermissionError):
            ioctx.write_full("account.probe", b"x")
        ioctx.set_namespace("deploy")
        ioctx.write_full("probe", b"x")
        ioctx.remove_object("probe")
        ioctx.close()
    finally:
        r.shutdown()


# -- validation ---------------------------------------------------------------------


def test_bad_variable_is_rejected_by_the_argument_specs(site: Site) -> None:
    play = site.fleet.play("--limit", "rgw1", "-e", '{"rgwtls_deploy_layout": "bundle"}')
    assert play.code != 0
    assert "Validating arguments against arg spec" in play.output
    assert "rgwtls_deploy_layout" in play.output
    assert "bundle" in play.output
    assert play.recap["rgw1"]["changed"] == 0


def test_issuer_without_its_dns_secret_is_refused_before_anything_changes(site: Site) -> None:
    play = site.fleet.play("--limit", "rgw1", "-e", '{"rgwtls_infoblox_password": ""}')
    assert play.code != 0
    assert "Check that the issuer has the secret of rgwtls_dns_provider" in play.output
    assert play.recap["rgw1"]["changed"] == 0
    assert (site.host("rgw1").config_dir / "wapi-password").read_text().strip() == site.stack.wapi.password


def test_systemd_timers_are_refused_where_systemd_does_not_run(site: Site) -> None:
    play = site.fleet.play("--limit", "rgw1", "-e", "rgwtls_scheduler=systemd")
    assert play.code != 0
    assert "rgwtls_scheduler is systemd, but rgw1's service manager is" in play.output
    assert play.recap["rgw1"]["changed"] == 0


# -- end to end ---------------------------------------------------------------------


def test_cron_commands_as_written_issue_and_deploy_one_new_certificate_to_every_gateway(
    site: Site, stack: Stack
) -> None:
    site.fleet.ensure_order(list(HOSTS))
    before = {name: gw.served() for name, gw in site.gateways.items()}
    issue = site.host("rgw1").cron_jobs()["rgwtls issue"]
    assert issue.user == ISSUER_USER
    res = run_job(issue)
    assert res.returncode == 0, res.stderr
    # One NOTICE line for cron to mail (it renewed), no warning about who it runs as or what it cannot read.
    assert [line.split(":")[0] for line in res.stderr.splitlines()] == ["NOTICE"], res.stderr
    for name in HOSTS:
        deploy = site.host(name).cron_jobs()["rgwtls deploy"].command
        res = subprocess.run(["sh", "-c", deploy], capture_output=True, text=True, timeout=120, check=False)
        assert res.returncode == 0, res.stderr
        assert "NOTICE" in res.stderr  # cron mails only when something changed: here it did
    # The issuer's user issued; it may not read what deploy keeps: the gateway's key, the deploy key.
    refused = [site.gateways["rgw1"].pem, site.host("rgw1").keyring_dir / "ceph.client.rgwtls-deploy.keyring"]
    probe = "import sys\nfor p in sys.argv[1:]:\n    try:\n        open(p).close(); print('read', p)\n"
    probe += "    except PermissionError:\n        print('refused', p)\n"
    res = subprocess.run(
        # The system's Python: the test's own is under /root, which the user may not enter.
        ["/usr/bin/python3", "-c", probe, *map(str, refused)],
        user=ISSUER_USER,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.stdout.split("\n")[:-1] == [f"refused {p}" for p in refused], res.stdout + res.stderr
    want = fingerprint_of_pool(stack)
    served = {name: gw.served() for name, gw in site.gateways.items()}
    assert served == dict.fromkeys(HOSTS, want)
    assert all(before[name] != want for name in HOSTS)
    assert all(gw.restarts() == 1 for gw in site.gateways.values())


# -- the issuer's proxy, profile, chain, External Account Binding and Universal DDI ------
#
# Two converges, shared by the tests below: the issuer with every one of these
# variables set (the DNS back end Universal DDI, the CA a Pebble that requires a
# binding and is reachable only through the proxy), then the same with each
# secret emptied and the back end Infoblox again. The second leaves rgw1 off
# the group's variables; the test after this section converges the group's again.

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
    play = site.fleet.play("--diff", "-v", *args, order=list(HOSTS))
    assert_clean(play)
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
        "rgwtls_uddi_ca_bundle": _shared(site.fleet.workdir, uddi_server.ca_bundle),
        "rgwtls_issuer_config_overrides": _issuer_overrides(site.stack, "uddi"),
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
        "rgwtls_issuer_config_overrides": _issuer_overrides(site.stack, "infoblox"),
    }
    return _converge_with(site, "emptied", values, {}, before=tuple(acme_converge.args))


def _issuer_config(site: Site, name: str = "rgw1") -> dict[str, Any]:
    return tomllib.loads((site.host(name).config_dir / "issuer.toml").read_text())


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
    doc = _issuer_config(site)
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
        **_issuer_overrides(site.stack, "uddi")["acme"],
    }
    assert doc["dns"]["provider"] == "uddi"
    assert "infoblox" not in doc["dns"]
    assert doc["dns"]["uddi"] == {
        "portal": uddi_server.portal,
        "api_key_file": str(conf / "uddi-api-key"),
        "view": "",
        "ca_bundle": _shared(site.fleet.workdir, uddi_server.ca_bundle),
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
    for name in ("rgw2", "rgw3"):
        assert sorted(p.name for p in site.host(name).config_dir.iterdir()) == ["rgwtls.toml"]
    assert acme_converge.play.changed()["rgw2"] == acme_converge.play.changed()["rgw3"] == 0
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
    for name in ("rgw2", "rgw3"):
        assert sorted(p.name for p in site.host(name).config_dir.iterdir()) == ["rgwtls.toml"]
    assert emptied_converge.play.changed()["rgw2"] == emptied_converge.play.changed()["rgw3"] == 0
    doc = _issuer_config(site)
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
        base = _issue_minute("rgw1")
        for name, minute in (("rgw1", base), ("rgw2", (base + 30) % 60)):
            host = site.host(name)
            issue = host.cron_jobs()["rgwtls issue"]
            assert (issue.schedule, issue.user) == ([str(minute), "*", "*", "*", "*"], ISSUER_USER)
            assert _owner(host.keyring_dir / "ceph.client.rgwtls-issuer.keyring") == (ISSUER_USER, ISSUER_USER, 0o600)
            assert (host.config_dir / "wapi-password").exists()
        assert "rgwtls issue" not in site.host("rgw3").cron_jobs()
        assert sorted(p.name for p in site.host("rgw3").config_dir.iterdir()) == ["rgwtls.toml"]
        # The standby's job runs as the issuer's user, with what the role gave it there (the
        # pool's set came from the previous tests' CA, so it renews, and says only that).
        res = run_job(site.host("rgw2").cron_jobs()["rgwtls issue"])
        assert res.returncode == 0, res.stderr
        assert all(line.startswith("NOTICE") for line in res.stderr.splitlines()), res.stderr
        again = site.fleet.play(*two)
        assert_clean(again)
        assert again.changed() == dict.fromkeys(HOSTS, 0), again.output
    finally:
        back = site.fleet.play()
    assert_clean(back)
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
    assert _owner(issuer.config_dir / "wapi-password") == ("root", "root", 0o600)
    assert "run_as" not in _issuer_config(site)["acme"]
    # Before issue 22 the issuer kept its sets in deploy's state directory.
    old = issuer.prefix / "var/lib/rgwtls/issued"
    old.mkdir(mode=0o700)
    (old / "cog.example.org.order").write_text('{"a note": "of an order in flight"}\n')
    (old / "cog.example.org.order").chmod(0o600)
    moved = issuer.issuer_state_dir / "issued/cog.example.org.order"
    try:
        play = site.fleet.play()
        assert_clean(play)
        assert issuer.cron_jobs()["rgwtls issue"].user == ISSUER_USER
        assert _owner(issuer.config_dir / "wapi-password") == (ISSUER_USER, ISSUER_USER, 0o600)
        assert _owner(issuer.keyring_dir / "ceph.client.rgwtls-issuer.keyring") == (ISSUER_USER, ISSUER_USER, 0o600)
        assert not old.exists()
        assert moved.read_text() == '{"a note": "of an order in flight"}\n'
        assert _owner(moved) == (ISSUER_USER, ISSUER_USER, 0o600)
        again = site.fleet.play()
        assert_clean(again)
        assert again.changed() == dict.fromkeys(HOSTS, 0), again.output
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


# -- the deploy watcher (issue 21) and the TLS hosts (issue 20) ------------------------

WATCH_UNIT = "rgwtls-deploy-watch.service"


def _unit_settings(path: Path) -> dict[str, str]:
    """A unit file's KEY=VALUE lines (each key once in the role's units)."""
    lines = [line for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def _wait_for_line(log: Path, needles: tuple[str, ...], proc: subprocess.Popen[bytes], config: Path) -> str:
    """Until the watcher says one of `needles`, within a deploy's bound; at once if it ends first."""
    said = lambda: any(n in log.read_text() for n in needles)  # noqa: E731
    waits.wait_for(repr(needles), said, waits.deploy_bound(config), proc, log.read_text, "a deploy's bound")
    return log.read_text()


SYSTEMD_HOSTS = ("rgw1", "rgw3")
TIMER_UNITS = ("rgwtls-issue.timer", "rgwtls-deploy.timer")


class SystemdRuns:
    """What the plays on a systemd host did, for the tests that read it: rgw1 switched to systemd timers
    (rgwtls_scheduler, issue 22), rgw3 given the deploy watcher (issue 21), in the same plays."""

    def __init__(self, systemd: FakeSystemd) -> None:
        self.systemd = systemd
        self.plays: dict[str, Play] = {}
        self.units: dict[str, dict[str, dict[str, Any]]] = {}  # after each play: each unit's state
        self.settings: dict[str, dict[str, str]] = {}  # the unit files, as the "on" play wrote them
        self.verify = (0, "")  # systemd-analyze verify of the watcher's unit
        self.cron: dict[str, dict[str, list[str]]] = {}  # after each play: each host's cron jobs
        self.unit_files: dict[str, dict[str, list[str]]] = {}  # after each play: the unit files on each host
        self.watcher = (0, "")  # the watcher's command as written: its exit status and its log
        self.textfile = Path()

    def record(self, name: str, play: Play, site: Site) -> None:
        self.plays[name] = play
        self.units[name] = {u: self.systemd.unit(u) for u in (*TIMER_UNITS, WATCH_UNIT)}
        self.cron[name] = {h: sorted(site.host(h).cron_jobs()) for h in SYSTEMD_HOSTS}
        self.unit_files[name] = {h: sorted(p.name for p in _units_dir(site, h).glob("*")) for h in SYSTEMD_HOSTS}


def _units_dir(site: Site, name: str) -> Path:
    return site.host(name).prefix / "etc/systemd/system"


def _with_vars(site: Site, host_vars: dict[str, dict[str, Any]]) -> None:
    """These variables on these hosts of the inventory (none: the group's alone again)."""
    for name in SYSTEMD_HOSTS:
        host = site.host(name)
        for key in ("rgwtls_scheduler", "rgwtls_deploy_watch", "rgwtls_deploy_watch_textfile"):
            host.vars.pop(key, None)
        host.vars.update(host_vars.get(name, {}))
    site.fleet.write_inventory(site.fleet.order)


@pytest.fixture(scope="module")
def systemd_runs(site: Site, tmp_path_factory: pytest.TempPathFactory) -> SystemdRuns:
    """rgw1 and rgw3 as systemd hosts, each play on both: on, again; the watcher run; off, again (--check on rgw3).

    No systemd runs here: a systemctl that keeps the units' state, and hosts whose facts say
    systemd. Each play does what two tests would have done apart, and the tests read its result.
    """
    site.fleet.ensure_order(list(HOSTS))
    systemd = FakeSystemd(tmp_path_factory.mktemp("systemd"), [_units_dir(site, h) for h in SYSTEMD_HOSTS])
    env = systemd.env(site.fleet)
    systemd.cache_service_mgr(site.fleet, ",".join(SYSTEMD_HOSTS))
    runs = SystemdRuns(systemd)
    rgw3 = site.host("rgw3")
    runs.textfile = rgw3.prefix / "var/lib/node-exporter"
    runs.textfile.mkdir(parents=True, exist_ok=True)
    on: dict[str, dict[str, Any]] = {
        "rgw1": {"rgwtls_scheduler": "systemd"},
        "rgw3": {"rgwtls_deploy_watch": True, "rgwtls_deploy_watch_textfile": str(runs.textfile)},
    }

    def play(name: str, *args: str, hosts: tuple[str, ...] = SYSTEMD_HOSTS) -> Play:
        result = site.fleet.play(*args, "--limit", ",".join(hosts), env=env)
        runs.record(name, result, site)
        return result

    try:
        _with_vars(site, on)
        # Before the first "on": --check where neither the timers nor the watcher are written yet.
        play("check", "--check")
        if play("on").code == 0:
            for unit in ("rgwtls-issue.service", "rgwtls-deploy.service"):
                runs.settings[unit] = _unit_settings(_units_dir(site, "rgw1") / unit)
            watch_unit = _units_dir(site, "rgw3") / WATCH_UNIT
            runs.settings[WATCH_UNIT] = _unit_settings(watch_unit)
            res = subprocess.run(
                ["systemd-analyze", "verify", str(watch_unit)], capture_output=True, text=True, timeout=60, check=False
            )
            runs.verify = (res.returncode, res.stdout + res.stderr)
            play("again")
            runs.watcher = _run_watcher(runs.settings[WATCH_UNIT]["ExecStart"], runs.textfile, rgw3, systemd.dir)
    finally:
        # Back to cron and no watcher, as the other tests of this module expect it.
        _with_vars(site, {})
        play("off")
        play("off again")
    return runs


def _run_watcher(exec_start: str, textfile: Path, host: Host, workdir: Path) -> tuple[int, str]:
    """The watcher's command as written, as systemd runs it (root): until it watched and wrote its metrics."""
    log = workdir / "watch.log"
    config = host.config_dir / "rgwtls.toml"
    with log.open("w") as out:
        proc = subprocess.Popen(shlex.split(exec_start), stdout=out, stderr=out, start_new_session=True)
    try:
        _wait_for_line(log, ("watching pool",), proc, config)
        _wait_for_line(log, ("nothing to do", "and it serves it", "ERROR:", "WARNING:"), proc, config)
        metrics = textfile / "rgwtls_deploy.prom"
        waits.wait_for("its metrics", metrics.exists, waits.deploy_bound(config), proc, log.read_text)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(60)
    return code, log.read_text()


def test_the_deploy_watcher_is_a_started_enabled_unit_beside_the_cron_job_and_goes_when_turned_off(
    site: Site, systemd_runs: SystemdRuns
) -> None:
    runs = systemd_runs
    # --check says what would change, and neither writes the unit nor asks systemd to start it.
    assert_clean(runs.plays["check"], SYSTEMD_HOSTS)
    assert WATCH_UNIT not in runs.unit_files["check"]["rgw3"]
    assert runs.units["check"][WATCH_UNIT] == {"enabled": False, "active": False, "starts": 0}

    assert_clean(runs.plays["on"], SYSTEMD_HOSTS)
    unit = runs.settings[WATCH_UNIT]
    host = site.host("rgw3")
    venv = host.prefix / "opt/rgwtls/venv"
    config = host.config_dir / "rgwtls.toml"
    assert unit["ExecStart"] == f"{venv}/bin/rgwtls --config {config} -v deploy --watch --textfile {runs.textfile}"
    assert (unit["Type"], unit["Restart"], unit["RestartSec"]) == ("exec", "always", "5")
    assert (unit["KillSignal"], unit["KillMode"]) == ("SIGTERM", "mixed")
    # restart_timeout 120 + 2 x verify_timeout (20 here) + 60: a rollback's restart and check.
    assert unit["TimeoutStopSec"] == "220"
    assert "User" not in unit  # root, as the deploy job
    assert unit["WantedBy"] == "multi-user.target"
    # systemd's own parser finds nothing to say about it.
    assert runs.verify == (0, ""), runs.verify[1]
    assert runs.units["on"][WATCH_UNIT] == {"enabled": True, "active": True, "starts": 1}
    # The deploy job stays: cron is the floor of correctness, the watcher only makes it faster.
    assert runs.cron["on"]["rgw3"] == ["rgwtls deploy"]

    assert_clean(runs.plays["again"], SYSTEMD_HOSTS)
    assert runs.plays["again"].changed() == dict.fromkeys(SYSTEMD_HOSTS, 0), runs.plays["again"].output
    assert runs.units["again"][WATCH_UNIT]["starts"] == 1

    # The command as written, as systemd runs it (root): it deploys, watches, writes its
    # metrics, and stops on SIGTERM with exit status 0.
    code, log = runs.watcher
    assert code == 0, log
    assert "deploy --watch: stopped by SIGTERM" in log

    assert_clean(runs.plays["off"], SYSTEMD_HOSTS)
    assert WATCH_UNIT not in runs.unit_files["off"]["rgw3"]
    assert runs.units["off"][WATCH_UNIT] == {"enabled": False, "active": False, "starts": 1}
    assert runs.cron["off"]["rgw3"] == ["rgwtls deploy"]
    assert_clean(runs.plays["off again"], SYSTEMD_HOSTS)
    assert runs.plays["off again"].changed() == dict.fromkeys(SYSTEMD_HOSTS, 0), runs.plays["off again"].output


def test_systemd_timers_run_the_issuer_as_its_own_user_and_deploy_as_root_instead_of_cron(
    site: Site, systemd_runs: SystemdRuns
) -> None:
    """rgwtls_scheduler: systemd on the issuer: the same two jobs, the issuer's unit as its system user (issue 22)."""
    runs = systemd_runs
    host = site.host("rgw1")
    # --check on a host switching to timers says what would change, and fails nothing: the
    # timers' units are not there yet for systemd to find, so it is not asked to start them.
    assert_clean(runs.plays["check"], SYSTEMD_HOSTS)
    assert "rgwtls-deploy.timer" in runs.plays["check"].output
    assert not set(TIMER_UNITS) & set(runs.unit_files["check"]["rgw1"])
    for timer in TIMER_UNITS:
        assert runs.units["check"][timer] == {"enabled": False, "active": False, "starts": 0}, timer
    assert_clean(runs.plays["on"], SYSTEMD_HOSTS)
    issue, deploy = runs.settings["rgwtls-issue.service"], runs.settings["rgwtls-deploy.service"]
    assert issue["User"] == ISSUER_USER
    assert issue["ExecStart"].endswith(f"--config {host.config_dir}/issuer.toml issue")
    assert "User" not in deploy  # root: it writes the gateway's key and restarts radosgw
    assert deploy["ExecStart"].endswith(f"--config {host.config_dir}/rgwtls.toml deploy")
    for timer in TIMER_UNITS:
        assert (runs.units["on"][timer]["enabled"], runs.units["on"][timer]["active"]) == (True, True), timer
    assert runs.cron["on"]["rgw1"] == []  # the timers replace the cron entries, never both
    assert runs.plays["again"].changed() == dict.fromkeys(SYSTEMD_HOSTS, 0), runs.plays["again"].output
    # Back to cron.
    assert_clean(runs.plays["off"], SYSTEMD_HOSTS)
    assert runs.cron["off"]["rgw1"] == ["rgwtls deploy", "rgwtls issue"]
    assert "rgwtls-issue.timer" not in runs.unit_files["off"]["rgw1"]


def test_the_deploy_watcher_is_refused_where_systemd_does_not_run(site: Site) -> None:
    play = site.fleet.play("--limit", "rgw3", "-e", '{"rgwtls_deploy_watch": true}')
    assert play.code != 0
    assert "rgwtls_deploy_watch is true, but rgw3's service manager is" in play.output
    assert play.recap["rgw3"]["changed"] == 0


def test_a_tls_host_gets_haproxy_s_deploy_config_and_job_and_nothing_of_the_issuer_and_its_job_swaps_haproxy(
    site: Site, stack: Stack
) -> None:
    site.fleet.ensure_order(list(HOSTS))
    gw = site.gateways["rgw1"]
    hx = HAProxy(site.fleet.workdir / "lb1" / "haproxy", gw.rgw.port).start()
    lb = Host(
        "lb1",
        site.fleet.workdir / "lb1",
        {
            "rgwtls_tls_deploy_path": str(hx.pem),
            "rgwtls_tls_haproxy_socket": str(hx.admin_socket),
            "rgwtls_tls_verify_endpoint": f"127.0.0.1:{hx.port}",
        },
    )
    # The gateways' settings, none of the issuer's secrets: these hosts never see them.
    shared = json.loads((site.fleet.inventory / "group_vars/rgws/main.yml").read_text())
    shared = {k: v for k, v in shared.items() if "vault" not in str(v)}
    site.fleet.add_tls_host(lb, shared)
    try:
        play = site.fleet.play("--limit", "lb1")
        assert_clean(play, ("lb1",))
        assert play.changed()["lb1"] > 0
        doc = tomllib.loads((lb.config_dir / "rgwtls.toml").read_text())
        assert doc["deploy"]["activate"] == "haproxy"
        assert doc["deploy"]["haproxy_socket"] == str(hx.admin_socket)
        assert doc["deploy"]["path"] == str(hx.pem)
        assert doc["deploy"]["verify_endpoint"] == f"127.0.0.1:{hx.port}"
        assert doc["deploy"]["layout"] == "pem"
        assert not {"restart_command", "key_path", "cert_path", "config_key"} & set(doc["deploy"])
        assert doc["ceph"]["user"] == "client.rgwtls-deploy"
        assert load(lb.config_dir / "rgwtls.toml").deploy.activate == "haproxy"
        # The deploy job, as on a gateway; nothing of the issuer: no job, config, secret, keyring or state.
        jobs = lb.cron_jobs()
        assert sorted(jobs) == ["rgwtls deploy"]
        assert jobs["rgwtls deploy"].user == "root"
        assert sorted(p.name for p in lb.config_dir.iterdir()) == ["rgwtls.toml"]
        assert sorted(p.name for p in lb.keyring_dir.iterdir()) == ["ceph.client.rgwtls-deploy.keyring"]
        assert not lb.issuer_state_dir.exists()

        again = site.fleet.play("--limit", "lb1")
        assert_clean(again, ("lb1",))
        assert again.changed() == {"lb1": 0}, again.output

        # The job as written swaps HAProxy's certificate in memory: same process, radosgw not restarted.
        if stored_set(stack) is None:
            assert run_job(site.host("rgw1").cron_jobs()["rgwtls issue"]).returncode == 0
        pid, restarts = hx.pid, gw.restarts()
        res = run_job(jobs["rgwtls deploy"])
        assert res.returncode == 0, res.stderr
        assert served_fingerprint(f"127.0.0.1:{hx.port}", f"anybucket.{ZONE}", 5) == fingerprint_of_pool(stack)
        assert (hx.pid, gw.restarts()) == (pid, restarts)
    finally:
        site.fleet.remove_tls_host("lb1")
        hx.stop()


# -- last: it leaves rgw2 as the issuer ----------------------------------------------


def test_moving_the_first_rgw_moves_the_issue_job_and_the_issuer_secrets(site: Site) -> None:
    site.fleet.ensure_order(list(HOSTS))
    play = site.fleet.play(order=["rgw2", "rgw1", "rgw3"])
    assert_clean(play)
    old, new = site.host("rgw1"), site.host("rgw2")
    assert "rgwtls issue" not in old.cron_jobs()
    assert "rgwtls issue" in new.cron_jobs()
    for path in ("issuer.toml", "wapi-password"):
        assert not (old.config_dir / path).exists()
        assert (new.config_dir / path).exists()
    assert not (old.keyring_dir / "ceph.client.rgwtls-issuer.keyring").exists()
    assert (new.keyring_dir / "ceph.client.rgwtls-issuer.keyring").stat().st_mode & 0o777 == 0o600
    assert play.changed()["rgw3"] == 0, play.output
