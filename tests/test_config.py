from __future__ import annotations

import logging
import re
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
    p.chmod(0o644)
    return p


def test_example_config_loads_with_every_section(tmp_path: Path) -> None:
    # A copy of mode 0644, as installation.md installs it: a checkout under umask 002 is group-writable.
    cfg = config.load(write(tmp_path, EXAMPLE.read_text()))
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


# -- numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "line", "problem"),
    [
        ("ceph", "timeout = inf", r"ceph.timeout: must be a finite number, not inf"),
        ("ceph", "timeout = nan", r"ceph.timeout: must be a finite number, not nan"),
        ("deploy", "splay = -inf", r"deploy.splay: must be a finite number, not -inf"),
        ("acme", "retry_backoff = -1", r"acme.retry_backoff: must be 0 or more"),
        ("check", "grace = 1e300", r"check.grace: must be 0 or more and at most 3.1536e\+07"),
        ("ceph", "lock_duration = 0", r"ceph.lock_duration: must be more than 0"),
        ("acme", "poll_interval = 0.0", r"acme.poll_interval: must be more than 0"),
        ("dns", "propagation_timeout = -5", r"dns.propagation_timeout: must be more than 0"),
        ("dns.hook", "timeout = 0", r"dns.hook.timeout: must be more than 0"),
        ("dns.rfc2136", "port = 0", r"dns.rfc2136.port: must be between 1 and 65535, not 0"),
        ("dns", "nameserver_port = 65536", r"dns.nameserver_port: must be between 1 and 65535"),
        ("dns.infoblox", "ttl = -1", r"dns.infoblox.ttl: must be between 0 and"),
        ("acme", "retries = -1", r"acme.retries: must be between 0 and 100"),
        ("acme", "nonce_retries = 1000000", r"acme.nonce_retries: must be between 0 and 100"),
        ("deploy", "max_parallel_restarts = 0", r"deploy.max_parallel_restarts: must be between 1 and"),
        ("acme", "timeout = 0.5", r"acme.timeout: must be at least 1 \(whole seconds\), not 0.5"),
    ],
)
def test_out_of_range_number_names_the_key_and_the_file(tmp_path: Path, section: str, line: str, problem: str) -> None:
    p = write(tmp_path, MINIMAL + f"[{section}]\n{line}\n")
    with pytest.raises(ConfigError, match=rf"^config {p}: {problem}"):
        config.load(p)


def test_zero_is_accepted_where_it_means_none(tmp_path: Path) -> None:
    cfg = config.load(
        write(tmp_path, MINIMAL + "[deploy]\nsplay = 0\nrestart_wait = 0\n[acme]\nretries = 0\nretry_backoff = 0\n")
    )
    assert (cfg.deploy.splay, cfg.deploy.restart_wait, cfg.acme.retries) == (0.0, 0.0, 0)


def test_lock_duration_defaults_to_five_minutes(tmp_path: Path) -> None:
    assert config.load(write(tmp_path, MINIMAL)).ceph.lock_duration == 300.0


# -- restart_command -------------------------------------------------------------------


def test_restart_argv_puts_the_host_into_each_word(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, MINIMAL + "[deploy]\nrestart_command = \"ssh -l {host} 'rgw {host}' {{x}}\"\n"))
    assert cfg.deploy.restart_argv("gw1") == ["ssh", "-l", "gw1", "rgw gw1", "{x}"]


def test_restart_argv_never_splits_a_host_name_into_words() -> None:
    argv = config.DeployConfig().restart_argv("evil; rm -rf / 'x")
    assert argv == ["systemctl", "restart", "ceph-radosgw@rgw.evil; rm -rf / 'x"]


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("", "must name a command"),
        ("   ", "must name a command"),
        ("/bin/true 'x", "cannot be split like a shell would"),
        ("restart {hostname}", r"\{hostname\} is not allowed; the only placeholder is \{host\}"),
        ("restart {}", r"\{\} is not allowed"),
        ("restart {0}", r"\{0\} is not allowed"),
        ("restart {host!r}", r"\{host!r\} is not allowed"),
        ("restart {host:>20}", r"\{host:>20\} is not allowed"),
        ("restart {host.upper}", r"\{host.upper\} is not allowed"),
        ("restart x}", r"Single '\}' encountered"),
        ("restart {host", r"expected '\}'"),
    ],
)
def test_bad_restart_command_is_refused_at_load(tmp_path: Path, command: str, problem: str) -> None:
    p = write(tmp_path, MINIMAL + f"[deploy]\nrestart_command = {command!r}\n")
    with pytest.raises(ConfigError, match=rf"^config {p}: deploy.restart_command: .*{problem}"):
        config.load(p)


