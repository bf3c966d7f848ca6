"""What deploy does to the files radosgw reads: the site's access kept, and faults that leave them whole.

radosgw runs as Debian's unit runs it (root, then `--setuser ceph
--setgroup ceph`), and each test reads the installed and rolled-back files as
that user, not by reasoning about mode bits. Each filesystem fault states
the gateway's final state: still serving its old certificate from a whole file.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devsite.gateway import Gateway
from tests.conftest import Stack, run_cli
from tests.test_deploy_e2e import fingerprint_of_pool, issue
from tests.test_issue_e2e import assert_one_error_line


def _owner(path: Path) -> tuple[str, str, int]:
    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, st.st_mode & 0o777


def _fail_first_restart(gateway: Gateway, tmp_path: Path) -> None:
    flag, script = tmp_path / "failed-once", tmp_path / "restart.sh"
    script.write_text(
        f"#!/bin/sh\nif [ ! -e {flag} ]; then touch {flag}; exit 1; fi\nexec {gateway.rgw.restart_command}\n"
    )
    script.chmod(0o755)
    gateway.settings["deploy"]["restart_command"] = str(script)


def test_site_owner_group_and_mode_are_kept_on_install_and_on_rollback(
    stack: Stack, gateway: Gateway, tmp_path: Path
) -> None:
    assert _owner(gateway.pem) == ("root", gateway.group, 0o640)
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    assert _owner(gateway.pem) == ("root", gateway.group, 0o640)
    assert gateway.readable_by_gateway(gateway.pem)
    previous = gateway.pem.with_name("rgw.pem.previous")
    assert _owner(previous) == ("root", gateway.group, 0o640)
    # A failed restart rolls back; what it puts back is the site's too.
    served = gateway.served()
    issue(stack, "--force")
    _fail_first_restart(gateway, tmp_path)
    res = run_cli(gateway.config(), "deploy")
    assert_one_error_line(res, "restored the previous certificate and restarted: it is served again")
    assert gateway.served() == served
    assert _owner(gateway.pem) == ("root", gateway.group, 0o640)
    assert gateway.readable_by_gateway(gateway.pem)


def test_world_readable_pem_loses_the_world_with_a_warning(stack: Stack, gateway: Gateway) -> None:
    """Migrating from the shell job's 0644 root:root file."""
    os.chown(gateway.pem, 0, 0)
    gateway.pem.chmod(0o644)
    issue(stack)
    res = run_cli(gateway.config(), "deploy")
    assert res.code == 0, res.stderr
    assert "was accessible to every user (mode 0644)" in res.stderr
    assert _owner(gateway.pem) == ("root", "root", 0o640)
    assert gateway.served() == fingerprint_of_pool(stack)


def test_new_file_gets_deploy_mode_owner_and_group(stack: Stack, gateway: Gateway, tmp_path: Path) -> None:
    fresh = tmp_path / "tls" / "rgw.pem"
    fresh.parent.mkdir()
    shutil.copy(gateway.pem, fresh)
    gateway.serve_from(fresh)
    fresh.unlink()  # radosgw read it at its start; deploy now finds no file there
    gateway.settings["deploy"].update(mode="0640", owner="root", group=gateway.group)
    issue(stack)
    res = run_cli(gateway.config(), "deploy")
    assert res.code == 0, res.stderr
    assert _owner(fresh) == ("root", gateway.group, 0o640)
    assert gateway.readable_by_gateway(fresh)
    assert gateway.served() == fingerprint_of_pool(stack)


