"""A keyring librados cannot use: cron mail gets rgwtls's one line, naming the cause and the path, and nothing else.

librados prints its own lines to stderr before it fails (six for a missing
keyring, each blaming nothing in particular); rgwtls silences them and says
what they meant. Through the real cluster, for the deploy job cron runs on
every gateway and for the issuer.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Result, Stack, run_cli

Damage = Callable[[Stack, Path], Path]


def missing(stack: Stack, d: Path) -> Path:
    return d / "no-such.keyring"


def a_directory(stack: Stack, d: Path) -> Path:
    (d / "keyring.d").mkdir()
    return d / "keyring.d"


def garbage(stack: Stack, d: Path) -> Path:
    (d / "garbage.keyring").write_text("this is no keyring\n")
    return d / "garbage.keyring"


def refused(stack: Stack, d: Path) -> Path:
    """A well-formed key the cluster does not know for this user: one that was revoked, or another's."""
    key = subprocess.run(["ceph-authtool", "--gen-print-key"], capture_output=True, text=True, check=True).stdout
    user = stack.settings()["ceph"]["user"]
    (d / "refused.keyring").write_text(f"[{user}]\n\tkey = {key.strip()}\n")
    return d / "refused.keyring"


def another_users(stack: Stack, d: Path) -> Path:
    """A keyring with a good key, of another user (a copy of the wrong file)."""
    key = subprocess.run(["ceph-authtool", "--gen-print-key"], capture_output=True, text=True, check=True).stdout
    (d / "other.keyring").write_text(f"[client.someone-else]\n\tkey = {key.strip()}\n")
    return d / "other.keyring"


CASES: list[tuple[Damage, str]] = [
    (missing, "does not exist"),
    (a_directory, "is a directory"),
    (garbage, "is not a Ceph keyring"),
    (refused, "the cluster refused the key of"),
    (another_users, "this user's"),  # Pacific: the key is refused; Tentacle: none is found for the user
]


def only_line(res: Result) -> str:
    assert res.code != 0
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("ERROR: "), res.stderr
    return lines[0]


@pytest.mark.parametrize(("damage", "said"), CASES, ids=[d.__name__ for d, _ in CASES])
@pytest.mark.parametrize("command", ["deploy", "issue"])
def test_unusable_keyring_is_one_line_naming_the_cause_and_path(
    stack: Stack, tmp_path: Path, damage: Damage, said: str, command: str
) -> None:
    settings = stack.settings()
    keyring = damage(stack, tmp_path)
    settings["ceph"]["keyring"] = str(keyring)
    settings["deploy"]["state_dir"] = str(tmp_path / "state")
    line = only_line(run_cli(stack.write_config(settings), command))
    assert said in line
    assert str(keyring) in line
    assert "check that the mons are up" not in line  # the mons were never the problem
    assert "auth:" not in line
