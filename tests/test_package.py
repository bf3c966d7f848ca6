"""The Debian package, built by scripts/build-deb and installed with apt into a fresh Debian 12 root.

The root is scripts/debroot's debootstrapped bookworm (cached in .cache/debroot); each
test works in an overlay of its own over it, so the cached root stays fresh. apt
resolves the package's dependencies from Debian's index there (the root's cache
holds their files, fetched when the root was built). The package is built once a
session; the "previous" package of the upgrade test is that same package with a
lower version (repacked with dpkg-deb, not built again): no earlier commit has a
debian/ to build, and what an upgrade exercises (dpkg's upgrade path through the
maintainer scripts, the files replaced, the config and state left alone) is the same.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from devsite.gateway import Gateway
from devsite.site import to_toml
from tests.conftest import ZONE, Stack, once_a_run
from tests.test_deploy_e2e import fingerprint_of_pool, tls_client_trusting_pebble

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot, mounts and dpkg in a root need root"),
]

REPO = Path(__file__).resolve().parent.parent
UNITS = [
    "rgwtls-issue.service",
    "rgwtls-issue.timer",
    "rgwtls-deploy.service",
    "rgwtls-deploy.timer",
    "rgwtls-deploy-watch.service",
]
# What a purge may leave behind (Debian policy): dpkg's and apt's own records and
# caches, the logs, man-db's index, and the system user in the account files (and their backups).
PURGE_MAY_LEAVE = (
    "/var/lib/dpkg/",
    "/var/lib/apt/",
    "/var/cache/",
    "/var/log/",
    "/etc/passwd",
    "/etc/group",
    "/etc/shadow",
    "/etc/gshadow",
)


@dataclass
class Root:
    """A fresh Debian 12 root, as an overlay of the cached one: each command sees what the last one left."""

    layer: Path

    def run(self, *cmd: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [str(REPO / "scripts/debroot"), "run", str(self.layer), *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            check=False,
        )
        if check:
            assert res.returncode == 0, f"{cmd}: exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        return res

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-ec", script, check=check)

    def apt_install(self, deb: Path) -> None:
        # No index update: the root's index and its cached files resolve the dependencies.
        self.run("apt-get", "install", "-y", "-q", "--no-install-recommends", str(deb))
        self.assert_not_half_installed()

    def assert_not_half_installed(self) -> None:
        audit = self.run("dpkg", "--audit")
        assert audit.stdout.strip() == "", audit.stdout

    def files(self) -> set[str]:
        """Every path of the root's own file system (not /proc, /dev, /sys, /tmp or the repo)."""
        return set(self.run("find", "/", "-xdev", "-print").stdout.splitlines())


