"""The Ansible role on systemd hosts (timers, the deploy watcher) and on the TLS hosts in front of radosgw.

Run for real on a fleet of its own (tests/ansible_site.py); no systemd runs
here: a systemctl that keeps the units' state, and hosts whose facts say systemd.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devsite.haproxy import HAProxy
from rgwtls.config import load
from rgwtls.probe import served_fingerprint
from tests import waits
from tests.ansible_helpers import (
    FakeSystemd,
    Host,
    Play,
    run_job,
)
from tests.ansible_site import (
    HOSTS,
    ISSUER_USER,
    Site,
    assert_clean,
    converged_site,
)
from tests.conftest import ZONE, SiteServices, Stack
from tests.test_deploy_e2e import fingerprint_of_pool
from tests.test_issue_e2e import stored_set


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, site_services: SiteServices) -> Iterator[Site]:
    with converged_site(tmp_path_factory, site_services) as fleet:
        yield fleet


# -- the deploy watcher (issue 21) and the TLS hosts (issue 20) ------------------------

WATCH_UNIT = "rgwtls-deploy-watch.service"


def _unit_settings(path: Path) -> dict[str, str]:
    """A unit file's KEY=VALUE lines (each key once in the role's units)."""
    lines = [line for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def _wait_for_line(log: Path, needles: tuple[str, ...], proc: subprocess.Popen[bytes], config: Path) -> str:
    """Until the watcher says one of `needles`, within a deploy's bound; at once if it ends first."""
    said = lambda: any(n in log.read_text() for n in needles)  # noqa: E731
    waits.wait_for(repr(needles), said, waits.deploy_bound(config), proc, log.read_text, "a deploy's bound")
    return log.read_text()


SYSTEMD_HOSTS = ("rgw1", "rgw3")
TIMER_UNITS = ("rgwtls-issue.timer", "rgwtls-deploy.timer")


class SystemdRuns:
    """What the plays on a systemd host did, for the tests that read it: rgw1 switched to systemd timers
    (rgwtls_scheduler, issue 22), rgw3 given the deploy watcher (issue 21), in the same plays."""

    def __init__(self, systemd: FakeSystemd) -> None:
        self.systemd = systemd
        self.plays: dict[str, Play] = {}
        self.units: dict[str, dict[str, dict[str, Any]]] = {}  # after each play: each unit's state
        self.settings: dict[str, dict[str, str]] = {}  # the unit files, as the "on" play wrote them
        self.verify = (0, "")  # systemd-analyze verify of the watcher's unit
        self.cron: dict[str, dict[str, list[str]]] = {}  # after each play: each host's cron jobs
        self.unit_files: dict[str, dict[str, list[str]]] = {}  # after each play: the unit files on each host
        self.watcher = (0, "")  # the watcher's command as written: its exit status and its log
        self.textfile = Path()

    def record(self, name: str, play: Play, site: Site) -> None:
        self.plays[name] = play
        self.units[name] = {u: self.systemd.unit(u) for u in (*TIMER_UNITS, WATCH_UNIT)}
        self.cron[name] = {h: sorted(site.host(h).cron_jobs()) for h in SYSTEMD_HOSTS}
        self.unit_files[name] = {h: sorted(p.name for p in _units_dir(site, h).glob("*")) for h in SYSTEMD_HOSTS}


def _units_dir(site: Site, name: str) -> Path:
    return site.host(name).prefix / "etc/systemd/system"


def _with_vars(site: Site, host_vars: dict[str, dict[str, Any]]) -> None:
    """These variables on these hosts of the inventory (none: the group's alone again)."""
    for name in SYSTEMD_HOSTS:
        host = site.host(name)
        for key in ("rgwtls_scheduler", "rgwtls_deploy_watch", "rgwtls_deploy_watch_textfile"):
            host.vars.pop(key, None)
        host.vars.update(host_vars.get(name, {}))
    site.fleet.write_inventory(site.fleet.order)


