"""The real test stack, started once per session, and helpers to drive the CLI.

Pebble validates against BIND; the WAPI emulator writes into that BIND; the
Ceph cluster holds the pool. Each test gets an emptied pool and a config file
pointing at all of them.
"""

from __future__ import annotations

import fcntl
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from tests import plan


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


@dataclass(frozen=True)
class SiteServices:
    """The worker's servers and users a fleet of hosts points at (tests/ansible_site.py)."""

    bind: Bind
    pebble: Pebble
    ceph: CephCluster
    wapi: WapiEmulator
    issuer_keyring: Path
    deploy_keyring: Path


@pytest.fixture(scope="session")
def site_services(
    bind: Bind, pebble: Pebble, ceph: CephCluster, wapi_server: WapiEmulator, issuer_keyring: Path, deploy_keyring: Path
) -> SiteServices:
    return SiteServices(bind, pebble, ceph, wapi_server, issuer_keyring, deploy_keyring)


@pytest.fixture
def cli() -> Callable[..., Result]:
    return run_cli


# -- Both cores ----------------------------------------------------------------
# The plain `.venv/bin/python -m pytest` (README's command, the one CI runs)
# runs on every core with pytest-xdist: a worker per core, each a process with
# its own session, so its own stack (Pebble, BIND, Ceph...) on its own slice of
# the ports (devsite.ports). `-n 0` or `-p no:xdist` runs in one process, as
# before; `-n N` chooses the number. A hook rather than `-n` in addopts: with
# the plugin left out, an `-n` there would be an unknown option.
#
# So a test runs beside any other test, in another process: everything it
# starts or names is its own. Ports from devsite.ports (never a fixed one),
# files under tmp_path or a tempfile directory (never a fixed path), system
# users and groups named with os.getpid(), waits for the event bounded by the
# operation's own bound (tests/waits.py: the machine is busy). It assumes no
# other test ran before it: session fixtures are per worker, and only a module
# that declares a module-scoped fixture is kept together, on one worker.
# Three workers a core: a test that waits (a restart, a lease that must lapse)
# leaves its core to the others. With two, the units that wait ran together
# at the end of a CI run and the cores were half idle for two and a half
# minutes (measured: 38-59% busy). Each worker starts a whole stack, under
# 0.5 GB: six fit in a few GB.
# RGWTLS_TEST_WORKERS_PER_CORE: fewer beside another run (scripts/tentacle).
WORKERS_PER_CORE, MAX_WORKERS = int(os.environ.get("RGWTLS_TEST_WORKERS_PER_CORE", "3")), 6
_SPREAD = pytest.StashKey[bool]()


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
        return
    o = config.option
    workers = min(len(os.sched_getaffinity(0)) * WORKERS_PER_CORE, MAX_WORKERS)
    # One process where a developer watches it: a debugger, output not captured (-s), or a collection.
    alone = o.usepdb or getattr(o, "trace", False) or o.capture == "no" or o.collectonly
    if o.numprocesses is None and workers > 1 and not alone:
        o.numprocesses = workers
    if o.numprocesses and o.dist == "no":
        o.dist = "load"
        o.loadscopereorder = False  # the workers' collections come in plan's order already
        config.stash[_SPREAD] = True


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if not config.stash.get(_SPREAD, False):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleOrTest(LoadScopeScheduling):  # type: ignore[misc]  # xdist has no types
        """xdist's loadscope with plan.scope_of as the unit, in the workers' order: the longest first."""

        def _split_scope(self, nodeid: str) -> str:
            return plan.scope_of(nodeid, config.rootpath)

    return ModuleOrTest(config, log)