# -- deploy.mode -----------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "bits"), [("0640", 0o640), ("0600", 0o600), ("640", 0o640), ("0400", 0o400)])
def test_private_mode_is_accepted(tmp_path: Path, mode: str, bits: int) -> None:
    cfg = config.load(write(tmp_path, MINIMAL + f"[deploy]\nmode = '{mode}'\n"))
    assert cfg.deploy.file_mode == bits


def test_mode_defaults_to_0640() -> None:
    assert config.DeployConfig().file_mode == 0o640


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        ("0644", "0644 lets every user read the private key; use 0640 or 0600"),
        ("0602", "0602 gives every user access to the private key; use 0640 or 0600"),
        ("0o640", "'0o640' is not an octal mode"),
        ("0648", "'0648' is not an octal mode"),
        ("", "'' is not an octal mode"),
        ("-640", "'-640' is not an octal mode"),
        ("4640", "4640 sets more than the permission bits"),
    ],
)
def test_mode_that_is_not_private_or_not_octal_is_refused(tmp_path: Path, mode: str, problem: str) -> None:
    p = write(tmp_path, MINIMAL + f"[deploy]\nmode = '{mode}'\n")
    with pytest.raises(ConfigError, match=rf"^config {p}: deploy.mode: {re.escape(problem)}"):
        config.load(p)


# -- thresholds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "fraction"), [("14", 14.0, False), ("0", 0.0, False), ("20%", 0.2, True), ("100%", 1.0, True)]
)
def test_threshold_parses_days_and_shares(text: str, value: float, fraction: bool) -> None:
    assert config.Threshold.parse(text, "x") == config.Threshold(value, fraction)


@pytest.mark.parametrize("text", ["-5", "inf", "nan", "200%", "-1%", "nan%", "ten"])
def test_threshold_out_of_range_is_refused_with_the_key(tmp_path: Path, text: str) -> None:
    p = write(tmp_path, MINIMAL + f"[check]\nwarning = '{text}'\n")
    with pytest.raises(ConfigError, match=rf"^config {p}: check.warning: '{re.escape(text)}' is "):
        config.load(p)


def test_threshold_is_still_importable_from_check() -> None:
    from rgwtls.check import Threshold

    assert Threshold is config.Threshold


# -- the file's own mode ---------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_config_writable_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    p = write(tmp_path, MINIMAL)
    p.chmod(mode)
    with pytest.raises(ConfigError) as err:
        config.load(p)
    assert str(err.value) == (
        f"config {p} is writable by group or others (mode {mode:04o}): its restart_command and "
        f"hook.command run as root; run: chmod go-w {p}"
    )


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o444])
def test_config_only_its_owner_may_write_loads(tmp_path: Path, mode: int) -> None:
    p = write(tmp_path, MINIMAL)
    p.chmod(mode)
    assert config.load(p).certificates[0].name == "cog.example.org"


def test_config_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "rgwtls.toml"
    p.write_bytes(b"# \xff\n" + MINIMAL.encode())
    p.chmod(0o644)
    with pytest.raises(ConfigError, match=rf"^config file {p} is not UTF-8"):
        config.load(p)


# -- proxy keys --------------------------------------------------------------------


def test_acme_proxy_with_user_and_password_file_loads_and_infoblox_goes_direct(tmp_path: Path) -> None:
    text = "[acme]\nproxy = 'http://rgwtls@proxy.example.org:3128'\nproxy_password_file = '/etc/rgwtls/proxy.pw'\n"
    cfg = config.load(write(tmp_path, MINIMAL + text))
    assert cfg.acme.proxy == "http://rgwtls@proxy.example.org:3128"
    assert config.proxy_user(cfg.acme.proxy) == "rgwtls"
    # The internet through the proxy, the internal appliance direct.
    assert cfg.dns.infoblox.proxy == config.PROXY_DIRECT