@pytest.fixture(scope="module")
def systemd_runs(site: Site, tmp_path_factory: pytest.TempPathFactory) -> SystemdRuns:
    """rgw1 and rgw3 as systemd hosts, each play on both: on, again; the watcher run; off, again (--check on rgw3).

    No systemd runs here: a systemctl that keeps the units' state, and hosts whose facts say
    systemd. Each play does what two tests would have done apart, and the tests read its result.
    """
    site.fleet.ensure_order(list(HOSTS))
    systemd = FakeSystemd(tmp_path_factory.mktemp("systemd"), [_units_dir(site, h) for h in SYSTEMD_HOSTS])
    env = systemd.env(site.fleet)
    systemd.cache_service_mgr(site.fleet, ",".join(SYSTEMD_HOSTS))
    runs = SystemdRuns(systemd)
    rgw3 = site.host("rgw3")
    runs.textfile = rgw3.prefix / "var/lib/node-exporter"
    runs.textfile.mkdir(parents=True, exist_ok=True)
    on: dict[str, dict[str, Any]] = {
        "rgw1": {"rgwtls_scheduler": "systemd"},
        "rgw3": {"rgwtls_deploy_watch": True, "rgwtls_deploy_watch_textfile": str(runs.textfile)},
    }

    def play(name: str, *args: str, hosts: tuple[str, ...] = SYSTEMD_HOSTS) -> Play:
        result = site.fleet.play(*args, "--limit", ",".join(hosts), env=env)
        runs.record(name, result, site)
        return result

    try:
        _with_vars(site, on)
        # Before the first "on": --check where neither the timers nor the watcher are written yet.
        play("check", "--check")
        if play("on").code == 0:
            for unit in ("rgwtls-issue.service", "rgwtls-deploy.service"):
                runs.settings[unit] = _unit_settings(_units_dir(site, "rgw1") / unit)
            watch_unit = _units_dir(site, "rgw3") / WATCH_UNIT
            runs.settings[WATCH_UNIT] = _unit_settings(watch_unit)
            res = subprocess.run(
                ["systemd-analyze", "verify", str(watch_unit)], capture_output=True, text=True, timeout=60, check=False
            )
            runs.verify = (res.returncode, res.stdout + res.stderr)
            play("again")
            runs.watcher = _run_watcher(runs.settings[WATCH_UNIT]["ExecStart"], runs.textfile, rgw3, systemd.dir)
    finally:
        # Back to cron and no watcher, as the other tests of this module expect it.
        _with_vars(site, {})
        play("off")
        play("off again")
    return runs


def _run_watcher(exec_start: str, textfile: Path, host: Host, workdir: Path) -> tuple[int, str]:
    """The watcher's command as written, as systemd runs it (root): until it watched and wrote its metrics."""
    log = workdir / "watch.log"
    config = host.config_dir / "rgwtls.toml"
    with log.open("w") as out:
        proc = subprocess.Popen(shlex.split(exec_start), stdout=out, stderr=out, start_new_session=True)
    try:
        _wait_for_line(log, ("watching pool",), proc, config)
        _wait_for_line(log, ("nothing to do", "and it serves it", "ERROR:", "WARNING:"), proc, config)
        metrics = textfile / "rgwtls_deploy.prom"
        waits.wait_for("its metrics", metrics.exists, waits.deploy_bound(config), proc, log.read_text)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(60)
    return code, log.read_text()


