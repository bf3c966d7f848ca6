"""The Ansible role ansible/roles/rgwtls, run for real against a fleet of three local "hosts".

The converge, idempotence and check mode; where the jobs run; the secrets;
validation; and the commands of the cron files run as written, end to end.
tests/ansible_site.py builds the fleet (one converge per module, shared by its
tests); test_ansible_acme, _issuers and _systemd are the rest of the role's
tests, each on a fleet of its own, so that under xdist they run side by side.
"""

from __future__ import annotations

import pwd
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import rados

from tests.ansible_helpers import (
    Play,
    run_job,
)
from tests.ansible_site import (
    HOSTS,
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
from tests.conftest import POOL, SiteServices, Stack
from tests.test_deploy_e2e import fingerprint_of_pool


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, site_services: SiteServices) -> Iterator[Site]:
    with converged_site(tmp_path_factory, site_services) as fleet:
        yield fleet


class CheckRun:
    def __init__(self, play: Play, before: dict[str, Any], after: dict[str, Any]) -> None:
        self.play, self.before, self.after = play, before, after


@pytest.fixture(scope="module")
def check_run(site: Site) -> CheckRun:
    """One `--check --diff -v` run over the converged fleet, and what is installed before and after it."""
    site.fleet.ensure_order(list(HOSTS))
    before = installed_state(site)
    play = site.fleet.play("--check", "--diff", "-v")
    return CheckRun(play, before, installed_state(site))


# -- converge, idempotence, check mode ------------------------------------------------


def test_converge_installs_every_host_and_changes_each(site: Site) -> None:
    assert_clean(site.converge)
    assert all(n > 0 for n in site.converge.changed().values()), site.converge.output
    for name in HOSTS:
        venv = site.host(name).prefix / "opt/rgwtls/venv"
        res = subprocess.run(
            [venv / "bin/python", "-c", "import rados, rgwtls"], capture_output=True, text=True, check=False
        )
        assert res.returncode == 0, res.stderr


def test_second_run_changes_nothing(site: Site) -> None:
    play = site.fleet.play(order=list(HOSTS))
    assert_clean(play)
    assert play.changed() == dict.fromkeys(HOSTS, 0), play.output


def test_check_diff_run_reports_no_change_and_writes_nothing(check_run: CheckRun) -> None:
    assert_clean(check_run.play)
    assert check_run.play.changed() == dict.fromkeys(HOSTS, 0), check_run.play.output
    assert check_run.after == check_run.before


# -- where the jobs run -------------------------------------------------------------


def test_issue_job_is_on_the_first_rgw_only_hourly_as_the_issuer_user_and_deploy_on_every_one_as_root(
    site: Site,
) -> None:
    site.fleet.ensure_order(list(HOSTS))
    jobs = {name: site.host(name).cron_jobs() for name in HOSTS}
    assert sorted(jobs["rgw1"]) == ["rgwtls deploy", "rgwtls issue"]
    assert sorted(jobs["rgw2"]) == sorted(jobs["rgw3"]) == ["rgwtls deploy"]
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
    play = site.fleet.play("--limit", "rgw2,rgw3")
    assert_clean(play, ("rgw2", "rgw3"))
    assert play.changed() == {"rgw2": 0, "rgw3": 0}, play.output
    for name in ("rgw2", "rgw3"):
        assert "rgwtls issue" not in site.host(name).cron_jobs()
        assert not (site.host(name).config_dir / "issuer.toml").exists()
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
    for name in ("rgw2", "rgw3"):
        host = site.host(name)
        assert sorted(p.name for p in host.config_dir.iterdir()) == ["rgwtls.toml"]
        assert sorted(p.name for p in host.keyring_dir.iterdir()) == ["ceph.client.rgwtls-deploy.keyring"]
        assert not host.issuer_state_dir.exists()


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


# -- last: it leaves rgw2 as the issuer ----------------------------------------------


def test_moving_the_first_rgw_moves_the_issue_job_and_the_issuer_secrets(site: Site) -> None:
    site.fleet.ensure_order(list(HOSTS))
    play = site.fleet.play(order=["rgw2", "rgw1", "rgw3"])
    assert_clean(play)
    old, new = site.host("rgw1"), site.host("rgw2")
    assert "rgwtls issue" not in old.cron_jobs()
    assert "rgwtls issue" in new.cron_jobs()
    for path in ("issuer.toml", "wapi-password"):
        assert not (old.config_dir / path).exists()
        assert (new.config_dir / path).exists()
    assert not (old.keyring_dir / "ceph.client.rgwtls-issuer.keyring").exists()
    assert (new.keyring_dir / "ceph.client.rgwtls-issuer.keyring").stat().st_mode & 0o777 == 0o600
    assert play.changed()["rgw3"] == 0, play.output
