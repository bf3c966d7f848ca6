"""The Ansible role ansible/roles/rgwtls, run for real against a fleet of two local "hosts".

The converge, idempotence and check mode; where the jobs run; the secrets;
validation; the commands of the cron files run exactly as written, end to end;
systemd hosts (timers, the deploy watcher) and the TLS hosts in front of
radosgw. tests/ansible_site.py builds the fleet, converged once per module and
shared by its tests; tests/test_ansible_issuer.py is the rest of the role's
tests, on a fleet of its own, so that under xdist the two run side by side.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import signal
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rados

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
    ISSUER_USER,
    Site,
    assert_clean,
    converged_site,
    deploy_offset,
    installed_state,
    issue_minute,
    issuer_config,
    owner,
)
from tests.conftest import POOL, ZONE, SiteServices, Stack
from tests.test_deploy_e2e import fingerprint_of_pool
from tests.test_issue_e2e import stored_set

# The issuer and one more gateway: every assertion here about "the other gateways" holds for one as
# for two, and each host costs every play a fork a task (tests/test_ansible_issuer.py keeps a third,
# for the hosts that are neither of its two issuers).
HOSTS = ("rgw1", "rgw2")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, site_services: SiteServices) -> Iterator[Site]:
    with converged_site(tmp_path_factory, site_services, HOSTS) as fleet:
        yield fleet


class CheckRun:
    def __init__(self, play: Play, before: dict[str, Any], after: dict[str, Any]) -> None:
        self.play, self.before, self.after = play, before, after


@pytest.fixture(scope="module")
def check_run(site: Site) -> CheckRun:
    """One `--check --diff -v` run over the converged fleet, and what is installed before and after it."""
    site.fleet.ensure_order(list(HOSTS))
    before = installed_state(site, HOSTS)
    play = site.fleet.play("--check", "--diff", "-v")
    return CheckRun(play, before, installed_state(site, HOSTS))


# -- converge, idempotence, check mode ------------------------------------------------


def test_converge_installs_every_host_and_changes_each(site: Site) -> None:
    assert_clean(site.converge, HOSTS)
    assert all(n > 0 for n in site.converge.changed().values()), site.converge.output
    for name in HOSTS:
        venv = site.host(name).prefix / "opt/rgwtls/venv"
        res = subprocess.run(
            [venv / "bin/python", "-c", "import rados, rgwtls"], capture_output=True, text=True, check=False
        )
        assert res.returncode == 0, res.stderr


def test_second_run_changes_nothing(site: Site) -> None:
    play = site.fleet.play(order=list(HOSTS))
    assert_clean(play, HOSTS)
    assert play.changed() == dict.fromkeys(HOSTS, 0), play.output


def test_check_diff_run_reports_no_change_and_writes_nothing(check_run: CheckRun) -> None:
    assert_clean(check_run.play, HOSTS)
    assert check_run.play.changed() == dict.fromkeys(HOSTS, 0), check_run.play.output
    assert check_run.after == check_run.before


# -- where the jobs run -------------------------------------------------------------


def test_issue_job_is_on_the_first_rgw_only_hourly_as_the_issuer_user_and_deploy_on_every_one_as_root(
    site: Site,
) -> None:
    site.fleet.ensure_order(list(HOSTS))
    jobs = {name: site.host(name).cron_jobs() for name in HOSTS}
    assert sorted(jobs["rgw1"]) == ["rgwtls deploy", "rgwtls issue"]
    assert sorted(jobs["rgw2"]) == ["rgwtls deploy"]
    minutes = {name: jobs[name]["rgwtls deploy"].schedule[0] for name in HOSTS}
    assert minutes == {name: f"{deploy_offset(name)}-59/10" for name in HOSTS}
    assert len(set(minutes.values())) > 1
    for name in HOSTS:
        deploy = jobs[name]["rgwtls deploy"]
        assert deploy.user == "root"
        venv = site.host(name).prefix / "opt/rgwtls/venv"
        assert deploy.command == f"{venv}/bin/rgwtls --config {site.host(name).config_dir}/rgwtls.toml deploy"
    issue = jobs["rgw1"]["rgwtls issue"]
    assert issue.user == ISSUER_USER
    assert issue.schedule == [str(issue_minute("rgw1")), "*", "*", "*", "*"]
    assert issue.command.endswith(f"--config {site.host('rgw1').config_dir}/issuer.toml issue")


def test_limit_without_the_first_rgw_adds_no_issuer(site: Site) -> None:
    # run_once would have picked rgw2, the first host of this play, as the issuer.
    site.fleet.ensure_order(list(HOSTS))
    rgw1 = installed_state(site, ("rgw1",))
    play = site.fleet.play("--limit", "rgw2")
    assert_clean(play, ("rgw2",))
    assert play.changed() == {"rgw2": 0}, play.output
    assert "rgwtls issue" not in site.host("rgw2").cron_jobs()
    assert not (site.host("rgw2").config_dir / "issuer.toml").exists()
    assert installed_state(site, ("rgw1",)) == rgw1


# -- secrets ------------------------------------------------------------------------


def test_secret_files_are_0600_and_only_on_the_hosts_that_use_them(site: Site) -> None:
    site.fleet.ensure_order(list(HOSTS))
    issuer = site.host("rgw1")
    assert (issuer.config_dir / "wapi-password").read_text().strip() == site.stack.wapi.password
    secret_files = [issuer.config_dir / "wapi-password", issuer.keyring_dir / "ceph.client.rgwtls-issuer.keyring"]
    secret_files += [site.host(name).keyring_dir / "ceph.client.rgwtls-deploy.keyring" for name in HOSTS]
    for path in secret_files:
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert sorted(p.name for p in issuer.config_dir.iterdir()) == ["issuer.toml", "rgwtls.toml", "wapi-password"]
    gateway = site.host("rgw2")
    assert sorted(p.name for p in gateway.config_dir.iterdir()) == ["rgwtls.toml"]
    assert sorted(p.name for p in gateway.keyring_dir.iterdir()) == ["ceph.client.rgwtls-deploy.keyring"]
    assert not gateway.issuer_state_dir.exists()


def test_the_issuer_user_owns_its_secrets_keyring_and_state_and_deploy_keeps_root_s(site: Site) -> None:
    site.fleet.ensure_order(list(HOSTS))
    issuer = site.host("rgw1")
    who = pwd.getpwnam(ISSUER_USER)
    assert who.pw_shell == "/usr/sbin/nologin"
    assert who.pw_uid < 1000  # a system user
    mine = (ISSUER_USER, ISSUER_USER, 0o600)
    assert owner(issuer.config_dir / "wapi-password") == mine
    assert owner(issuer.keyring_dir / "ceph.client.rgwtls-issuer.keyring") == mine
    assert owner(issuer.issuer_state_dir) == (ISSUER_USER, ISSUER_USER, 0o700)
    # Readable by the issuer, not writable: root may run issue with it.
    assert owner(issuer.config_dir / "issuer.toml") == ("root", ISSUER_USER, 0o640)
    for name in HOSTS:
        host = site.host(name)
        assert owner(host.keyring_dir / "ceph.client.rgwtls-deploy.keyring") == ("root", "root", 0o600)
        assert owner(host.config_dir / "rgwtls.toml") == ("root", "root", 0o644)
        assert owner(host.prefix / "var/lib/rgwtls") == ("root", "root", 0o700)
    # Each command its own state: the issuer's sets apart from deploy's lock and records.
    doc = issuer_config(site)
    assert doc["deploy"]["state_dir"] == str(issuer.issuer_state_dir)
    assert doc["acme"]["run_as"] == ISSUER_USER


def test_no_secret_appears_in_the_output(site: Site, check_run: CheckRun) -> None:
    # Both ran with --diff -v: the converge wrote every secret, the check run compared each.
    for what, secret in site.secrets().items():
        assert secret not in site.converge.output, what
        assert secret not in check_run.play.output, what


def test_deploy_user_takes_restart_slots_but_cannot_touch_the_account_keys(site: Site) -> None:
    keyring = site.host("rgw2").keyring_dir / "ceph.client.rgwtls-deploy.keyring"
    r = site.stack.ceph.connect("client.rgwtls-deploy", keyring, timeout=5)
    try:
        ioctx = r.open_ioctx(POOL)
        ioctx.set_namespace("acme")
        with pytest.raises(rados.PermissionError):
            ioctx.write_full("account.probe", b"x")
        ioctx.set_namespace("deploy")
        ioctx.write_full("probe", b"x")
        ioctx.remove_object("probe")
        ioctx.close()
    finally:
        r.shutdown()


# -- validation ---------------------------------------------------------------------


def test_bad_variable_is_rejected_by_the_argument_specs(site: Site) -> None:
    play = site.fleet.play("--limit", "rgw1", "-e", '{"rgwtls_deploy_layout": "bundle"}')
    assert play.code != 0
    assert "Validating arguments against arg spec" in play.output
    assert "rgwtls_deploy_layout" in play.output
    assert "bundle" in play.output
    assert play.recap["rgw1"]["changed"] == 0


def test_issuer_without_its_dns_secret_is_refused_before_anything_changes(site: Site) -> None:
    play = site.fleet.play("--limit", "rgw1", "-e", '{"rgwtls_infoblox_password": ""}')
    assert play.code != 0
    assert "Check that the issuer has the secret of rgwtls_dns_provider" in play.output
    assert play.recap["rgw1"]["changed"] == 0
    assert (site.host("rgw1").config_dir / "wapi-password").read_text().strip() == site.stack.wapi.password


def test_systemd_timers_are_refused_where_systemd_does_not_run(site: Site) -> None:
    play = site.fleet.play("--limit", "rgw1", "-e", "rgwtls_scheduler=systemd")
    assert play.code != 0
    assert "rgwtls_scheduler is systemd, but rgw1's service manager is" in play.output
    assert play.recap["rgw1"]["changed"] == 0


# -- end to end ---------------------------------------------------------------------


def test_cron_commands_as_written_issue_and_deploy_one_new_certificate_to_every_gateway(
    site: Site, stack: Stack
) -> None:
    site.fleet.ensure_order(list(HOSTS))
    before = {name: gw.served() for name, gw in site.gateways.items()}
    issue = site.host("rgw1").cron_jobs()["rgwtls issue"]
    assert issue.user == ISSUER_USER
    res = run_job(issue)
    assert res.returncode == 0, res.stderr
    # One NOTICE line for cron to mail (it renewed), no warning about who it runs as or what it cannot read.
    assert [line.split(":")[0] for line in res.stderr.splitlines()] == ["NOTICE"], res.stderr
    for name in HOSTS:
        deploy = site.host(name).cron_jobs()["rgwtls deploy"].command
        res = subprocess.run(["sh", "-c", deploy], capture_output=True, text=True, timeout=120, check=False)
        assert res.returncode == 0, res.stderr
        assert "NOTICE" in res.stderr  # cron mails only when something changed: here it did
    # The issuer's user issued; it may not read what deploy keeps: the gateway's key, the deploy key.
    refused = [site.gateways["rgw1"].pem, site.host("rgw1").keyring_dir / "ceph.client.rgwtls-deploy.keyring"]
    probe = "import sys\nfor p in sys.argv[1:]:\n    try:\n        open(p).close(); print('read', p)\n"
    probe += "    except PermissionError:\n        print('refused', p)\n"
    res = subprocess.run(
        # The system's Python: the test's own is under /root, which the user may not enter.
        ["/usr/bin/python3", "-c", probe, *map(str, refused)],
        user=ISSUER_USER,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.stdout.split("\n")[:-1] == [f"refused {p}" for p in refused], res.stdout + res.stderr
    want = fingerprint_of_pool(stack)
    served = {name: gw.served() for name, gw in site.gateways.items()}
    assert served == dict.fromkeys(HOSTS, want)
    assert all(before[name] != want for name in HOSTS)
    assert all(gw.restarts() == 1 for gw in site.gateways.values())


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


SYSTEMD_HOSTS = ("rgw1", "rgw2")
TIMER_UNITS = ("rgwtls-issue.timer", "rgwtls-deploy.timer")


class SystemdRuns:
    """What the plays on a systemd host did, for the tests that read it: rgw1 switched to systemd timers
    (rgwtls_scheduler, issue 22), rgw2 given the deploy watcher (issue 21), in the same plays."""

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
    """rgw1 and rgw2 as systemd hosts, each play on both: on, again; the watcher run; off, again (--check on rgw2).

    No systemd runs here: a systemctl that keeps the units' state, and hosts whose facts say
    systemd. Each play does what two tests would have done apart, and the tests read its result.
    """
    site.fleet.ensure_order(list(HOSTS))
    systemd = FakeSystemd(tmp_path_factory.mktemp("systemd"), [_units_dir(site, h) for h in SYSTEMD_HOSTS])
    env = systemd.env(site.fleet)
    systemd.cache_service_mgr(site.fleet, ",".join(SYSTEMD_HOSTS))
    runs = SystemdRuns(systemd)
    rgw2 = site.host("rgw2")
    runs.textfile = rgw2.prefix / "var/lib/node-exporter"
    runs.textfile.mkdir(parents=True, exist_ok=True)
    on: dict[str, dict[str, Any]] = {
        "rgw1": {"rgwtls_scheduler": "systemd"},
        "rgw2": {"rgwtls_deploy_watch": True, "rgwtls_deploy_watch_textfile": str(runs.textfile)},
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
            watch_unit = _units_dir(site, "rgw2") / WATCH_UNIT
            runs.settings[WATCH_UNIT] = _unit_settings(watch_unit)
            res = subprocess.run(
                ["systemd-analyze", "verify", str(watch_unit)], capture_output=True, text=True, timeout=60, check=False
            )
            runs.verify = (res.returncode, res.stdout + res.stderr)
            play("again")
            runs.watcher = _run_watcher(runs.settings[WATCH_UNIT]["ExecStart"], runs.textfile, rgw2, systemd.dir)
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
    assert WATCH_UNIT not in runs.unit_files["check"]["rgw2"]
    assert runs.units["check"][WATCH_UNIT] == {"enabled": False, "active": False, "starts": 0}

    assert_clean(runs.plays["on"], SYSTEMD_HOSTS)
    unit = runs.settings[WATCH_UNIT]
    host = site.host("rgw2")
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
    assert runs.cron["on"]["rgw2"] == ["rgwtls deploy"]

    assert_clean(runs.plays["again"], SYSTEMD_HOSTS)
    assert runs.plays["again"].changed() == dict.fromkeys(SYSTEMD_HOSTS, 0), runs.plays["again"].output
    assert runs.units["again"][WATCH_UNIT]["starts"] == 1

    # The command as written, as systemd runs it (root): it deploys, watches, writes its
    # metrics, and stops on SIGTERM with exit status 0.
    code, log = runs.watcher
    assert code == 0, log
    assert "deploy --watch: stopped by SIGTERM" in log

    assert_clean(runs.plays["off"], SYSTEMD_HOSTS)
    assert WATCH_UNIT not in runs.unit_files["off"]["rgw2"]
    assert runs.units["off"][WATCH_UNIT] == {"enabled": False, "active": False, "starts": 1}
    assert runs.cron["off"]["rgw2"] == ["rgwtls deploy"]
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
    play = site.fleet.play("--limit", "rgw2", "-e", '{"rgwtls_deploy_watch": true}')
    assert play.code != 0
    assert "rgwtls_deploy_watch is true, but rgw2's service manager is" in play.output
    assert play.recap["rgw2"]["changed"] == 0


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


# -- last: it leaves rgw2 as the issuer ----------------------------------------------


def test_moving_the_first_rgw_moves_the_issue_job_and_the_issuer_secrets(site: Site) -> None:
    site.fleet.ensure_order(list(HOSTS))
    deploy_configs = {name: (site.host(name).config_dir / "rgwtls.toml").read_bytes() for name in HOSTS}
    play = site.fleet.play(order=["rgw2", "rgw1"])
    assert_clean(play, HOSTS)
    old, new = site.host("rgw1"), site.host("rgw2")
    assert "rgwtls issue" not in old.cron_jobs()
    assert "rgwtls issue" in new.cron_jobs()
    for path in ("issuer.toml", "wapi-password"):
        assert not (old.config_dir / path).exists()
        assert (new.config_dir / path).exists()
    assert not (old.keyring_dir / "ceph.client.rgwtls-issuer.keyring").exists()
    assert (new.keyring_dir / "ceph.client.rgwtls-issuer.keyring").stat().st_mode & 0o777 == 0o600
    # Only the issuer moved: each gateway's deploy configuration is as it was.
    assert {name: (site.host(name).config_dir / "rgwtls.toml").read_bytes() for name in HOSTS} == deploy_configs