def test_the_deploy_watcher_is_a_started_enabled_unit_beside_the_cron_job_and_goes_when_turned_off(
    site: Site, systemd_runs: SystemdRuns
) -> None:
    runs = systemd_runs
    # --check says what would change, and neither writes the unit nor asks systemd to start it.
    assert_clean(runs.plays["check"], SYSTEMD_HOSTS)
    assert WATCH_UNIT not in runs.unit_files["check"]["rgw3"]
    assert runs.units["check"][WATCH_UNIT] == {"enabled": False, "active": False, "starts": 0}

    assert_clean(runs.plays["on"], SYSTEMD_HOSTS)
    unit = runs.settings[WATCH_UNIT]
    host = site.host("rgw3")
    venv = host.prefix / "opt/rgwtls/venv"
    config = host.config_dir / "rgwtls.toml"
    assert unit["ExecStart"] == f"{venv}/bin/rgwtls --config {config} -v deploy --watch --textfile {runs.textfile}"
    assert (unit["Type"], unit["Restart"], unit["RestartSec"]) == ("exec", "always", "5")
    assert (unit["KillSignal"], unit["KillMode"]) == ("SIGTERM", "mixed")
    # restart_timeout 120 + 2 x verify_timeout (20 here) + 60: a rollback's restart and check.
    assert unit["TimeoutStopSec"] == "220"
    assert "User" not in unit  # root, as the deploy job
    assert unit["WantedBy"] == "multi-user.target"
    # systemd's own parser finds nothing to say about it.
    assert runs.verify == (0, ""), runs.verify[1]
    assert runs.units["on"][WATCH_UNIT] == {"enabled": True, "active": True, "starts": 1}
    # The deploy job stays: cron is the floor of correctness, the watcher only makes it faster.
    assert runs.cron["on"]["rgw3"] == ["rgwtls deploy"]

    assert_clean(runs.plays["again"], SYSTEMD_HOSTS)
    assert runs.plays["again"].changed() == dict.fromkeys(SYSTEMD_HOSTS, 0), runs.plays["again"].output
    assert runs.units["again"][WATCH_UNIT]["starts"] == 1

    # The command as written, as systemd runs it (root): it deploys, watches, writes its
    # metrics, and stops on SIGTERM with exit status 0.
    code, log = runs.watcher
    assert code == 0, log
    assert "deploy --watch: stopped by SIGTERM" in log

    assert_clean(runs.plays["off"], SYSTEMD_HOSTS)
    assert WATCH_UNIT not in runs.unit_files["off"]["rgw3"]
    assert runs.units["off"][WATCH_UNIT] == {"enabled": False, "active": False, "starts": 1}
    assert runs.cron["off"]["rgw3"] == ["rgwtls deploy"]
    assert_clean(runs.plays["off again"], SYSTEMD_HOSTS)
    assert runs.plays["off again"].changed() == dict.fromkeys(SYSTEMD_HOSTS, 0), runs.plays["off again"].output


def test_systemd_timers_run_the_issuer_as_its_own_user_and_deploy_as_root_instead_of_cron(
    site: Site, systemd_runs: SystemdRuns
) -> None:
    """rgwtls_scheduler: systemd on the issuer: the same two jobs, the issuer's unit as its system user (issue 22)."""
    runs = systemd_runs
    host = site.host("rgw1")
    # --check on a host switching to timers says what would change, and fails nothing: the
    # timers' units are not there yet for systemd to find, so it is not asked to start them.
    assert_clean(runs.plays["check"], SYSTEMD_HOSTS)
    assert "rgwtls-deploy.timer" in runs.plays["check"].output
    assert not set(TIMER_UNITS) & set(runs.unit_files["check"]["rgw1"])
    for timer in TIMER_UNITS:
        assert runs.units["check"][timer] == {"enabled": False, "active": False, "starts": 0}, timer
    assert_clean(runs.plays["on"], SYSTEMD_HOSTS)
    issue, deploy = runs.settings["rgwtls-issue.service"], runs.settings["rgwtls-deploy.service"]
    assert issue["User"] == ISSUER_USER
    assert issue["ExecStart"].endswith(f"--config {host.config_dir}/issuer.toml issue")
    assert "User" not in deploy  # root: it writes the gateway's key and restarts radosgw
    assert deploy["ExecStart"].endswith(f"--config {host.config_dir}/rgwtls.toml deploy")
    for timer in TIMER_UNITS:
        assert (runs.units["on"][timer]["enabled"], runs.units["on"][timer]["active"]) == (True, True), timer
    assert runs.cron["on"]["rgw1"] == []  # the timers replace the cron entries, never both
    assert runs.plays["again"].changed() == dict.fromkeys(SYSTEMD_HOSTS, 0), runs.plays["again"].output
    # Back to cron.
    assert_clean(runs.plays["off"], SYSTEMD_HOSTS)
    assert runs.cron["off"]["rgw1"] == ["rgwtls deploy", "rgwtls issue"]
    assert "rgwtls-issue.timer" not in runs.unit_files["off"]["rgw1"]


