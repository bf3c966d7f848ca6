"""The role's two install methods side by side: rgw1 from the virtualenv, rgw2 from the Debian package.

rgw1 is this machine, as in tests/test_ansible.py (ansible_connection=local,
its paths under a prefix). rgw2 is a fresh Debian 12 root (scripts/debroot),
reached through the tests' connection plugin `debroot`, so that apt installs the
package there and never on this machine; its paths are under a prefix in /tmp
too, which the root shares. Then rgw2 moves to the virtualenv and back, and
keeps its configuration and state each way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from devsite.bind import Bind
from devsite.ceph import CephCluster
from devsite.gateway import Gateway
from devsite.pebble import Pebble
from devsite.wapi import WapiEmulator
from tests.ansible_helpers import ROLE_DIR, Fleet, Host, Play, run_job, snapshot
from tests.ansible_site import ISSUER_USER, group_vars, remove_user, shared_wheelhouse
from tests.conftest import Stack
from tests.test_deploy_e2e import fingerprint_of_pool
from tests.test_package import Root, debroot, debs  # noqa: F401  (fixtures)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot, mounts and dpkg in a root need root"),
]

REPO = Path(__file__).resolve().parent.parent
HOSTS = ("rgw1", "rgw2")
PLUGINS = REPO / "tests" / "ansible_plugins" / "connection"


class PackageSite:
    def __init__(
        self, fleet: Fleet, gateways: dict[str, Gateway], stack: Stack, root: Root, deb: Path, converge: Play
    ) -> None:
        self.fleet, self.gateways, self.stack, self.root, self.deb = fleet, gateways, stack, root, deb
        self.converge = converge

    def play(self, *args: str) -> Play:
        play = self.fleet.play(*args)
        assert play.code == 0, play.output
        assert play.failed() == dict.fromkeys(play.recap, 0), play.output
        return play

    def kept(self) -> dict[str, tuple[int, int, bytes]]:
        """rgw2's configuration, keyrings and state: what a move between methods must leave as it was.

        Not its cron file, whose commands name the method's rgwtls."""
        host = self.fleet.hosts["rgw2"]
        return snapshot(host.config_dir) | snapshot(host.keyring_dir) | snapshot(host.prefix / "var")


@pytest.fixture(scope="module")
def package_site(
    tmp_path_factory: pytest.TempPathFactory,
    debroot: None,  # noqa: F811
    debs: tuple[Path, Path],  # noqa: F811
    bind: Bind,
    pebble: Pebble,
    ceph: CephCluster,
    wapi_server: WapiEmulator,
    issuer_keyring: Path,
    deploy_keyring: Path,
) -> Iterator[PackageSite]:
    deb = debs[0]
    workdir = Path(tempfile.mkdtemp(prefix="rgwtls-ansible-package-"))
    workdir.chmod(0o711)  # as in tests/test_ansible.py: the issuer's user passes through
    (workdir / "stack").mkdir()
    stack = Stack(workdir / "stack", bind, pebble, ceph, wapi_server, issuer_keyring)
    wheelhouse = shared_wheelhouse(tmp_path_factory)
    root = Root(workdir / "rgw2-root")
    # What Ansible needs on any Debian host it manages: python3, and python3-apt for its apt module.
    root.run("apt-get", "install", "-y", "-q", "--no-install-recommends", "python3", "python3-apt")
    gateways: dict[str, Gateway] = {}
    try:
        hosts = []
        for name in HOSTS:
            gw = gateways[name] = Gateway(stack, deploy_keyring, workdir / name / "rgw", name=f"ansible-pkg-{name}")
            hostvars: dict[str, Any] = {
                "rgwtls_deploy_path": str(gw.pem),
                "rgwtls_restart_command": gw.rgw.restart_command,
                "rgwtls_verify_endpoint": f"127.0.0.1:{gw.rgw.port}",
            }
            if name == "rgw2":
                hostvars |= {
                    "ansible_connection": "debroot",
                    "ansible_host": str(root.layer),
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "ansible_become": False,  # root already, and no sudo in the root
                    "ansible_pipelining": True,  # one chroot a module, not four
                    # The cluster-wide work on this machine, where the ceph CLI is, also under --limit rgw2.
                    "rgwtls_ceph_admin_host": "rgw1",
                    "rgwtls_install_method": "package",
                    "rgwtls_deb": str(deb),
                    # The root's own python3 runs the supervisor's client (the test's venv is not there).
                    "rgwtls_restart_command": "/usr/bin/python3 " + gw.rgw.restart_command.split(" ", 1)[1],
                    # What the virtualenv method needs, from the root's apt cache (no ceph-common: unused).
                    "rgwtls_debian_packages": ["python3-rados", "python3-venv", "python3-pkg-resources", "cron"],
                }
            hosts.append(Host(name, workdir / name, hostvars))
        vault = {"vault_rgwtls_infoblox_password": wapi_server.password, "vault_rgwtls_tsig_secret": "unused"}
        fleet = Fleet(workdir, hosts, group_vars(stack, wheelhouse, workdir), vault)
        fleet.env["ANSIBLE_CONNECTION_PLUGINS"] = str(PLUGINS)
        converge = fleet.play("--diff")
        assert converge.code == 0, converge.output
        yield PackageSite(fleet, gateways, stack, root, deb, converge)
    finally:
        for gw in gateways.values():
            gw.stop()
        remove_user(ISSUER_USER)
        shutil.rmtree(workdir)


