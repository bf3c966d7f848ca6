"""Secret files are read and checked before anything is ordered, and no byte of one is ever printed or recorded."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from devsite.site import to_toml
from rgwtls import config
from rgwtls.cli import main
from rgwtls.errors import ConfigError, RgwtlsError, describe, scrub
from rgwtls.issue import run as issue_module
from tests.conftest import run_cli

# A password saved as Latin-1: the byte 0xff and the é (0xe9) are not UTF-8.
LATIN1_SECRET = "\xffs3cr3t\xe9".encode("latin-1")
SECRET_TRACES = ("s3cr3t", "0xff", "0xe9", "\xff", "\xe9", "position", "\\x")


def base(tmp_path: Path) -> dict[str, Any]:
    return {
        "ceph": {"conf": str(tmp_path / "no-such-ceph.conf"), "timeout": 1.0},
        "deploy": {"state_dir": str(tmp_path / "state")},
        "certificate": [{"name": "cog.example.org", "domains": ["cog.example.org", "*.cog.example.org"]}],
    }


def with_secret(tmp_path: Path, key: str) -> tuple[dict[str, Any], Path, bool]:
    """A config whose secret under `key` is the Latin-1 file; (settings, the file, whether the run is --staging)."""
    secret = tmp_path / "secret"
    secret.write_bytes(LATIN1_SECRET)
    secret.chmod(0o600)
    s = base(tmp_path)
    staging = False
    if key == "dns.infoblox.password_file":
        s["dns"] = {"provider": "infoblox", "infoblox": {"server": "wapi.example.org", "password_file": str(secret)}}
    elif key == "dns.uddi.api_key_file":
        s["dns"] = {"provider": "uddi", "uddi": {"api_key_file": str(secret)}}
    elif key in ("dns.rfc2136.tsig_secret_file", "dns.rfc2136.alias_tsig_secret_file"):
        good = tmp_path / "good-tsig"
        good.write_text("c2VjcmV0\n")
        good.chmod(0o600)
        rfc = {"server": "127.0.0.1", "tsig_key_name": "k", "tsig_secret_file": str(good)}
        rfc[key.rsplit(".", 1)[1]] = str(secret)
        s["dns"] = {"provider": "rfc2136", "rfc2136": rfc}
    elif key == "acme.eab_hmac_key_file":
        s["acme"] = {"eab_kid": "kid-1", "eab_hmac_key_file": str(secret)}
    elif key == "acme.staging_eab_hmac_key_file":
        s["acme"] = {"staging_eab_kid": "kid-1", "staging_eab_hmac_key_file": str(secret)}
        staging = True
    elif key == "acme.proxy_password_file":
        s["acme"] = {"proxy": "http://rgwtls@127.0.0.1:1", "proxy_password_file": str(secret)}
    else:
        raise AssertionError(key)
    if key.startswith("acme."):
        s["dns"] = {"provider": "hook", "hook": {"command": "/bin/true"}}
    return s, secret, staging


def write(tmp_path: Path, settings: dict[str, Any]) -> Path:
    path = tmp_path / "rgwtls.toml"
    path.write_text(to_toml(settings))
    path.chmod(0o644)
    return path


SECRET_KEYS = [
    "dns.infoblox.password_file",
    "dns.uddi.api_key_file",
    "dns.rfc2136.tsig_secret_file",
    "dns.rfc2136.alias_tsig_secret_file",
    "acme.eab_hmac_key_file",
    "acme.staging_eab_hmac_key_file",
    "acme.proxy_password_file",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_a_latin1_secret_is_one_line_naming_key_and_file_with_no_byte_of_it(tmp_path: Path, key: str) -> None:
    settings, secret, staging = with_secret(tmp_path, key)
    path = write(tmp_path, settings)
    with pytest.raises(ConfigError) as e:
        config.check_secrets(config.load(path), staging)
    assert str(e.value) == f"config {path}: {key}: secret file {secret} is not UTF-8 text; save it as UTF-8"
    # Through the CLI: one line, before the cluster (which does not exist) is even asked.
    res = run_cli(path, "issue", *(["--staging"] if staging else []))
    assert res.code == 1
    assert res.lines == [f"ERROR: {e.value}"]
    assert not any(t in res.stderr for t in SECRET_TRACES)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "does not exist"),
        (b"  \n", "is empty"),
        ("a directory", "cannot read secret file"),
        (LATIN1_SECRET, "is not UTF-8 text; save it as UTF-8"),
        (b"abc123\nsecond-line\n", "holds a line break or another control character; keep it on one line"),
        (b"abc\x00123", "holds a line break or another control character"),
    ],
)
def test_every_bad_secret_is_one_line_naming_the_key(tmp_path: Path, content: bytes | str | None, problem: str) -> None:
    settings, secret, _ = with_secret(tmp_path, "dns.infoblox.password_file")
    secret.unlink()
    if isinstance(content, bytes):
        secret.write_bytes(content)
    elif content is not None:
        secret.mkdir()  # unreadable as a file, whoever runs the test
    cfg = config.load(write(tmp_path, settings))
    with pytest.raises(ConfigError, match=r"dns\.infoblox\.password_file: ") as e:
        config.check_secrets(cfg, staging=False)
    assert problem in str(e.value)
    assert "abc" not in str(e.value)
    assert "second-line" not in str(e.value)


def test_only_the_secrets_this_run_needs_are_read(tmp_path: Path) -> None:
    settings, _, _ = with_secret(tmp_path, "dns.infoblox.password_file")
    settings["acme"] = {"staging_eab_kid": "kid-1", "staging_eab_hmac_key_file": str(tmp_path / "absent")}
    settings["dns"]["challenge"] = "dns-persist-01"
    cfg = config.load(write(tmp_path, settings))
    # Production, and every name validated by dns-persist-01: neither the staging binding nor the WAPI is needed.
    assert config.secret_files(cfg, staging=False) == []
    config.check_secrets(cfg, staging=False)
    # `persist --publish` writes through the back end: then the WAPI password is needed.
    assert [k for k, _ in config.secret_files(cfg, staging=False, dns=True)] == ["dns.infoblox.password_file"]
    assert [k for k, _ in config.secret_files(cfg, staging=True)] == ["acme.staging_eab_hmac_key_file"]


def test_a_group_readable_secret_warns_once_although_it_is_read_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    secret.chmod(0o640)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert config.read_secret(str(secret), "k", tmp_path / "c.toml") == "hunter2"
    assert caplog.text.count("chmod 600") == 1


# -- the rule of the error path: what reaches the pool or the terminal is scrubbed --------


def codec_error() -> UnicodeDecodeError:
    try:
        LATIN1_SECRET.decode("utf-8")
    except UnicodeDecodeError as e:
        return e
    raise AssertionError("Latin-1 decoded as UTF-8")


def test_a_codec_error_is_described_without_its_bytes_or_position() -> None:
    e = codec_error()
    assert "0xff" in str(e)
    assert describe(e) == "unexpected UnicodeDecodeError: text that is not valid utf-8 (invalid start byte)"
    wrapped = RgwtlsError(f"the WAPI answered: {e}; check the server")
    assert describe(wrapped) == "the WAPI answered: text that is not valid utf-8 (invalid start byte); check the server"
    with pytest.raises(UnicodeEncodeError) as enc:
        "\xe9".encode("ascii")
    assert (
        describe(enc.value) == "unexpected UnicodeEncodeError: text that is not valid ascii (ordinal not in range(128))"
    )
    assert scrub("nothing to take out") == "nothing to take out"


class FakePool:
    """The pool as issue() uses it, keeping what is written."""

    def __init__(self, *_: object) -> None:
        self.written: dict[tuple[str, str], bytes] = {}

    def __enter__(self) -> FakePool:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    @contextmanager
    def issuer_lock(self) -> Iterator[object]:
        yield object()

    @staticmethod
    def set_namespace(staging: bool) -> str:
        return "staging" if staging else ""

    def read(self, ns: str, obj: str) -> bytes | None:
        return self.written.get((ns, obj))

    def write(self, ns: str, obj: str, data: bytes) -> None:
        self.written[(ns, obj)] = data

    def read_set(self, name: str, staging: bool = False) -> None:
        return None


def test_a_codec_error_during_issue_reaches_the_last_issue_record_and_the_terminal_without_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = FakePool()
    monkeypatch.setattr(issue_module, "Pool", lambda *_: pool)

    def failing(*_: object) -> bool:
        raise codec_error()

    monkeypatch.setattr(issue_module, "_issue_one", failing)
    settings = base(tmp_path)
    settings["dns"] = {"provider": "hook", "hook": {"command": "/bin/true"}}
    path = write(tmp_path, settings)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        res = CliRunner().invoke(main, ["--config", str(path), "issue"])
    finally:
        root.handlers[:], root.level = handlers, level
    assert res.exit_code == 1
    assert res.stderr.splitlines() == [
        "ERROR: unexpected UnicodeDecodeError: text that is not valid utf-8 (invalid start byte); "
        "run again with --debug for the traceback"
    ]
    record = json.loads(pool.written[("", "cog.example.org/last-issue")])
    # With the retry schedule's time after it.
    assert record["error"].startswith(
        "unexpected UnicodeDecodeError: text that is not valid utf-8 (invalid start byte); next attempt after "
    )
    assert not any(t in json.dumps(record) + res.stderr for t in SECRET_TRACES if t != "\\x")
