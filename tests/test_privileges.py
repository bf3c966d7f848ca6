"""The issuer's own checks of who it runs as (issue 22): a root run where a user is configured, an unreadable secret."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rgwtls import config, privileges
from rgwtls.errors import ConfigError

NOBODY = 65534


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory others may pass through (pytest's tmp_path is root's alone), removed after."""
    d = Path(tempfile.mkdtemp(prefix="rgwtls-priv-"))
    d.chmod(0o711)
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.fixture
def as_nobody() -> Iterator[None]:
    """This process's effective user is nobody for the test, root again after (the test suite runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to become nobody")
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)


def _config(d: Path, extra: str = "", state_dir: Path | None = None) -> config.Config:
    keyring = d / "ceph.client.rgwtls-issuer.keyring"
    keyring.write_text("[client.rgwtls-issuer]\n\tkey = x\n")
    keyring.chmod(0o600)
    secret = d / "wapi-password"
    secret.write_text("pw\n")
    secret.chmod(0o600)
    path = d / "issuer.toml"
    path.write_text(
        f'[acme]\nemail = "ops@example.org"\n{extra}\n'
        f'[ceph]\nuser = "client.rgwtls-issuer"\nkeyring = "{keyring}"\n'
        f'[dns.infoblox]\nserver = "wapi.example.org"\nusername = "u"\npassword_file = "{secret}"\n'
        '[dns.uddi]\napi_key_file = "/nonexistent/uddi-key"\n'
        f'[deploy]\nstate_dir = "{state_dir or d / "no-state"}"\n'
        '[[certificate]]\nname = "example.org"\ndomains = ["example.org"]\n'
    )
    path.chmod(0o644)
    return config.load(path)


def test_issuer_files_are_the_keyring_and_the_secrets_of_acme_and_the_configured_back_end_only(open_dir: Path) -> None:
    cfg = _config(open_dir, f'eab_kid = "k"\neab_hmac_key_file = "{open_dir}/eab"')
    assert privileges.issuer_files(cfg) == [
        ("ceph.keyring", str(open_dir / "ceph.client.rgwtls-issuer.keyring")),
        ("acme.eab_hmac_key_file", str(open_dir / "eab")),
        ("dns.infoblox.password_file", str(open_dir / "wapi-password")),
    ]


def test_root_run_where_an_issuer_user_is_configured_is_one_warning(
    open_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    caplog.set_level(logging.WARNING)
    privileges.check_issuer(_config(open_dir, 'run_as = "rgwtls"'))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert warnings[0].startswith("rgwtls issue runs as root, but acme.run_as is rgwtls: run it as that user")


def test_root_run_without_an_issuer_user_says_nothing(open_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    privileges.check_issuer(_config(open_dir))
    assert not caplog.records


def test_unreadable_keyring_is_one_line_naming_the_file_its_owner_mode_and_the_user(
    open_dir: Path, as_nobody: None
) -> None:
    os.seteuid(0)
    cfg = _config(open_dir, 'run_as = "rgwtls"')
    os.seteuid(NOBODY)
    with pytest.raises(ConfigError) as e:
        privileges.check_issuer(cfg)
    keyring = open_dir / "ceph.client.rgwtls-issuer.keyring"
    assert str(e.value) == (
        f"config {open_dir / 'issuer.toml'}: ceph.keyring: {keyring} (owner root, group root, mode 0600) "
        f"cannot be read by nobody, the user rgwtls runs as; give it to that user "
        f"(chown nobody {keyring}; chmod 600 {keyring}) or run rgwtls as its owner"
    )
    assert "\n" not in str(e.value)


def test_unreadable_secret_is_named_once_the_keyring_is_readable(open_dir: Path, as_nobody: None) -> None:
    os.seteuid(0)
    cfg = _config(open_dir)
    os.chown(cfg.ceph.keyring, NOBODY, -1)
    os.seteuid(NOBODY)
    with pytest.raises(ConfigError, match=r"dns\.infoblox\.password_file: .*wapi-password \(owner root, group root, "):
        privileges.check_issuer(cfg)


def test_a_missing_file_is_left_to_the_check_that_reads_it(open_dir: Path) -> None:
    cfg = _config(open_dir)
    os.remove(cfg.dns.infoblox.password_file)
    privileges.check_issuer(cfg)


def test_explain_unreadable_of_a_file_out_of_reach_says_so(open_dir: Path) -> None:
    line = privileges.explain_unreadable(open_dir / "gone", "dns.hook.x_file")
    assert line.startswith(f"dns.hook.x_file: {open_dir / 'gone'} (not reachable: No such file or directory)")


def test_a_state_dir_its_user_cannot_write_is_one_line_naming_it(open_dir: Path, as_nobody: None) -> None:
    os.seteuid(0)
    state = open_dir / "state"
    state.mkdir(mode=0o755)
    cfg = _config(open_dir, extra="", state_dir=state)
    for path in (cfg.ceph.keyring, cfg.dns.infoblox.password_file):
        os.chown(path, NOBODY, -1)
    os.seteuid(NOBODY)
    with pytest.raises(ConfigError) as e:
        privileges.check_issuer(cfg)
    assert str(e.value) == (
        f"config {open_dir / 'issuer.toml'}: deploy.state_dir: {state} (owner root, group root, mode 0755) "
        f"cannot be written by nobody, the user rgwtls runs as; give it to that user "
        f"(chown nobody {state}; chmod 700 {state}) or run rgwtls as its owner"
    )