def test_symlinked_pem_keeps_its_link_and_its_target_is_replaced(
    stack: Stack, gateway: Gateway, tmp_path: Path
) -> None:
    real_dir = tmp_path / "private"
    real_dir.mkdir()
    real = real_dir / "rgw-real.pem"
    shutil.copy2(gateway.pem, real)
    os.chown(real, 0, grp.getgrnam(gateway.group).gr_gid)
    link = tmp_path / "rgw-link.pem"
    link.symlink_to(real)
    gateway.serve_from(link)
    issue(stack)
    res = run_cli(gateway.config(), "deploy")
    assert res.code == 0, res.stderr
    assert link.is_symlink()
    assert link.resolve() == real
    assert (real_dir / "rgw-real.pem.previous").exists()
    assert gateway.served() == fingerprint_of_pool(stack)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 16 KiB: room for the old PEM and its copy, not for the new one too."""
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k,mode=0755", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(where: Path, leave: int) -> Path:
    """Fill the filesystem until `leave` bytes are free."""
    filler = where / "filler"
    st = os.statvfs(where)
    free = st.f_bavail * st.f_frsize
    with filler.open("wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_full_disk_leaves_the_old_file_whole_and_the_next_run_installs(
    stack: Stack, gateway: Gateway, small_fs: Path
) -> None:
    pem = small_fs / "rgw.pem"
    shutil.copy2(gateway.pem, pem)
    gateway.serve_from(pem)
    old, served, restarts = pem.read_bytes(), gateway.served(), gateway.restarts()
    issue(stack)
    filler = _fill(small_fs, 4096)
    res = run_cli(gateway.config(), "deploy")
    assert_one_error_line(res, "No space left on device; nothing was changed")
    assert pem.read_bytes() == old
    assert gateway.served() == served
    assert gateway.restarts() == restarts
    assert [p.name for p in small_fs.iterdir() if p.name.startswith(".")] == []
    filler.unlink()
    res = run_cli(gateway.config(), "deploy")
    assert res.code == 0, res.stderr
    assert gateway.served() == fingerprint_of_pool(stack)


def test_read_only_filesystem_changes_nothing(stack: Stack, gateway: Gateway, small_fs: Path) -> None:
    pem = small_fs / "rgw.pem"
    shutil.copy2(gateway.pem, pem)
    gateway.serve_from(pem)
    old, served = pem.read_bytes(), gateway.served()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    issue(stack)
    res = run_cli(gateway.config(), "deploy")
    assert_one_error_line(res, "Read-only file system; nothing was changed")
    assert pem.read_bytes() == old
    assert gateway.served() == served


def test_missing_directory_changes_nothing(stack: Stack, gateway: Gateway, tmp_path: Path) -> None:
    served = gateway.served()
    gateway.settings["deploy"]["path"] = str(tmp_path / "no-such-dir" / "rgw.pem")
    issue(stack)
    res = run_cli(gateway.config(), "deploy")
    assert_one_error_line(res, "No such file or directory; nothing was changed")
    assert gateway.served() == served
    assert gateway.restarts() == 0


def test_unknown_owner_changes_nothing(stack: Stack, gateway: Gateway, tmp_path: Path) -> None:
    served = gateway.served()
    gateway.settings["deploy"].update(path=str(tmp_path / "new.pem"), owner="no-such-user-rgwtls")
    issue(stack)
    res = run_cli(gateway.config(), "deploy")
    assert_one_error_line(res, "deploy.owner: no user 'no-such-user-rgwtls' on this host; nothing was changed")
    assert not (tmp_path / "new.pem").exists()
    assert gateway.served() == served
    assert gateway.restarts() == 0


def test_nul_byte_after_the_key_is_refused_before_anything_changes(stack: Stack, gateway: Gateway) -> None:
    from tests.test_deploy_e2e import _mutated, _put_set
    from tests.test_issue_e2e import stored_set

    issue(stack)
    s = stored_set(stack)
    assert s is not None
    _put_set(stack, _mutated(stack, format="rgwtls-set/1", key_pem=str(s["key_pem"]) + "\0"))
    served, pem = gateway.served(), gateway.pem.read_bytes()
    res = run_cli(gateway.config(), "deploy")
    assert_one_error_line(res, "outside its PEM block")
    assert (gateway.served(), gateway.pem.read_bytes(), gateway.restarts()) == (served, pem, 0)