def test_the_deploy_watcher_is_refused_where_systemd_does_not_run(site: Site) -> None:
    play = site.fleet.play("--limit", "rgw3", "-e", '{"rgwtls_deploy_watch": true}')
    assert play.code != 0
    assert "rgwtls_deploy_watch is true, but rgw3's service manager is" in play.output
    assert play.recap["rgw3"]["changed"] == 0


def test_a_tls_host_gets_haproxy_s_deploy_config_and_job_and_nothing_of_the_issuer_and_its_job_swaps_haproxy(
    site: Site, stack: Stack
) -> None:
    site.fleet.ensure_order(list(HOSTS))
    gw = site.gateways["rgw1"]
    hx = HAProxy(site.fleet.workdir / "lb1" / "haproxy", gw.rgw.port).start()
    lb = Host(
        "lb1",
        site.fleet.workdir / "lb1",
        {
            "rgwtls_tls_deploy_path": str(hx.pem),
            "rgwtls_tls_haproxy_socket": str(hx.admin_socket),
            "rgwtls_tls_verify_endpoint": f"127.0.0.1:{hx.port}",
        },
    )
    # The gateways' settings, none of the issuer's secrets: these hosts never see them.
    shared = json.loads((site.fleet.inventory / "group_vars/rgws/main.yml").read_text())
    shared = {k: v for k, v in shared.items() if "vault" not in str(v)}
    site.fleet.add_tls_host(lb, shared)
    try:
        play = site.fleet.play("--limit", "lb1")
        assert_clean(play, ("lb1",))
        assert play.changed()["lb1"] > 0
        doc = tomllib.loads((lb.config_dir / "rgwtls.toml").read_text())
        assert doc["deploy"]["activate"] == "haproxy"
        assert doc["deploy"]["haproxy_socket"] == str(hx.admin_socket)
        assert doc["deploy"]["path"] == str(hx.pem)
        assert doc["deploy"]["verify_endpoint"] == f"127.0.0.1:{hx.port}"
        assert doc["deploy"]["layout"] == "pem"
        assert not {"restart_command", "key_path", "cert_path", "config_key"} & set(doc["deploy"])
        assert doc["ceph"]["user"] == "client.rgwtls-deploy"
        assert load(lb.config_dir / "rgwtls.toml").deploy.activate == "haproxy"
        # The deploy job, as on a gateway; nothing of the issuer: no job, config, secret, keyring or state.
        jobs = lb.cron_jobs()
        assert sorted(jobs) == ["rgwtls deploy"]
        assert jobs["rgwtls deploy"].user == "root"
        assert sorted(p.name for p in lb.config_dir.iterdir()) == ["rgwtls.toml"]
        assert sorted(p.name for p in lb.keyring_dir.iterdir()) == ["ceph.client.rgwtls-deploy.keyring"]
        assert not lb.issuer_state_dir.exists()

        again = site.fleet.play("--limit", "lb1")
        assert_clean(again, ("lb1",))
        assert again.changed() == {"lb1": 0}, again.output

        # The job as written swaps HAProxy's certificate in memory: same process, radosgw not restarted.
        if stored_set(stack) is None:
            assert run_job(site.host("rgw1").cron_jobs()["rgwtls issue"]).returncode == 0
        pid, restarts = hx.pid, gw.restarts()
        res = run_job(jobs["rgwtls deploy"])
        assert res.returncode == 0, res.stderr
        assert served_fingerprint(f"127.0.0.1:{hx.port}", f"anybucket.{ZONE}", 5) == fingerprint_of_pool(stack)
        assert (hx.pid, gw.restarts()) == (pid, restarts)
    finally:
        site.fleet.remove_tls_host("lb1")
        hx.stop()