def test_without_proxy_keys_the_environment_decides(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, MINIMAL))
    assert cfg.acme.proxy == ""
    assert cfg.dns.infoblox.proxy == ""


def test_infoblox_proxy_of_its_own_is_kept(tmp_path: Path) -> None:
    text = "[acme]\nproxy = 'direct'\n[dns.infoblox]\nproxy = 'http://10.0.0.8:8080'\n"
    cfg = config.load(write(tmp_path, MINIMAL + text))
    assert cfg.acme.proxy == "direct"
    assert cfg.dns.infoblox.proxy == "http://10.0.0.8:8080"


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("acme.proxy", "https://proxy.example.org:3128", "must be http://host:port"),
        ("acme.proxy", "proxy.example.org:3128", "must be http://host:port"),
        ("acme.proxy", "http://proxy.example.org", "must name a host and a port"),
        ("acme.proxy", "http://proxy.example.org:99999", "is not a URL"),
        ("acme.proxy", "http://proxy.example.org:3128/path", "without a path"),
        ("dns.infoblox.proxy", "http://ops@10.0.0.8:8080", "for acme.proxy only"),
    ],
)
def test_bad_proxy_url_is_one_line_naming_the_key(tmp_path: Path, key: str, value: str, problem: str) -> None:
    section, name = key.rsplit(".", 1)
    p = write(tmp_path, MINIMAL + f"[{section}]\n{name} = '{value}'\n")
    with pytest.raises(ConfigError, match=rf"config {p}: {re.escape(key)}: .*{re.escape(problem)}"):
        config.load(p)


def test_proxy_password_in_the_url_is_refused_without_repeating_it(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + "[acme]\nproxy = 'http://rgwtls:hunter2@proxy.example.org:3128'\n")
    with pytest.raises(ConfigError, match=r"acme.proxy: http://proxy.example.org:3128: the password goes in") as e:
        config.load(p)
    assert "hunter2" not in str(e.value)


def test_proxy_user_needs_a_password_file_and_a_password_file_a_user(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + "[acme]\nproxy = 'http://rgwtls@proxy.example.org:3128'\n")
    with pytest.raises(ConfigError, match=r"acme.proxy_password_file: required"):
        config.load(p)
    p = write(tmp_path, MINIMAL + "[acme]\nproxy = 'http://proxy.example.org:3128'\nproxy_password_file = '/x'\n")
    with pytest.raises(ConfigError, match=r"acme.proxy_password_file: acme.proxy names no user"):
        config.load(p)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a\0b", "holds a NUL byte"),
        ("a\nb", "holds the control character U+000A"),
        ("tab\there", "holds the control character U+0009"),
        ("del\x7f", "holds the control character U+007F"),
        ("../x", "must not hold '/'"),
        ("a/b", "must not hold '/'"),
        (".hidden", "must not start with '.'"),
        ("x" * 300, f"is 300 bytes long; at most {config.MAX_NAME_BYTES} are allowed"),
        ("é" * 33, f"is 66 bytes long; at most {config.MAX_NAME_BYTES} are allowed"),
        ("", "must not be empty"),
    ],
)
def test_unsafe_certificate_name_is_refused_at_load_naming_the_key(tmp_path: Path, name: str, problem: str) -> None:
    raw = {
        "certificate": [
            {"name": "fine", "domains": ["a.example.org"]},
            {"name": "also-fine", "domains": ["b.example.org"]},
            {"name": "fine2", "domains": ["c.example.org"]},
            {"name": name, "domains": ["d.example.org"]},
        ]
    }
    with pytest.raises(ConfigError) as e:
        config.parse(raw, tmp_path / "c.toml")
    assert str(e.value).startswith(f"config {tmp_path / 'c.toml'}: certificate[3].name: ")
    assert problem in str(e.value)
    assert not any(c in str(e.value) for c in "\n\0")


@pytest.mark.parametrize("name", ["cog.example.org", "s3_eu-1", "x" * config.MAX_NAME_BYTES, "zone.example.org..1"])
def test_safe_certificate_name_loads(tmp_path: Path, name: str) -> None:
    cfg = config.parse({"certificate": [{"name": name, "domains": ["a.example.org"]}]}, tmp_path / "c.toml")
    assert cfg.certificates[0].name == name
