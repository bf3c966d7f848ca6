"""The fleet the Ansible tests converge: local "hosts" (three, or the ones a module names) on the real stack.

tests/test_ansible.py and tests/test_ansible_issuer.py each converge a fleet
of their own once and share it among their tests: a module is a unit of work
of its own under pytest-xdist (tests/plan.py), so the two run side by side
where one module's converges ran one after the other. Two, not more: each
fleet's first converge costs about a CPU-minute, and the suite is CPU-bound. Every host has its own
install prefix and its own supervised radosgw; all point at the worker's
Ceph, Pebble, BIND and WAPI emulator.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from devsite.gateway import Gateway
from tests.ansible_helpers import Fleet, Host, Play, build_wheelhouse, client_ceph_conf, snapshot
from tests.conftest import SiteServices, Stack, once_a_run

HOSTS = ("rgw1", "rgw2", "rgw3")
# The issuer's system user the role creates on this machine (every "host" is this one),
# a name of this worker's own; removed with its group after each module, whatever happened.
ISSUER_USER = f"rgwtls-t{os.getpid()}"
TSIG_SECRET = "c2VjcmV0LXRzaWcta2V5LWZvci10aGUtdGVzdHM="


def shared_wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rgwtls' wheels, built once a run."""
    with once_a_run(tmp_path_factory, "rgwtls-wheelhouse") as dest:
        if not any(dest.glob("rgwtls-*.whl")):
            build_wheelhouse(dest)
    return dest


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


def issuer_overrides(stack: Stack, provider: str) -> dict[str, Any]:
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


def shared_copy(workdir: Path, path: str | Path) -> str:
    """A copy of a file any user may read, in the fleet's directory: pytest's own are root's alone,
    and the issuer runs as a user of its own, as on a host where /etc/ceph and the CA bundles are 0644."""
    # Named after the original's path too: two bundles may both be ca.pem.
    dest = workdir / "shared" / f"{hashlib.md5(str(path).encode()).hexdigest()[:8]}-{Path(path).name}"
    dest.parent.mkdir(mode=0o755, exist_ok=True)
    shutil.copyfile(path, dest)
    dest.chmod(0o644)
    return str(dest)


def group_vars(stack: Stack, wheelhouse: Path, workdir: Path) -> dict[str, Any]:
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
        "rgwtls_acme_ca_bundle": shared_copy(workdir, acme["ca_bundle"]),
        "rgwtls_certificates": s["certificate"],
        "rgwtls_dns_provider": "infoblox",
        "rgwtls_dns_resolvers": dns["resolvers"],
        "rgwtls_infoblox_server": infoblox["server"],
        "rgwtls_infoblox_username": infoblox["username"],
        "rgwtls_infoblox_ca_bundle": shared_copy(workdir, infoblox["ca_bundle"]),
        "rgwtls_infoblox_password": "{{ vault_rgwtls_infoblox_password }}",
        "rgwtls_tsig_secret": "{{ vault_rgwtls_tsig_secret }}",
        "rgwtls_issuer_user": ISSUER_USER,
        "rgwtls_deploy_owner": "",
        "rgwtls_deploy_group": "",
        "rgwtls_manage_cron_service": False,
        "rgwtls_issuer_config_overrides": issuer_overrides(stack, "infoblox"),
        "rgwtls_deploy_config_overrides": {
            "ceph": {"timeout": ceph["timeout"]},
            "deploy": {"verify_timeout": 20.0, "restart_wait": 60.0, "trusted_roots": s["deploy"]["trusted_roots"]},
        },
    }


@contextmanager
def converged_site(
    tmp_path_factory: pytest.TempPathFactory, services: SiteServices, names: tuple[str, ...] = HOSTS
) -> Iterator[Site]:
    """A fleet of these hosts converged once with the group's variables; its gateways stopped and its user
    removed after."""
    # Others may pass through (0711), as through / and /etc: the issuer's user reaches its
    # files by their own modes. Not under pytest's directories, which are root's alone.
    workdir = Path(tempfile.mkdtemp(prefix="rgwtls-ansible-"))
    workdir.chmod(0o711)
    (workdir / "stack").mkdir()
    stack = Stack(
        workdir / "stack", services.bind, services.pebble, services.ceph, services.wapi, services.issuer_keyring
    )
    gateways: dict[str, Gateway] = {}
    try:
        hosts = []
        for name in names:
            gw = gateways[name] = Gateway(
                stack, services.deploy_keyring, workdir / name / "rgw", name=f"ansible-{name}"
            )
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
        vault = {"vault_rgwtls_infoblox_password": services.wapi.password, "vault_rgwtls_tsig_secret": TSIG_SECRET}
        fleet = Fleet(workdir, hosts, group_vars(stack, shared_wheelhouse(tmp_path_factory), workdir), vault)
        converge = fleet.play("--diff", "-v")
        assert converge.code == 0, converge.output
        yield Site(fleet, gateways, stack, converge)
    finally:
        for gw in gateways.values():
            gw.stop()
        remove_user(ISSUER_USER)
        shutil.rmtree(workdir)


def remove_user(name: str) -> None:
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


def owner(path: Path) -> tuple[str, str, int]:
    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, group_name(st.st_gid), st.st_mode & 0o777


def group_name(gid: int) -> str:
    return grp.getgrgid(gid).gr_name


def deploy_offset(name: str) -> int:
    return int(hashlib.md5(name.encode()).hexdigest()[:8], 16) % 10


def issue_minute(first_issuer: str) -> int:
    return int(hashlib.md5(first_issuer.encode()).hexdigest()[8:16], 16) % 60


def issuer_config(site: Site, name: str = "rgw1") -> dict[str, Any]:
    return tomllib.loads((site.host(name).config_dir / "issuer.toml").read_text())
