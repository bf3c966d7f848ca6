"""Crash-only deploy: killed at each step boundary, the next cron run converges.

The step boundaries are found from outside, as a site's faults would find
them: the restart command itself signals the deploy that runs it (before it
restarts, while radosgw restarts, or while deploy checks the handshake), once.
No switch in the product injects a fault.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devsite.certmaker import pem_file
from devsite.gateway import Gateway
from tests.conftest import Result, Stack, run_cli
from tests.test_deploy_e2e import fingerprint_of_pool, issue
from tests.test_issue_e2e import assert_one_error_line
from tests.waits import deploy_bound, wait_for

# What the restart command does on its first call; `$TARGET` is the deploy
# (SIGKILL) or its whole process group (SIGTERM, as systemctl stop and
# timeout(1) send it), `$RESTART` the real restart.
FAULTS = {
    "before the restart": "kill -$SIG $TARGET; sleep 10; exit 0",
    "during the restart": "$RESTART >/dev/null & sleep 0.3; kill -$SIG $TARGET; wait; exit 0",
    "during the check, serving a wrong certificate": "(sleep 1; kill -$SIG $TARGET) & exec $RESTART $WRONG",
}


def _layout(layout: str, gateway: Gateway, tmp_path: Path) -> None:
    """Point the gateway and its deploy config at this layout, serving a certificate from elsewhere."""
    if layout == "split":
        gateway.use_split(tmp_path / "rgw.key", tmp_path / "rgw.crt")
    elif layout == "config-key":
        gateway.use_config_key(f"rgw/cert/rgw.crash-{tmp_path.name[-12:]}")


def _faulty_restart(gateway: Gateway, tmp_path: Path, fault: str, sig: str) -> None:
    """A restart command that does `fault` on its first call and restarts normally after."""
    wrong = tmp_path / "wrong.pem"
    wrong.write_text(pem_file(("other.example.org",)))
    flag = tmp_path / "fault-done"
    target = '"$PPID"' if sig == "KILL" else '"-$PPID"'
    script = tmp_path / "restart.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"RESTART='{gateway.rgw.restart_command}'\n"
        f"WRONG={wrong}\nSIG={sig}\nTARGET={target}\n"
        f"if [ ! -e {flag} ]; then touch {flag}; {FAULTS[fault]}; fi\n"
        "exec $RESTART\n"
    )
    script.chmod(0o755)
    gateway.settings["deploy"].update(restart_command=str(script), verify_timeout=15.0, restart_wait=10.0)


def _deploy_in_own_group(config: Path) -> subprocess.Popen[str]:
    """`rgwtls deploy` as cron starts it: the leader of its own process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "rgwtls", "deploy"],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RGWTLS_CONFIG": str(config)},
        start_new_session=True,
    )


def _wait(proc: subprocess.Popen[str]) -> Result:
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return Result(proc.returncode, "", err)


def _stale_temporaries(*dirs: Path) -> list[Path]:
    return [p for d in dirs for p in d.glob(".*.rgwtls-*")]


@pytest.mark.parametrize("layout", ["pem", "split", "config-key"])
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("sig", ["KILL", "TERM"])
def test_deploy_interrupted_at_a_step_converges_on_the_next_run(
    stack: Stack, gateway: Gateway, tmp_path: Path, layout: str, fault: str, sig: str
) -> None:
    _layout(layout, gateway, tmp_path)
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    before = gateway.served()
    issue(stack, "--force")
    want = fingerprint_of_pool(stack)
    _faulty_restart(gateway, tmp_path, fault, sig)
    config = gateway.config()

    killed = _wait(_deploy_in_own_group(config))
    if sig == "KILL":
        assert killed.code == -signal.SIGKILL, killed.stderr
    else:
        # SIGTERM is a failure like any other: rolled back, one line.
        assert_one_error_line(killed, "interrupted by SIGTERM", "restored the previous certificate")
        assert gateway.served() == before

    # The next cron run converges at once: no lock or slot of the dead run in its way.
    started = time.monotonic()
    again = run_cli(config, "deploy")
    assert again.code == 0, again.stderr
    assert time.monotonic() - started < 20
    assert gateway.served() == want
    assert not _stale_temporaries(tmp_path, gateway.pem.parent)
    # And then it is done: quiet, no restart.
    restarts = gateway.restarts()
    done = run_cli(config, "deploy")
    assert (done.code, done.stderr) == (0, "")
    assert gateway.restarts() == restarts


@pytest.mark.parametrize("sig", ["INT", "HUP"])
def test_deploy_interrupted_by_ctrl_c_or_hangup_rolls_back_in_one_line(
    stack: Stack, gateway: Gateway, tmp_path: Path, sig: str
) -> None:
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    before = gateway.served()
    issue(stack, "--force")
    _faulty_restart(gateway, tmp_path, "before the restart", sig)
    res = _wait(_deploy_in_own_group(gateway.config()))
    assert_one_error_line(res, f"interrupted by SIG{sig}", "restored the previous certificate")
    assert gateway.served() == before
    assert run_cli(gateway.config(), "deploy").code == 0
    assert gateway.served() == fingerprint_of_pool(stack)


def test_gateway_restarted_onto_another_certificate_is_brought_back(stack: Stack, gateway: Gateway) -> None:
    """Observed state decides: the file is right, but radosgw was restarted onto something else."""
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    other = gateway.pem.with_name("other.pem")
    other.write_text(pem_file(("other.example.org",)))
    gateway.rgw.supervisor(f"restart {other}")
    res = run_cli(gateway.config(), "deploy")
    assert res.code == 0, res.stderr
    assert "is installed but" in res.stderr
    assert gateway.served() == fingerprint_of_pool(stack)


def test_two_deploys_at_once_on_one_host_restart_radosgw_once(stack: Stack, gateway: Gateway, tmp_path: Path) -> None:
    issue(stack)
    slow = tmp_path / "slow-restart.sh"
    restarting = tmp_path / "restarting"
    slow.write_text(f"#!/bin/sh\ntouch {restarting}\nsleep 2\nexec {gateway.rgw.restart_command}\n")
    slow.chmod(0o755)
    gateway.settings["deploy"]["restart_command"] = str(slow)
    config = gateway.config()
    first = _deploy_in_own_group(config)
    # The second starts while the first restarts radosgw (it holds the host's lock).
    wait_for("the first deploy's restart", restarting.exists, deploy_bound(config), first, why="deploy's bound")
    second = run_cli(config, "-v", "deploy")
    assert second.code == 0, second.stderr
    assert _wait(first).code == 0
    assert gateway.restarts() == 1
    assert gateway.served() == fingerprint_of_pool(stack)
