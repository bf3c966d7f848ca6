"""The real test stack, started once per session, and helpers to drive the CLI.

Pebble validates against BIND; the WAPI emulator writes into that BIND; the
Ceph cluster holds the pool. Each test gets an emptied pool and a config file
pointing at all of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import rados

from devsite.bind import Bind, bind_server
from devsite.ceph import CephCluster, ceph_cluster
from devsite.gateway import Gateway
from devsite.pebble import ONLY_VIA_PROXY, Pebble, pebble_server
from devsite.proxy import Tinyproxy, tinyproxy
from devsite.site import DEPLOY_CAPS, DOMAINS, ISSUER_CAPS, POOL, ZONE, Stack, to_toml
from devsite.tlsca import TestCA
from devsite.uddi import UddiEmulator, uddi_emulator
from devsite.versions import asked, current_row, record
from devsite.wapi import WapiEmulator, wapi_emulator


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


@pytest.fixture(scope="session")
def uddi_server(stack_dir: Path, bind: Bind) -> Iterator[UddiEmulator]:
    with uddi_emulator(stack_dir / "uddi", bind) as u:
        yield u


@pytest.fixture
def uddi(uddi_server: UddiEmulator) -> Iterator[UddiEmulator]:
    """The Universal DDI emulator, healthy and empty at the start of each test and after it."""
    uddi_server.reset()
    yield uddi_server
    uddi_server.reset()


@pytest.fixture
def uddi_stack(stack: Stack, uddi: UddiEmulator) -> Stack:
    """The stack with the Universal DDI emulator in its config (dns.uddi)."""
    stack.uddi = uddi
    return stack


@pytest.fixture(scope="session")
def deploy_keyring(stack_dir: Path, ceph: CephCluster) -> Path:
    return ceph.create_user("client.rgwtls-deploy", DEPLOY_CAPS)


@pytest.fixture
def gateway(stack: Stack, deploy_keyring: Path, tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(stack, deploy_keyring, tmp_path / "rgw")
    yield gw
    gw.stop()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    """This test's own tinyproxy, wanting user `rgwtls` and a password; it alone resolves ONLY_VIA_PROXY."""
    with tinyproxy(
        tmp_path / "proxy", user="rgwtls", password="proxy-pw-4f1c9e", hosts={ONLY_VIA_PROXY: "127.0.0.1"}
    ) as p:
        yield p


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


# -- Tentacle ------------------------------------------------------------------
# The end-to-end tests that touch Ceph carry the `tentacle` marker: the host
# runs them on Pacific with the rest, and `scripts/tentacle pytest -m tentacle`
# runs the same code again in the Tentacle root (Ceph 20.2, its own Python and
# librados). A run asked to (RGWTLS_WRITE_CEPH_VERSIONS=1, as .ci/run sets it)
# in which all of them ran and every test passed writes its release's row of
# docs/ceph-versions.md; any other run leaves the tree as it found it.
TENTACLE_MODULES = frozenset(
    {
        "test_stack_ceph",
        "test_deploy_e2e",
        "test_deploy_crash_e2e",
        "test_issue_e2e",
        "test_operate_e2e",
        # The RADOS operations the fences are made of (cls_lock assert_locked, omap_cmp), and librados' errors.
        "test_fence",
        "test_deploy_slot",
        "test_keyring_e2e",
        # "self" activation against a radosgw without ssl_reload: Tentacle 20.2 has none either.
        "test_self_reload_e2e",
    }
)
_tentacle_outcomes: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "tentacle: an end-to-end test that touches Ceph, also run on Tentacle by scripts/tentacle"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in TENTACLE_MODULES:
            item.add_marker(pytest.mark.tentacle)


def pytest_deselected(items: list[pytest.Item]) -> None:
    if any(item.path.stem in TENTACLE_MODULES for item in items):  # -k or -m left some out: not the whole set
        _tentacle_outcomes["(deselected)"] = "deselected"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tentacle" not in report.keywords:
        return
    if report.when == "call" or report.outcome != "passed":  # a skip or an error comes from setup or teardown
        _tentacle_outcomes.setdefault(report.nodeid, report.outcome)
        if report.outcome == "failed":
            _tentacle_outcomes[report.nodeid] = "failed"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    items = [item for item in session.items if "tentacle" in item.keywords]
    outcomes = list(_tentacle_outcomes.values())
    if (
        not asked()
        or exitstatus != 0
        or {item.path.stem for item in items} != TENTACLE_MODULES
        or {"failed", "deselected"} & set(outcomes)
        or len(outcomes) != len(items)  # --collect-only, or a run cut short
    ):
        return
    record(current_row(outcomes.count("passed"), outcomes.count("skipped")))


__all__ = ["DOMAINS", "POOL", "ZONE", "Result", "Stack", "run_cli", "to_toml"]
