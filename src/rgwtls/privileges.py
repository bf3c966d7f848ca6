"""Who `rgwtls issue` runs as, and whether that user can read what its config names (issue 22).

The issuer is the one process that parses answers from the internet (the CA,
DNS, the WAPI), so it is meant to run as a system user of its own that owns
its config, its secrets, its keyring and its state, and nothing else. These
checks run before the issuer touches the pool: a file its user cannot read
is one line naming the file, its owner and mode, and the user, instead of a
librados or back-end error that names neither.
"""

from __future__ import annotations

import dataclasses
import grp
import logging
import os
import pwd
import stat
from pathlib import Path

from rgwtls.config import Config
from rgwtls.errors import ConfigError

log = logging.getLogger(__name__)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return f"gid {gid}"


def running_as() -> str:
    """The user whose rights decide what this process may open (the effective one)."""
    return user_name(os.geteuid())


def explain_unreadable(path: str | os.PathLike[str], key: str) -> str:
    """One line for a file the config names (at `key`) that this process may not read.

    It names what the operator needs to fix it without a second look: the
    file's owner, group and mode, and who rgwtls runs as.
    """
    return _explain(Path(path), key, "read", "600")


def explain_unwritable(path: str | os.PathLike[str], key: str) -> str:
    """One line for a directory the config names (at `key`) that this process may not write, as explain_unreadable."""
    return _explain(Path(path), key, "written", "700")


def _explain(p: Path, key: str, verb: str, mode: str) -> str:
    try:
        st = p.stat()
        who = f"owner {user_name(st.st_uid)}, group {_group_name(st.st_gid)}, mode {stat.S_IMODE(st.st_mode):04o}"
    except OSError as e:
        who = f"not reachable: {e.strerror}"
    me = running_as()
    return (
        f"{key}: {p} ({who}) cannot be {verb} by {me}, the user rgwtls runs as; "
        f"give it to that user (chown {me} {p}; chmod {mode} {p}) or run rgwtls as its owner"
    )


def _readable(path: str) -> bool | None:
    """True or False for a file that is there; None for one that is not (its own check says so later)."""
    try:
        with open(path, "rb"):
            return True
    except PermissionError:
        return False
    except OSError:
        return None


def _files(prefix: str, section: object) -> list[tuple[str, str]]:
    """Every `*_file` key of a config section and the sections it holds, as (key, path), in field order."""
    found: list[tuple[str, str]] = []
    if not dataclasses.is_dataclass(section) or isinstance(section, type):
        return found
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        key = f"{prefix}.{f.name}"
        if f.name.endswith("_file") and isinstance(value, str) and value:
            found.append((key, value))
        elif dataclasses.is_dataclass(value):
            found += _files(key, value)
        elif isinstance(value, tuple):
            for i, item in enumerate(value):
                found += _files(f"{key}[{i}]", item)
    return found


def issuer_files(cfg: Config) -> list[tuple[str, str]]:
    """What `issue` reads besides its config: the keyring, and the secrets of [acme] and its DNS back end."""
    files = [("ceph.keyring", cfg.ceph.keyring)] if cfg.ceph.keyring else []
    files += _files("acme", cfg.acme)
    backend = getattr(cfg.dns, cfg.dns.provider, None)
    files += _files(f"dns.{cfg.dns.provider}", backend)
    return files


def check_issuer(cfg: Config) -> None:
    """Before `issue` starts: root running where acme.run_as names a user is a WARNING; an unreadable file, an error."""
    if os.geteuid() == 0 and cfg.acme.run_as and cfg.acme.run_as != "root":
        log.warning(
            "rgwtls issue runs as root, but acme.run_as is %s: run it as that user (as the role's cron entry does), "
            "so the process that talks to the CA and DNS owns nothing else",
            cfg.acme.run_as,
        )
    for key, path in issuer_files(cfg):
        if _readable(path) is False:
            raise ConfigError(f"config {cfg.path}: {explain_unreadable(path, key)}")
    # Where it keeps a set the CA issued that the pool could not take: one it cannot
    # write there is a certificate lost, found only when the pool fails.
    state = Path(cfg.deploy.state_dir)
    if state.is_dir() and not os.access(state, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        raise ConfigError(f"config {cfg.path}: {explain_unwritable(state, 'deploy.state_dir')}")