@contextmanager
def once_a_run(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A directory the whole run shares, held alone: what is built once a run (wheels, packages), the first
    worker to come builds in it, and the others, waiting on the lock, find it built."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's directory, common to its workers
    out = shared / name
    out.mkdir(exist_ok=True)
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield out


_durations: dict[str, float] = {}  # the controller's: every test's setup, call and teardown
_cpu: dict[str, float] = {}  # the controller's: their CPU time, as each worker measured it (plan.Cost)
_CPU_AT_START = pytest.StashKey[float]()


def _cpu_now() -> float:
    """This worker's CPU time and its finished children's: the commands a test ran, the servers it stopped."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if plan.asked():
        item.stash[_CPU_AT_START] = _cpu_now()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if call.when == "teardown" and _CPU_AT_START in item.stash:  # to the controller, with the report
        report.user_properties.append(("cpu", _cpu_now() - item.stash[_CPU_AT_START]))
    return report


# -- Tentacle ------------------------------------------------------------------
# The end-to-end tests that touch Ceph carry the `tentacle` marker: the host
# runs them on Pacific with the rest, and `scripts/tentacle pytest -m tentacle`
# runs the same code again in the Tentacle root (Ceph 20.2, its own Python and
# librados). A run asked to (RGWTLS_WRITE_CEPH_VERSIONS=1, as .ci/run sets it)
# in which all of them ran and every test passed writes its release's row of
# docs/ceph-versions.md; any other run leaves the tree as it found it. Under
# xdist only the controller writes it, once, from every worker's reports: the
# workers tell it what they collected and whether -k or -m left any out.
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
_tentacle_collected: set[str] = set()  # the controller's: the tentacle tests its workers collected


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "tentacle: an end-to-end test that touches Ceph, also run on Tentacle by scripts/tentacle"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in TENTACLE_MODULES:
            item.add_marker(pytest.mark.tentacle)
    if hasattr(config, "workerinput"):  # an xdist worker: its units in plan's order, as every other worker's
        items[:] = plan.order(items, config.rootpath, plan.recorded())


def pytest_deselected(items: list[pytest.Item]) -> None:
    if any(item.path.stem in TENTACLE_MODULES for item in items):  # -k or -m left some out: not the whole set
        _tentacle_outcomes["(deselected)"] = "deselected"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration
    for key, value in report.user_properties:
        if key == "cpu":
            _cpu[report.nodeid] = float(value)  # type: ignore[arg-type]
    if "tentacle" not in report.keywords:
        return
    if report.when == "call" or report.outcome != "passed":  # a skip or an error comes from setup or teardown
        _tentacle_outcomes.setdefault(report.nodeid, report.outcome)
        if report.outcome == "failed":
            _tentacle_outcomes[report.nodeid] = "failed"


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist's controller: what a worker that finished collected (its workeroutput, from pytest_sessionfinish)."""
    out = getattr(node, "workeroutput", {})
    _tentacle_collected.update(out.get("tentacle_collected", ()))
    if out.get("tentacle_deselected"):
        _tentacle_outcomes["(deselected)"] = "deselected"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    collected = {item.nodeid for item in session.items if "tentacle" in item.keywords}
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller writes, for the whole run
        out = session.config.workeroutput  # type: ignore[attr-defined]
        out["tentacle_collected"] = sorted(collected)
        out["tentacle_deselected"] = "(deselected)" in _tentacle_outcomes
        return
    _write_durations(session.config, exitstatus)
    collected |= _tentacle_collected
    outcomes = list(_tentacle_outcomes.values())
    if (
        not asked()
        or exitstatus != 0
        or {Path(nodeid.split("::")[0]).stem for nodeid in collected} != TENTACLE_MODULES
        or {"failed", "deselected"} & set(outcomes)
        or len(outcomes) != len(collected)  # --collect-only, or a run cut short
    ):
        return
    record(current_row(outcomes.count("passed"), outcomes.count("skipped")))


def _write_durations(config: pytest.Config, exitstatus: int) -> None:
    """tests/durations.json from a whole, passing parallel run that was asked to (scripts/durations)."""
    if not plan.asked() or exitstatus != 0 or not config.stash.get(_SPREAD, False):
        return
    o = config.option
    if not o.keyword and not o.markexpr and config.args == config.getini("testpaths"):
        plan.write(_durations, _cpu, config.rootpath)


__all__ = ["DOMAINS", "POOL", "ZONE", "Result", "Stack", "run_cli", "to_toml"]
