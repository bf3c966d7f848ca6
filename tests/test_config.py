from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rgwtls import config
from rgwtls.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "examples" / "rgwtls.toml"
MINIMAL = """
[[certificate]]
name = "cog.example.org"
domains = ["cog.example.org", "*.cog.example.org"]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rgwtls.toml"
    p.write_text(text)
    return p


def test_example_config_loads_with_every_section() -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.certificates[0].domains == ("cog.example.org", "*.cog.example.org")
    assert cfg.dns.infoblox.wapi_version == "2.11"
    assert cfg.ceph.pool == "rgwtls"


def test_minimal_config_takes_the_defaults(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, MINIMAL))
    assert cfg.acme.directory == config.LETSENCRYPT
    assert cfg.dns.provider == "infoblox"
    assert cfg.ceph.timeout == 10.0


def test_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + "[dns.infoblox]\npasword_file = 'x'\n")
    with pytest.raises(ConfigError, match=rf"config {p}: dns.infoblox.pasword_file: unknown key"):
        config.load(p)


def test_wrong_type_names_the_key_and_the_expected_type(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + "[ceph]\ntimeout = 'ten'\n")
    with pytest.raises(ConfigError, match=r"ceph.timeout: must be number, got str"):
        config.load(p)


def test_integer_is_accepted_where_a_number_is_expected(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, MINIMAL + "[ceph]\ntimeout = 5\n"))
    assert cfg.ceph.timeout == 5.0


def test_certificate_without_domains_is_rejected(tmp_path: Path) -> None:
    p = write(tmp_path, "[[certificate]]\nname = 'x'\ndomains = []\n")
    with pytest.raises(ConfigError, match=r"certificate\[0\].domains: must list at least one domain"):
        config.load(p)


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found; pass --config or set RGWTLS_CONFIG"):
        config.load(tmp_path / "nope.toml")


def test_config_path_prefers_option_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RGWTLS_CONFIG", "/from/env.toml")
    assert config.config_path("/from/cli.toml") == Path("/from/cli.toml")
    assert config.config_path(None) == Path("/from/env.toml")
    monkeypatch.delenv("RGWTLS_CONFIG")
    assert config.config_path(None) == config.DEFAULT_PATH


def test_missing_secret_file_names_the_key_and_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dns.infoblox.password_file: secret file .*/gone does not exist"):
        config.read_secret(str(tmp_path / "gone"), "dns.infoblox.password_file", tmp_path / "c.toml")


def test_group_readable_secret_is_read_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    secret.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert config.read_secret(str(secret), "k", tmp_path / "c.toml") == "hunter2"
    assert "chmod 600" in caplog.text
    assert "hunter2" not in caplog.text


def test_private_secret_is_read_silently(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2")
    secret.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        config.read_secret(str(secret), "k", tmp_path / "c.toml")
    assert caplog.text == ""


def test_ceph_user_must_be_a_full_entity_name(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + "[ceph]\nuser = 'rgwtls'\n")
    with pytest.raises(ConfigError, match=r"ceph.user: must be a cephx entity name such as client.rgwtls"):
        config.load(p)