def _deploy_in_root(site: PackageSite) -> subprocess.CompletedProcess[str]:
    job = site.fleet.hosts["rgw2"].cron_jobs()["rgwtls deploy"]
    return site.root.run("sh", "-c", job.command, check=False)


def test_one_host_from_the_venv_and_one_from_the_package_issue_and_deploy_as_their_jobs_say(
    package_site: PackageSite,
) -> None:
    site = package_site
    assert site.converge.failed() == dict.fromkeys(HOSTS, 0), site.converge.output
    version = subprocess.run(["dpkg-deb", "-f", str(site.deb), "Version"], capture_output=True, text=True, check=True)
    assert site.root.run("dpkg-query", "-W", "-f", "${Version}", "rgwtls").stdout == version.stdout.strip()
    rgw1, rgw2 = site.fleet.hosts["rgw1"], site.fleet.hosts["rgw2"]
    assert rgw1.cron_jobs()["rgwtls deploy"].command.startswith(f"{rgw1.prefix}/opt/rgwtls/venv/bin/rgwtls ")
    assert rgw2.cron_jobs()["rgwtls deploy"].command.startswith("/usr/bin/rgwtls --config ")
    assert "rgwtls issue" not in rgw2.cron_jobs()
    res = run_job(rgw1.cron_jobs()["rgwtls issue"])
    assert res.returncode == 0, res.stderr
    res = subprocess.run(
        ["sh", "-c", rgw1.cron_jobs()["rgwtls deploy"].command], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    res = _deploy_in_root(site)
    assert res.returncode == 0, res.stderr
    assert "NOTICE" in res.stderr
    want = fingerprint_of_pool(site.stack)
    assert {name: gw.served() for name, gw in site.gateways.items()} == dict.fromkeys(HOSTS, want)
    again = site.play()
    assert again.changed() == dict.fromkeys(HOSTS, 0), again.output


def test_a_host_moved_to_the_venv_and_back_keeps_its_config_state_and_certificate(package_site: PackageSite) -> None:
    site = package_site
    kept = site.kept()
    served = site.gateways["rgw2"].served()
    to_venv = site.fleet.vars_file("to-venv.json", {"rgwtls_install_method": "venv"})
    site.play("--limit", "rgw2", "-e", f"@{to_venv}")
    # Removed, not purged: dpkg keeps what its purge would remove.
    status = site.root.run("dpkg-query", "-W", "-f", "${db:Status-Status}", "rgwtls").stdout
    assert status == "config-files"
    rgw2 = site.fleet.hosts["rgw2"]
    assert rgw2.cron_jobs()["rgwtls deploy"].command.startswith(f"{rgw2.prefix}/opt/rgwtls/venv/bin/rgwtls ")
    res = _deploy_in_root(site)
    assert res.returncode == 0, res.stderr
    assert site.kept() == kept
    site.play("--limit", "rgw2")  # the group's variables again: the package
    assert site.root.run("dpkg-query", "-W", "-f", "${db:Status-Status}", "rgwtls").stdout == "installed"
    assert not (rgw2.prefix / "opt/rgwtls/venv").exists()
    assert rgw2.cron_jobs()["rgwtls deploy"].command.startswith("/usr/bin/rgwtls ")
    res = _deploy_in_root(site)
    assert res.returncode == 0, res.stderr
    assert site.kept() == kept
    assert site.gateways["rgw2"].served() == served
    assert site.gateways["rgw2"].restarts() == 1  # deployed once, never again by a move


def test_the_role_s_default_paths_are_the_package_s() -> None:
    defaults = yaml.safe_load((ROLE_DIR / "defaults/main.yml").read_text())
    postinst = (REPO / "debian/rgwtls.postinst").read_text()
    assert defaults["rgwtls_config_dir"] == "/etc/rgwtls"
    for key in ("rgwtls_state_dir", "rgwtls_issuer_state_dir"):
        assert f"-m 0700 {defaults[key]}\n" in postinst, key
    assert defaults["rgwtls_issuer_user"] == "rgwtls"
    assert "rgwtls\n" in postinst.split("adduser --system", 1)[1].split("fi", 1)[0]
