"""`rgwtls issue` as an unprivileged system user of its own (issue 22), through the real stack.

The test creates the user (useradd) and removes it after, whatever happened.
Everything the issuer reads is copied into a directory others may pass through
(pytest's own are root's alone), with the modes the Ansible role gives them:
its keyring and secret 0600 and its state 0700, owned by the user; its config
root:USER 0640.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import rgwtls
from devsite.gateway import Gateway
from devsite.site import to_toml
from tests.ansible_helpers import client_ceph_conf
from tests.conftest import Result, Stack, run_cli
from tests.test_issue_e2e import stored_set

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="creates a system user: needs root"),
    pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="needs the system's python3"),
]


@pytest.fixture
def issuer_user() -> Iterator[pwd.struct_passwd]:
    name = f"rgwtls-u{os.getpid()}"
    useradd = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
    subprocess.run(
        [*useradd, "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
        timeout=30,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        for cmd in (["userdel", name], ["groupdel", name]):
            subprocess.run(cmd, capture_output=True, check=False, timeout=30)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="rgwtls-issuer-"))
    d.chmod(0o711)
    try:
        yield d
    finally:
        shutil.rmtree(d)


def _give(path: Path, user: pwd.struct_passwd | None, mode: int) -> Path:
    os.chown(path, user.pw_uid if user else 0, user.pw_gid if user else 0)
    path.chmod(mode)
    return path


def _copy(src: str | Path, dest: Path, user: pwd.struct_passwd | None, mode: int) -> str:
    shutil.copyfile(src, dest)
    return str(_give(dest, user, mode))


def _issuer_config(stack: Stack, d: Path, user: pwd.struct_passwd) -> Path:
    s = stack.settings()
    s["acme"]["ca_bundle"] = _copy(s["acme"]["ca_bundle"], d / "pebble-ca.pem", None, 0o644)
    s["acme"]["run_as"] = user.pw_name
    s["ceph"]["conf"] = str(client_ceph_conf(stack.ceph.conf, d / "ceph.conf"))
    s["ceph"]["keyring"] = _copy(stack.keyring, d / "ceph.client.rgwtls-issuer.keyring", user, 0o600)
    infoblox = s["dns"]["infoblox"]
    infoblox["ca_bundle"] = _copy(infoblox["ca_bundle"], d / "wapi-ca.pem", None, 0o644)
    infoblox["password_file"] = _copy(infoblox["password_file"], d / "wapi-password", user, 0o600)
    del s["dns"]["rfc2136"]
    state = d / "state"
    state.mkdir()
    _give(state, user, 0o700)
    s["deploy"]["state_dir"] = str(state)
    # The dev site's CA roots, where the user can read them (pytest's directories are closed to it).
    s["deploy"]["trusted_roots"] = _copy(s["deploy"]["trusted_roots"], d / "trusted-roots.pem", None, 0o644)
    path = d / "issuer.toml"
    path.write_text(to_toml(s))
    os.chown(path, 0, user.pw_gid)
    path.chmod(0o640)
    return path


# The test's own Python lives under /root, which no other user may enter: the
# system's, the one python3-rados is built for, with this checkout and the test
# venv's packages on its path (as the role's venv would give it).
SYSTEM_PYTHON = "/usr/bin/python3"
PATH_FOR_USER = os.pathsep.join([str(Path(rgwtls.__file__).parents[1]), sysconfig.get_paths()["purelib"]])


def _run_as(user: pwd.struct_passwd, *argv: str) -> Result:
    res = subprocess.run(
        [SYSTEM_PYTHON, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        env={
            **os.environ,
            "PYTHONPATH": PATH_FOR_USER,
            "HOME": user.pw_dir,
            "USER": user.pw_name,
            "LOGNAME": user.pw_name,
        },
    )
    return Result(res.returncode, res.stdout, res.stderr)


PROBE = """import sys
for p in sys.argv[1:]:
    try:
        open(p).close()
        print("read", p)
    except PermissionError:
        print("refused", p)
"""


def test_issue_as_its_own_unprivileged_user_issues_and_stores_and_that_user_is_refused_the_deploy_files(
    stack: Stack, deploy_keyring: Path, open_dir: Path, issuer_user: pwd.struct_passwd
) -> None:
    config = _issuer_config(stack, open_dir, issuer_user)
    gw = Gateway(stack, deploy_keyring, open_dir / "rgw", name="issuer-user")
    try:
        res = _run_as(issuer_user, "-m", "rgwtls", "--config", str(config), "issue")
        assert res.code == 0, res.stderr
        assert "WARNING" not in res.stderr, res.stderr
        assert stored_set(stack) is not None
        # The kept-set directory is the issuer's: nothing of deploy's was needed, or touched.
        assert sorted(p.name for p in (open_dir / "state").iterdir()) in ([], ["issued"])
        # deploy, as root, installs it; the issuer's user may read neither its PEM nor its key.
        deploy = run_cli(gw.config(), "deploy")
        assert deploy.code == 0, deploy.stderr
        # Others may pass through the gateway's directory, as through /etc/ceph: the PEM's own
        # mode (root:ceph 0640) must refuse it, not an unreachable directory.
        gw.pem.parent.chmod(gw.pem.parent.stat().st_mode | 0o001)
        refused = [gw.pem, deploy_keyring]
        probe = _run_as(issuer_user, "-c", PROBE, *map(str, refused))
        assert probe.stdout.splitlines() == [f"refused {p}" for p in refused], probe.stdout + probe.stderr
    finally:
        gw.stop()


def test_issue_run_as_root_where_the_issuer_has_a_user_says_so_in_one_warning_line(
    stack: Stack, open_dir: Path, issuer_user: pwd.struct_passwd
) -> None:
    config = _issuer_config(stack, open_dir, issuer_user)
    res = run_cli(config, "issue")
    assert res.code == 0, res.stderr
    warnings = [line for line in res.lines if line.startswith("WARNING")]
    assert warnings == [
        f"WARNING: rgwtls issue runs as root, but acme.run_as is {issuer_user.pw_name}: run it as that user "
        "(as the role's cron entry does), so the process that talks to the CA and DNS owns nothing else"
    ]


def test_a_keyring_its_user_cannot_read_is_one_line_naming_the_file_owner_mode_and_user(
    stack: Stack, open_dir: Path, issuer_user: pwd.struct_passwd, pool: str
) -> None:
    config = _issuer_config(stack, open_dir, issuer_user)
    keyring = open_dir / "ceph.client.rgwtls-issuer.keyring"
    _give(keyring, None, 0o600)  # as a root issuer left it
    res = _run_as(issuer_user, "-m", "rgwtls", "--config", str(config), "issue")
    assert res.code == 1
    assert res.lines == [
        f"ERROR: config {config}: ceph.keyring: {keyring} (owner root, group root, mode 0600) cannot be read by "
        f"{issuer_user.pw_name}, the user rgwtls runs as; give it to that user "
        f"(chown {issuer_user.pw_name} {keyring}; chmod 600 {keyring}) or run rgwtls as its owner"
    ]
    assert stored_set(stack) is None
