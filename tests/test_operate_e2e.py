"""status, check and metrics, in each state a fleet can be in, through the real stack."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devsite.certmaker import make_ca, make_cert
from devsite.gateway import Gateway
from rgwtls.config import load
from rgwtls.store import CertSet
from tests.conftest import DOMAINS, POOL, ZONE, Stack, run_cli
from tests.test_deploy_e2e import fingerprint_of_pool, issue
from tests.waits import wait_for

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3


def check(gw: Gateway, *args: str) -> tuple[int, str]:
    res = run_cli(gw.config(), "check", *args)
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout + res.stderr
    return res.code, lines[0]


def status_json(gw: Gateway) -> dict[str, Any]:
    res = run_cli(gw.config(), "status", "--json")
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def plant(stack: Stack, gw: Gateway, days_total: float, days_left: float) -> None:
    """A set of the given age in the pool, installed and served, as if deployed."""
    now = dt.datetime.now(dt.UTC)
    ca_key, ca_pem = make_ca()
    not_after = now + dt.timedelta(days=days_left)
    key, cert = make_cert(DOMAINS, not_after - dt.timedelta(days=days_total), not_after, ca_key)
    s = CertSet(
        ZONE,
        7,
        key,
        cert,
        ca_pem,
        DOMAINS,
        (now - dt.timedelta(days=days_total - days_left)).isoformat(),
        "rgw0",
        stack.pebble.directory_url,
    )
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    ioctx.write_full(f"{ZONE}/current", s.to_bytes())
    ioctx.close()
    gw.pem.write_text(key + cert + ca_pem)
    gw.rgw.restart()


def test_fresh_deployment_is_ok_and_status_shows_all_three_sides(stack: Stack, gateway: Gateway) -> None:
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    code, line = check(gateway)
    assert code == OK, line
    assert line.startswith("RGWTLS OK - cog.example.org: served certificate good for 9")
    assert "'cog.example.org days_left'=" in line.split("|")[1]
    table = run_cli(gateway.config(), "status")
    assert table.code == 0, table.stderr
    assert "pool      generation 1" in table.stdout
    assert "deployed" in table.stdout
    assert "served" in table.stdout
    assert table.stdout.count("matches the pool") == 2
    assert "last attempt" in table.stdout


def test_status_json_has_a_stable_schema(stack: Stack, gateway: Gateway) -> None:
    issue(stack)
    issue(stack, "--staging")
    assert run_cli(gateway.config(), "deploy").code == 0
    doc = status_json(gateway)
    assert doc["version"] == 1
    assert doc["error"] is None
    assert doc["activate"].startswith("restart: ")
    assert doc["activations"] == {"restart": 1}
    assert isinstance(doc["host"], str)
    (st,) = doc["certificates"]
    assert st["name"] == ZONE
    facts = {
        "fingerprint": str,
        "serial": str,
        "names": list,
        "not_before": str,
        "not_after": str,
        "days_left": float,
        "lifetime_days": float,
    }
    for side, extra in (
        ("pool", {"generation": int, "issued_at": str, "issued_by": str, "profile": str, "ca": str}),
        ("staging", {"generation": int, "issued_at": str, "issued_by": str, "profile": str, "ca": str}),
        ("deployed", {"where": str, "matches_pool": bool}),
        ("served", {"where": str, "matches_pool": bool}),
    ):
        want = {**facts, **extra}
        assert set(st[side]) == set(want), side
        for key, kind in want.items():
            assert isinstance(st[side][key], kind), (side, key)
    assert st["pool"]["names"] == sorted(DOMAINS)
    assert st["deployed"]["matches_pool"] is True
    assert st["served"]["matches_pool"] is True
    assert set(st["last_issue"]) >= {"at", "host", "ok", "error", "last_success"}
    assert st["served_error"] is None
    assert st["problems"] == []


def test_near_expiry_is_a_warning(stack: Stack, gateway: Gateway) -> None:
    plant(stack, gateway, days_total=90, days_left=15)
    code, line = check(gateway)
    assert code == WARNING, line
    assert "expires in 15.0 days" in line


def test_a_fifth_of_a_45_day_lifetime_is_a_warning_where_fixed_days_would_not_be(
    stack: Stack, gateway: Gateway
) -> None:
    plant(stack, gateway, days_total=45, days_left=8)
    assert check(gateway)[0] == WARNING
    assert check(gateway, "-w", "5", "-c", "2")[0] == OK


def test_expired_is_critical(stack: Stack, gateway: Gateway) -> None:
    plant(stack, gateway, days_total=90, days_left=-1)
    code, line = check(gateway)
    assert code == CRITICAL, line
    assert "EXPIRED" in line


def test_pool_newer_than_deployed_is_ok_within_the_grace_and_critical_after(stack: Stack, gateway: Gateway) -> None:
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    issue(stack, "--force")
    code, line = check(gateway)
    assert code == OK, line
    assert "generation 2 not deployed yet" in line
    code, line = check(gateway, "--grace", "0")
    assert code == CRITICAL, line
    assert "not the pool's generation 2" in line
    st = status_json(gateway)["certificates"][0]
    assert st["deployed"]["matches_pool"] is False
    assert st["served"]["matches_pool"] is False


def serves_other_than(gateway: Gateway, fingerprint: str) -> bool:
    """Whether radosgw serves, and something else than `fingerprint` (it answers nothing while it restarts)."""
    try:
        return gateway.served() != fingerprint
    except OSError:
        return False


def test_served_certificate_differing_from_the_deployed_file_shows(stack: Stack, gateway: Gateway) -> None:
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    # The file is right, but the gateway was restarted onto another one.
    other = gateway.pem.with_name("other.pem")
    from devsite.certmaker import pem_file

    other.write_text(pem_file(DOMAINS))
    gateway.rgw.supervisor(f"restart {other}")
    wait_for(
        "radosgw serving the other certificate",
        lambda: serves_other_than(gateway, fingerprint_of_pool(stack)),
        load(gateway.config()).deploy.restart_timeout,
        why="deploy.restart_timeout, what a restart may take",
    )
    st = status_json(gateway)["certificates"][0]
    assert st["deployed"]["matches_pool"] is True
    assert st["served"]["matches_pool"] is False
    assert check(gateway, "--grace", "0")[0] == CRITICAL


def test_failed_last_issue_attempt_is_critical_on_every_gateway(stack: Stack, gateway: Gateway) -> None:
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    stack.wapi.fail(503)
    failed = run_cli(stack.write_config(stack.settings(), "issuer.toml"), "issue", "--force")
    stack.wapi.fail(None)
    assert failed.code == 1
    code, line = check(gateway)
    assert code == CRITICAL, line
    assert "the last issue attempt" in line
    assert "HTTP 503" in line


def test_stopped_cluster_is_unknown_within_seconds(stack: Stack, gateway: Gateway) -> None:
    gateway.settings["ceph"]["timeout"] = 2.0
    gateway.config()
    with stack.ceph.mon_stopped():
        started = time.monotonic()
        code, line = check(gateway)
        took = time.monotonic() - started
        status = run_cli(gateway.config(), "status")
    assert code == UNKNOWN, line
    assert line.startswith("RGWTLS UNKNOWN - cannot read the pool: cannot connect to the Ceph cluster")
    assert took < 10
    assert status.code == 1
    assert "UNREACHABLE" in status.stdout


# Long enough that Python's start, the served-certificate probe and the lock-free reads of a busy
# machine stay well under a second timeout.
TIMEOUT = 5.0


def two_certificates(gw: Gateway) -> None:
    """A gateway configured for two certificates, both in the pool, with a short ceph.timeout."""
    gw.settings["ceph"]["timeout"] = TIMEOUT
    gw.settings["certificate"] = [
        {"name": ZONE, "domains": list(DOMAINS)},
        {"name": "second", "domains": list(DOMAINS)},
    ]
    gw.config()


def timed(gw: Gateway, *args: str) -> tuple[float, Any]:
    started = time.monotonic()
    res = run_cli(gw.config(), *args)
    return time.monotonic() - started, res


@pytest.mark.parametrize("down", ["mon", "osd"])
def test_a_dead_cluster_is_unknown_within_one_timeout_with_two_certificates(
    stack: Stack, gateway: Gateway, down: str
) -> None:
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    two_certificates(gateway)
    stopped = stack.ceph.mon_stopped() if down == "mon" else stack.ceph.osd_stopped()
    with stopped:
        took_check, checked = timed(gateway, "check")
        took_status, table = timed(gateway, "status")
        took_json, as_json = timed(gateway, "status", "--json")
    assert checked.code == UNKNOWN, checked.stdout
    assert checked.stdout.startswith("RGWTLS UNKNOWN - cannot read the pool:"), checked.stdout
    # One timeout for both certificates, not one each: under two, however busy the machine.
    for took in (took_check, took_status, took_json):
        assert took < 2 * TIMEOUT, (took_check, took_status, took_json)
    # What cannot be read is unknown, never a difference.
    assert table.code == 1
    assert "UNREACHABLE" in table.stdout
    assert "DIFFERS" not in table.stdout, table.stdout
    assert "pool      UNKNOWN" in table.stdout
    assert "pool unknown" in table.stdout  # the served certificate, not compared
    doc = json.loads(as_json.stdout)
    assert doc["error"]
    for st in doc["certificates"]:
        assert st["pool"] is None
        assert "pool" in st["unknown"]
    assert doc["certificates"][0]["served"]["matches_pool"] is None
    print(f"{down} down: check {took_check:.2f}s, status {took_status:.2f}s, status --json {took_json:.2f}s")


def test_missing_config_is_unknown_not_a_traceback(tmp_path: Path) -> None:
    res = run_cli(tmp_path / "none.toml", "check")
    assert res.code == UNKNOWN
    assert res.stdout.startswith("RGWTLS UNKNOWN - config file")
    assert "Traceback" not in res.stderr


# -- metrics ------------------------------------------------------------------------------


def families(path: Path) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(path.read_text())}


def value(fams: dict[str, Any], name: str, **labels: str) -> float:
    for s in fams[name].samples:
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no {name}{labels}")


def test_metrics_files_read_by_a_prometheus_parser(stack: Stack, gateway: Gateway, tmp_path: Path) -> None:
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    res = run_cli(stack.write_config(stack.settings(), "issuer.toml"), "issue", "--textfile", str(textfile))
    assert res.code == 0, res.stderr
    res = run_cli(gateway.config(), "deploy", "--textfile", str(textfile))
    assert res.code == 0, res.stderr
    assert run_cli(gateway.config(), "check", "--textfile", str(textfile)).code == OK
    assert sorted(p.name for p in textfile.iterdir()) == [
        "rgwtls_check.prom",
        "rgwtls_deploy.prom",
        "rgwtls_issue.prom",
    ]
    issued = families(textfile / "rgwtls_issue.prom")
    now = time.time()
    assert value(issued, "rgwtls_last_run_success", command="issue") == 1
    assert value(issued, "rgwtls_certificate_expiry_timestamp_seconds", certificate=ZONE, source="pool") > now
    assert value(issued, "rgwtls_issue_last_success_timestamp_seconds", certificate=ZONE) <= now
    deployed = families(textfile / "rgwtls_deploy.prom")
    for source in ("deployed", "served"):
        assert value(deployed, "rgwtls_certificate_expiry_timestamp_seconds", certificate=ZONE, source=source) > now
    assert value(deployed, "rgwtls_deployed_generation", certificate=ZONE) == 1
    assert value(deployed, "rgwtls_certificate_matches_pool", certificate=ZONE, source="served") == 1
    checked = families(textfile / "rgwtls_check.prom")
    assert value(checked, "rgwtls_check_status") == OK
    # A failure keeps the last success and adds the failure.
    success_at = value(deployed, "rgwtls_last_success_timestamp_seconds", command="deploy")
    gateway.settings["deploy"]["restart_command"] = "false"
    issue(stack, "--force")
    assert run_cli(gateway.config(), "deploy", "--textfile", str(textfile)).code == 1
    after = families(textfile / "rgwtls_deploy.prom")
    assert value(after, "rgwtls_last_run_success", command="deploy") == 0
    assert value(after, "rgwtls_last_success_timestamp_seconds", command="deploy") == success_at
    assert value(after, "rgwtls_last_failure_timestamp_seconds", command="deploy") >= success_at
    assert not [p for p in textfile.iterdir() if not p.name.endswith(".prom")]


@pytest.mark.parametrize("command", ["issue", "deploy", "check", "status"])
def test_every_command_answers_help(command: str, tmp_path: Path) -> None:
    assert run_cli(tmp_path / "none.toml", command, "--help").code == 0


def test_syslog_option_logs_without_changing_what_cron_mails(stack: Stack, gateway: Gateway) -> None:
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    res = run_cli(gateway.config(), "--syslog", "deploy")
    assert res.code == 0, res.stderr
    # Quiet on stderr still; where /dev/log is missing, one warning says so.
    assert res.stderr in ("",) or res.stderr.startswith("WARNING: syslog is not available")


def test_staging_issue_metrics_never_overwrite_the_production_issuers(stack: Stack, tmp_path: Path) -> None:
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    config = stack.write_config(stack.settings(), "issuer.toml")
    assert run_cli(config, "issue", "--textfile", str(textfile)).code == 0
    production = (textfile / "rgwtls_issue.prom").read_text()
    assert run_cli(config, "issue", "--staging", "--textfile", str(textfile)).code == 0
    assert (textfile / "rgwtls_issue.prom").read_text() == production
    staging = families(textfile / "rgwtls_issue-staging.prom")
    assert staging["rgwtls_last_run_success"].samples[0].labels == {"command": "issue-staging"}
    assert "rgwtls_certificate_generation" not in staging
