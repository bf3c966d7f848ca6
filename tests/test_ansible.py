"""The Ansible role ansible/roles/rgwtls, run for real against a fleet of three local "hosts".

One converge per module is shared: each host has its own install prefix and its
own supervised radosgw, all against the session's real stack (Ceph, Pebble,
BIND, the WAPI emulator). The end-to-end test runs the commands the role wrote
into the cron files, exactly as written.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rados
import yaml  # type: ignore[import-untyped]

from devsite.bind import Bind
from devsite.ceph import CephCluster
from devsite.gateway import Gateway
from devsite.pebble import Pebble
from devsite.wapi import WapiEmulator
from tests.ansible_helpers import (
    ANSIBLE_DIR,
    ROLE_DIR,
    Fleet,
    Host,
    Play,
    ansible_env,
    build_wheelhouse,
    snapshot,
)
from tests.conftest import POOL, Stack
from tests.test_deploy_e2e import fingerprint_of_pool

HOSTS = ("rgw1", "rgw2", "rgw3")
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


def _group_vars(stack: Stack, wheelhouse: Path) -> dict[str, Any]:
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
        "rgwtls_ceph_conf": str(stack.ceph.conf),
        "rgwtls_ceph_admin_conf": str(stack.ceph.conf),
        "rgwtls_ceph_admin_keyring": str(stack.ceph.admin_keyring),
        "rgwtls_acme_directory": acme["directory"],
        "rgwtls_acme_staging_directory": acme["staging_directory"],
        "rgwtls_acme_email": acme["email"],
        "rgwtls_acme_ca_bundle": acme["ca_bundle"],
        "rgwtls_certificates": s["certificate"],
        "rgwtls_dns_provider": "infoblox",
        "rgwtls_dns_resolvers": dns["resolvers"],
        "rgwtls_infoblox_server": infoblox["server"],
        "rgwtls_infoblox_username": infoblox["username"],
        "rgwtls_infoblox_ca_bundle": infoblox["ca_bundle"],
        "rgwtls_infoblox_password": "{{ vault_rgwtls_infoblox_password }}",
        "rgwtls_tsig_secret": "{{ vault_rgwtls_tsig_secret }}",
        "rgwtls_deploy_owner": "",
        "rgwtls_deploy_group": "",
        "rgwtls_manage_cron_service": False,
        # The test stack answers in a fraction of the production timings.
        "rgwtls_issuer_config_overrides": {
            "acme": {k: acme[k] for k in ("poll_interval", "order_timeout", "retry_backoff")},
            "ceph": {"timeout": ceph["timeout"]},
            "dns": {
                **{
                    k: dns[k]
                    for k in ("nameserver_port", "propagation_timeout", "propagation_interval", "query_timeout")
                },
                "infoblox": {"timeout": infoblox["timeout"]},
            },
        },
        "rgwtls_deploy_config_overrides": {
            "ceph": {"timeout": ceph["timeout"]},
            "deploy": {"verify_timeout": 20.0, "restart_wait": 60.0},
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
    workdir = tmp_path_factory.mktemp("ansible")
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
        fleet = Fleet(workdir, hosts, _group_vars(stack, wheelhouse), vault)
        converge = fleet.play("--diff", "-v")
        assert converge.code == 0, converge.output
        yield Site(fleet, gateways, stack, converge)
    finally:
        for gw in gateways.values():
            gw.stop()


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


def test_issue_job_is_on_the_first_rgw_only_and_deploy_on_every_one_at_its_own_minute(site: Site) -> None:
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
    assert issue.schedule[1:] == ["3,15", "*", "*", "*"]
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


def test_defaults_and_argument_specs_document_the_same_options() -> None:
    defaults = yaml.safe_load((ROLE_DIR / "defaults/main.yml").read_text())
    specs = yaml.safe_load((ROLE_DIR / "meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert sorted(defaults) == sorted(options)
    for name, spec in options.items():
        assert name.startswith("rgwtls_"), name
        assert spec["type"], name
        assert spec["description"], name
        assert spec["default"] == defaults[name], name


def test_ansible_lint_passes_the_production_profile(tmp_path: Path) -> None:
    res = subprocess.run(
        ["ansible-lint", "--offline", "--profile", "production", str(ANSIBLE_DIR)],
        capture_output=True,
        text=True,
        env=ansible_env(tmp_path),
        cwd=ANSIBLE_DIR.parent,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Profile 'production' was required, and it passed" in res.stdout + res.stderr


# -- end to end ---------------------------------------------------------------------


def test_cron_commands_as_written_issue_and_deploy_one_new_certificate_to_every_gateway(
    site: Site, stack: Stack
) -> None:
    site.fleet.ensure_order(list(HOSTS))
    before = {name: gw.served() for name, gw in site.gateways.items()}
    issue = site.host("rgw1").cron_jobs()["rgwtls issue"].command
    res = subprocess.run(["sh", "-c", issue], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    for name in HOSTS:
        deploy = site.host(name).cron_jobs()["rgwtls deploy"].command
        res = subprocess.run(["sh", "-c", deploy], capture_output=True, text=True, timeout=120, check=False)
        assert res.returncode == 0, res.stderr
        assert "NOTICE" in res.stderr  # cron mails only when something changed: here it did
    want = fingerprint_of_pool(stack)
    served = {name: gw.served() for name, gw in site.gateways.items()}
    assert served == dict.fromkeys(HOSTS, want)
    assert all(before[name] != want for name in HOSTS)
    assert all(gw.restarts() == 1 for gw in site.gateways.values())


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