@pytest.fixture(scope="session")
def debroot() -> None:
    res = subprocess.run([str(REPO / "scripts/debroot"), "build"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


PREVIOUS_VERSION = "0.0.0~previous"


def _build_both(out: Path) -> tuple[Path, Path]:
    """This tree's package, built into out/deb, and the "previous" one: the same files, a lower version."""
    res = subprocess.run(
        [str(REPO / "scripts/build-deb"), "--out", str(out / "deb")], capture_output=True, text=True, timeout=1200
    )
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    deb = Path(res.stdout.splitlines()[-1])
    tree = out / "previous-tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True, timeout=300)
    control = tree / "DEBIAN" / "control"
    control.write_text(re.sub(r"(?m)^Version: .*$", f"Version: {PREVIOUS_VERSION}", control.read_text()))
    previous = out / "deb-previous" / deb.name.replace(previous_version(deb), PREVIOUS_VERSION)
    previous.parent.mkdir()
    # gzip: the package is taken apart again in a second, not shipped.
    subprocess.run(["dpkg-deb", "-Zgzip", "-b", str(tree), str(previous)], capture_output=True, check=True, timeout=300)
    shutil.rmtree(tree)
    return deb, previous


@pytest.fixture(scope="session")
def debs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Built once a run, for all its workers."""
    with once_a_run(tmp_path_factory, "rgwtls-debs") as out:
        done = out / "built"
        if not done.exists():
            done.write_text("".join(f"{deb}\n" for deb in _build_both(out)))
        first, previous = done.read_text().splitlines()
    return Path(first), Path(previous)


@pytest.fixture(scope="session")
def deb(debs: tuple[Path, Path]) -> Path:
    return debs[0]


@pytest.fixture(scope="session")
def previous_deb(debs: tuple[Path, Path]) -> Path:
    return debs[1]


@pytest.fixture(scope="module")
def installed(debroot: None, deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Root:
    root = Root(tmp_path_factory.mktemp("root-installed"))
    root.apt_install(deb)
    return root


def _fresh_root(tmp_path: Path) -> Root:
    return Root(tmp_path / "root")


# -- what the package is --------------------------------------------------------------------


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def test_version_is_pyproject_s_with_the_git_revision_before_the_release(deb: Path) -> None:
    upstream = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    version = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if version == upstream:  # only a release, a commit tagged vVERSION, is its bare version
        assert f"v{upstream}" in _git("tag", "--points-at", "HEAD").split()
        return
    assert version.startswith(f"{upstream}~git"), version
    assert f".{_git('rev-parse', '--short=7', 'HEAD')}" in version
    # A snapshot orders before the release it leads to.
    subprocess.run(["dpkg", "--compare-versions", version, "lt", upstream], check=True)


def test_package_depends_on_debian_s_python3_rados_and_nothing_it_does_not_use(deb: Path) -> None:
    depends = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True, text=True, check=True)
    names = {d.strip().split()[0] for d in depends.stdout.split(",")}
    assert names == {"python3-rados", "python3", "adduser", "libc6", "libgcc-s1"}, names


def test_maintainer_scripts_restart_only_what_was_running_and_never_start_a_unit(deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path / "ctl")], check=True)
    invoked = [
        line.strip()
        for name in ("preinst", "postinst", "prerm", "postrm")
        if (tmp_path / "ctl" / name).exists()
        for line in (tmp_path / "ctl" / name).read_text().splitlines()
        if "deb-systemd-invoke" in line and not line.strip().startswith("#")
    ]
    assert invoked, "no unit is ever stopped or restarted"
    assert all(" try-restart " in line or " stop " in line for line in invoked), invoked
    assert (
        "deb-systemd-helper enable"
        not in (tmp_path / "ctl/postinst")
        .read_text()
        .replace("was-enabled", "")
        .split("# Create new symlinks, if any.")[0]
    )


# -- installed with apt into a fresh Debian 12 -------------------------------------------------


def test_installed_rgwtls_runs(installed: Root) -> None:
    res = installed.run("rgwtls", "--version")
    assert res.stdout.strip() == "rgwtls, version 0.1.0"
    installed.run("/usr/lib/rgwtls/bin/python", "-c", "import rados, acme, cryptography, rgwtls")


def test_man_renders_both_pages(installed: Root) -> None:
    one = installed.sh("MANWIDTH=100 man -l /usr/share/man/man1/rgwtls.1.gz | cat")
    five = installed.sh("MANWIDTH=100 man -l /usr/share/man/man5/rgwtls.toml.5.gz | cat")
    assert "rgwtls deploy [OPTIONS]" in one.stdout
    assert "--watch" in one.stdout
    assert "[dns.infoblox]" in five.stdout
    assert "password_file" in five.stdout
    for res in (one, five):
        assert "warning" not in res.stderr.lower(), res.stderr


def test_systemd_analyze_accepts_every_unit(installed: Root) -> None:
    paths = [f"/lib/systemd/system/{u}" for u in UNITS]
    res = installed.run("systemd-analyze", "verify", *paths, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rgwtls" not in res.stderr, res.stderr


def test_units_are_installed_and_none_is_enabled(installed: Root) -> None:
    res = installed.sh("for u in " + " ".join(UNITS) + "; do printf '%s ' $u; systemctl is-enabled $u || true; done")
    states = dict(line.split() for line in res.stdout.splitlines())
    assert states == {
        "rgwtls-issue.service": "static",
        "rgwtls-issue.timer": "disabled",
        "rgwtls-deploy.service": "static",
        "rgwtls-deploy.timer": "disabled",
        "rgwtls-deploy-watch.service": "disabled",
    }, states


def test_the_system_user_and_its_directories(installed: Root) -> None:
    ident = installed.run("id", "rgwtls").stdout
    assert "uid=" in ident
    assert "(rgwtls)" in ident
    shell = installed.run("getent", "passwd", "rgwtls").stdout.strip().split(":")[-1]
    assert shell == "/usr/sbin/nologin"
    res = installed.run("stat", "-c", "%n %U:%G %a", "/var/lib/rgwtls", "/var/lib/rgwtls-issuer", "/etc/rgwtls")
    assert res.stdout.splitlines() == [
        "/var/lib/rgwtls root:root 700",
        "/var/lib/rgwtls-issuer rgwtls:rgwtls 700",
        "/etc/rgwtls root:root 755",
    ]
    assert installed.run("ls", "-A", "/etc/rgwtls").stdout == ""  # no config shipped: none is ever overwritten
    installed.run("test", "-f", "/usr/share/doc/rgwtls/examples/rgwtls.toml")
    completion = installed.run("cat", "/usr/share/bash-completion/completions/rgwtls").stdout
    assert "_RGWTLS_COMPLETE" in completion


def test_packaged_rgwtls_issues_and_deploys_against_the_local_site(
    installed: Root, stack: Stack, gateway: Gateway
) -> None:
    # The gateway's restart command with the root's own python3 (the host's venv is not there).
    supervisor = gateway.rgw.restart_command.split(" ", 1)[1]
    gateway.settings["deploy"]["restart_command"] = f"/usr/bin/python3 {supervisor}"
    issuer = stack.write_config(stack.settings(), "issuer.toml")
    res = installed.run("rgwtls", "--config", str(issuer), "issue", check=False)
    assert res.returncode == 0, res.stderr
    res = installed.run("rgwtls", "--config", str(gateway.config()), "deploy", check=False)
    assert res.returncode == 0, res.stderr
    assert "NOTICE:" in res.stderr
    peer = tls_client_trusting_pebble(stack, gateway.rgw.port, f"anybucket.{ZONE}")
    assert ("DNS", f"*.{ZONE}") in peer["subjectAltName"]
    assert gateway.served() == fingerprint_of_pool(stack)
    assert gateway.restarts() == 1


# -- upgrade, remove, purge --------------------------------------------------------------------


def test_upgrade_keeps_config_and_state_remove_disables_and_purge_leaves_only_what_policy_allows(
    debroot: None, deb: Path, previous_deb: Path, tmp_path: Path
) -> None:
    root = _fresh_root(tmp_path)
    # The dependencies first: what purge must leave is measured against the host with them.
    root.run("apt-get", "install", "-y", "-q", "--no-install-recommends", "python3-rados", "python3", "adduser")
    before = root.files()

    root.apt_install(previous_deb)
    config = {"deploy": {"state_dir": "/var/lib/rgwtls"}}
    root.sh(
        "cat >/etc/rgwtls/rgwtls.toml <<'EOF'\n" + to_toml(config) + "EOF\n"
        "chmod 0644 /etc/rgwtls/rgwtls.toml\n"
        "install -o root -g rgwtls -m 0640 /dev/null /etc/rgwtls/issuer.toml\n"
        "install -o rgwtls -g rgwtls -m 0600 /dev/null /etc/rgwtls/wapi-password\n"
        "echo held >/var/lib/rgwtls/host.lock\n"
        "install -d -o rgwtls -g rgwtls -m 0700 /var/lib/rgwtls-issuer/issued\n"
        "systemctl enable rgwtls-deploy.timer rgwtls-deploy-watch.service 2>/dev/null\n"
    )
    kept = root.run(
        "sh", "-c", "cd / && stat -c '%n %U:%G %a %s' etc/rgwtls/* var/lib/rgwtls/* var/lib/rgwtls-issuer/*"
    ).stdout

    root.apt_install(deb)
    new_version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True)
    assert root.run("dpkg-query", "-W", "-f", "${Version}", "rgwtls").stdout == new_version.stdout.strip()
    after = root.run(
        "sh", "-c", "cd / && stat -c '%n %U:%G %a %s' etc/rgwtls/* var/lib/rgwtls/* var/lib/rgwtls-issuer/*"
    ).stdout
    assert after == kept
    assert tomllib.loads(root.run("cat", "/etc/rgwtls/rgwtls.toml").stdout) == config
    assert root.run("systemctl", "is-enabled", "rgwtls-deploy.timer").stdout.strip() == "enabled"
    assert root.run("systemctl", "is-enabled", "rgwtls-deploy-watch.service").stdout.strip() == "enabled"
    # Configuring again changes nothing and fails nothing (a retried configure).
    root.run("/var/lib/dpkg/info/rgwtls.postinst", "configure", previous_version(previous_deb))
    assert (
        root.run(
            "sh", "-c", "cd / && stat -c '%n %U:%G %a %s' etc/rgwtls/* var/lib/rgwtls/* var/lib/rgwtls-issuer/*"
        ).stdout
        == kept
    )

    root.run("apt-get", "remove", "-y", "-q", "rgwtls")
    root.assert_not_half_installed()
    for unit in ("rgwtls-deploy.timer", "rgwtls-deploy-watch.service"):
        state = root.run("systemctl", "is-enabled", unit, check=False).stdout.strip()
        assert state in ("", "not-found", "disabled"), (unit, state)
    assert root.run("find", "/etc/systemd/system", "-name", "rgwtls*").stdout == ""
    assert (
        root.run(
            "sh", "-c", "cd / && stat -c '%n %U:%G %a %s' etc/rgwtls/* var/lib/rgwtls/* var/lib/rgwtls-issuer/*"
        ).stdout
        == kept
    )
    root.run("test", "!", "-e", "/usr/lib/rgwtls")
    root.run("id", "rgwtls")

    root.run("apt-get", "purge", "-y", "-q", "rgwtls")
    root.assert_not_half_installed()
    left = sorted(p for p in root.files() - before if not p.startswith(PURGE_MAY_LEAVE))
    assert left == [], left
    for gone in ("/etc/rgwtls", "/var/lib/rgwtls", "/var/lib/rgwtls-issuer", "/usr/lib/rgwtls"):
        root.run("test", "!", "-e", gone)
    root.run("id", "rgwtls")  # kept, as Debian's packages keep theirs (debian/rgwtls.postrm says why)


def previous_version(deb: Path) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
    ).stdout.strip()


# What the maintainer scripts ask of systemd, where systemd runs: a root whose /run/systemd/system
# exists, and whose systemctl (Debian's diverted aside) records each call. try-restart is systemd's
# "restart if running": the package never starts what is stopped, and never runs a oneshot job.
FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >>/var/log/fake-systemctl
"""


def test_with_systemd_an_upgrade_try_restarts_what_runs_and_remove_stops_and_never_starts_a_unit(
    debroot: None, deb: Path, previous_deb: Path, tmp_path: Path
) -> None:
    root = _fresh_root(tmp_path)
    root.run("apt-get", "install", "-y", "-q", "--no-install-recommends", "python3-rados", "python3", "adduser")
    root.apt_install(previous_deb)
    root.sh(
        "mkdir -p /run/systemd/system\n"
        "rm /usr/sbin/policy-rc.d\n"  # as on a host: actions allowed (the calls reach only the fake)
        "dpkg-divert --local --rename --add /usr/bin/systemctl >/dev/null\n"
        "cat >/usr/bin/systemctl <<'EOF'\n" + FAKE_SYSTEMCTL + "EOF\n"
        "chmod 0755 /usr/bin/systemctl\n"
    )
    root.apt_install(deb)
    calls = root.run("cat", "/var/log/fake-systemctl").stdout.splitlines()
    acting = [c for c in calls if any(v in c.split() for v in ("start", "restart", "try-restart", "stop"))]
    assert acting == ["try-restart rgwtls-deploy-watch.service rgwtls-issue.timer rgwtls-deploy.timer"], calls
    root.run("sh", "-c", ": >/var/log/fake-systemctl")
    root.run("apt-get", "remove", "-y", "-q", "rgwtls")
    calls = root.run("cat", "/var/log/fake-systemctl").stdout.splitlines()
    acting = [c for c in calls if any(v in c.split() for v in ("start", "restart", "try-restart", "stop"))]
    assert acting == [
        "stop rgwtls-deploy-watch.service rgwtls-issue.timer rgwtls-deploy.timer rgwtls-issue.service "
        "rgwtls-deploy.service"
    ], calls
