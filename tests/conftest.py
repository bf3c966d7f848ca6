"""The real test stack, started once per session, and helpers to drive the CLI.

Pebble validates against BIND; the WAPI emulator writes into that BIND; the
Ceph cluster holds the pool. Each test gets an emptied pool and a config file
pointing at all of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rados

from tests.stack.bind import Bind, bind_server
from tests.stack.ceph import CephCluster, ceph_cluster
from tests.stack.pebble import Pebble, pebble_server
from tests.stack.tlsca import TestCA
from tests.stack.wapi import WapiEmulator, wapi_emulator

ZONE = "cog.example.org"
DOMAINS = (ZONE, f"*.{ZONE}")
POOL = "rgwtls"
ISSUER_CAPS = {"mon": "allow r", "osd": f"allow rwx pool={POOL}"}


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def test_ca(stack_dir: Path) -> TestCA:
    return TestCA(stack_dir / "ca")


@pytest.fixture(scope="session")
def bind(stack_dir: Path) -> Iterator[Bind]:
    with bind_server(stack_dir / "bind", zones=(ZONE,)) as b:
        yield b


@pytest.fixture(scope="session")
def pebble(stack_dir: Path, test_ca: TestCA, bind: Bind) -> Iterator[Pebble]:
    with pebble_server(stack_dir / "pebble", test_ca, bind.port) as p:
        yield p


@pytest.fixture(scope="session")
def ceph(stack_dir: Path) -> Iterator[CephCluster]:
    with ceph_cluster(stack_dir / "ceph", pools=(POOL,)) as c:
        yield c


@pytest.fixture(scope="session")
def wapi_server(stack_dir: Path, bind: Bind) -> Iterator[WapiEmulator]:
    with wapi_emulator(stack_dir / "wapi", bind) as w:
        yield w


@pytest.fixture
def wapi(wapi_server: WapiEmulator) -> Iterator[WapiEmulator]:
    """The emulator, healthy and empty at the start of each test and after it."""
    wapi_server.reset()
    yield wapi_server
    wapi_server.reset()


@pytest.fixture(scope="session")
def issuer_keyring(ceph: CephCluster) -> Path:
    return ceph.create_user("client.rgwtls-issuer", ISSUER_CAPS)


def _empty_pool(ceph: CephCluster) -> None:
    ioctx = ceph.admin().open_ioctx(POOL)
    try:
        ioctx.set_namespace(rados.LIBRADOS_ALL_NSPACES)
        objs = [(o.nspace, o.key) for o in ioctx.list_objects()]
        for ns, key in objs:
            ioctx.set_namespace(ns)
            ioctx.remove_object(key)
    finally:
        ioctx.close()


@pytest.fixture
def pool(ceph: CephCluster) -> str:
    """The rgwtls pool, emptied for this test."""
    _empty_pool(ceph)
    return POOL


@dataclass
class Stack:
    """Everything a test's config points at."""

    dir: Path
    bind: Bind
    pebble: Pebble
    ceph: CephCluster
    wapi: WapiEmulator
    keyring: Path

    def secret_file(self, name: str, value: str) -> Path:
        p = self.dir / name
        p.write_text(value + "\n")
        p.chmod(0o600)
        return p

    def settings(self, provider: str = "infoblox") -> dict[str, Any]:
        return {
            "acme": {
                "directory": self.pebble.directory_url,
                "staging_directory": self.pebble.directory_url + "?staging",
                "email": "ops@example.org",
                "ca_bundle": str(self.pebble.ca_bundle),
                "poll_interval": 0.1,
                "order_timeout": 60.0,
                "retry_backoff": 0.1,
            },
            "ceph": {
                "conf": str(self.ceph.conf),
                "user": "client.rgwtls-issuer",
                "keyring": str(self.keyring),
                "pool": POOL,
                "timeout": 5.0,
            },
            "dns": {
                "provider": provider,
                "resolvers": [f"127.0.0.1:{self.bind.port}"],
                "nameserver_port": self.bind.port,
                "propagation_timeout": 10.0,
                "propagation_interval": 0.1,
                "query_timeout": 1.0,
                "infoblox": {
                    "server": self.wapi.url.removeprefix("https://"),
                    "username": self.wapi.username,
                    "password_file": str(self.secret_file("wapi-password", self.wapi.password)),
                    "ca_bundle": str(self.wapi.ca_bundle),
                    "timeout": 3.0,
                },
                "rfc2136": {
                    "server": "127.0.0.1",
                    "port": self.bind.port,
                    "tsig_key_name": self.bind.tsig_name,
                    "tsig_algorithm": self.bind.tsig_algorithm,
                    "tsig_secret_file": str(self.secret_file("tsig-secret", self.bind.tsig_secret)),
                },
            },
            "certificate": [{"name": ZONE, "domains": list(DOMAINS)}],
        }

    def write_config(self, settings: dict[str, Any], name: str = "rgwtls.toml") -> Path:
        path = self.dir / name
        path.write_text(to_toml(settings))
        tomllib.loads(path.read_text())  # what we wrote must be TOML
        return path


def to_toml(doc: dict[str, Any], prefix: str = "") -> str:
    """Just enough TOML for our configs: tables, arrays of tables, scalars, lists."""

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines: list[str] = []
    tables: list[str] = []
    for k, v in doc.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            tables.append(f"\n[{key}]\n" + to_toml(v, key))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                tables.append(f"\n[[{key}]]\n" + to_toml(item, key))
        else:
            lines.append(f"{k} = {scalar(v)}")
    return "\n".join(lines) + "\n" + "".join(tables)


@pytest.fixture
def stack(
    tmp_path: Path,
    bind: Bind,
    pebble: Pebble,
    ceph: CephCluster,
    wapi: WapiEmulator,
    issuer_keyring: Path,
    pool: str,
) -> Stack:
    return Stack(tmp_path, bind, pebble, ceph, wapi, issuer_keyring)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(config: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> Result:
    """The real command, in its own process, as cron runs it."""
    full_env = {**os.environ, "RGWTLS_CONFIG": str(config), **(env or {})}
    res = subprocess.run(
        [sys.executable, "-m", "rgwtls", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )
    return Result(res.returncode, res.stdout, res.stderr)


@pytest.fixture
def cli() -> Callable[..., Result]:
    return run_cli
