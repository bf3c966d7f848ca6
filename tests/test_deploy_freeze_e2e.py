"""A deploy frozen (SIGSTOP) after its restart slot's fence, past the slot's hold, while another gateway takes the
only slot: it restarts nothing, wherever the freeze was, and says so in one line.

The real `rgwtls deploy` stops itself at the point (tests/freeze.py); the
other gateway takes restart slot 0 by the same RADOS lock, as soon as the
frozen deploy's hold lapses on the OSD. The test then continues the deploy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devsite.certmaker import pem_file
from devsite.gateway import Gateway
from devsite.proc import state_of
from tests.conftest import Result, Stack, run_cli
from tests.test_deploy_e2e import fingerprint_of_pool
from tests.test_deploy_guard_e2e import OtherGateway, other, renewed
from tests.test_issue_e2e import assert_one_error_line

__all__ = ["other"]  # the fixture, used by name

# restart_timeout + 2 * verify_timeout + 60: how long the frozen deploy's slot outlives its last confirmation.
RESTART_TIMEOUT, VERIFY_TIMEOUT = 10.0, 2.0
HOLD = RESTART_TIMEOUT + 2 * VERIFY_TIMEOUT + 60


def wrong_first_restart(gateway: Gateway, tmp_path: Path) -> None:
    """A restart command whose first restart serves another certificate (the check fails), and then restarts right."""
    wrong = tmp_path / "wrong.pem"
    wrong.write_text(pem_file(("other.example.org",)))
    flag = tmp_path / "wrong-done"
    script = tmp_path / "restart.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"if [ ! -e {flag} ]; then touch {flag}; exec {gateway.rgw.restart_command} {wrong}; fi\n"
        f"exec {gateway.rgw.restart_command}\n"
    )
    script.chmod(0o755)
    gateway.settings["deploy"]["restart_command"] = str(script)


def stop_deploy_at(config: Path, point: str, *args: str) -> subprocess.Popen[str]:
    """`rgwtls deploy`, in a session of its own, once it has stopped itself at `point` (tests/freeze.py)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.freeze", point, *args, "deploy"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RGWTLS_CONFIG": str(config)},
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while state_of(proc.pid) != "T":
        if proc.poll() is not None:
            raise AssertionError(proc.communicate()[1])
        if time.monotonic() >= deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"the deploy never reached {point!r}")
        time.sleep(0.05)
    return proc


def frozen_deploy(config: Path, point: str, other: OtherGateway) -> Result:
    """Run the deploy until it stops itself at `point`; let the other gateway take the slot; continue it."""
    proc = stop_deploy_at(config, point, "-v")
    try:
        frozen = time.monotonic()
        # The frozen deploy's slot lapses on the OSD's clock (cls_lock expires it a little late).
        while not other.take():
            assert time.monotonic() - frozen < HOLD + 60, "the frozen deploy's slot never lapsed"
            time.sleep(0.5)
        assert time.monotonic() - frozen > HOLD - 20
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return Result(proc.returncode, "", err)


@pytest.mark.parametrize("point", ["before the restart", "during the verification", "before the rollback"])
def test_deploy_frozen_after_its_fence_restarts_nothing_while_another_gateway_holds_the_only_slot(
    stack: Stack, gateway: Gateway, other: OtherGateway, tmp_path: Path, point: str
) -> None:
    served, pem, pid = renewed(stack, gateway)
    gateway.settings["deploy"].update(restart_timeout=RESTART_TIMEOUT, verify_timeout=VERIFY_TIMEOUT)
    if point != "before the restart":
        wrong_first_restart(gateway, tmp_path)  # the check fails: the rollback would restart again
    res = frozen_deploy(gateway.config(), point, other)
    # Only the restart before the freeze, if the freeze came after it.
    assert res.stderr.count("restarting radosgw: ") == (0 if point == "before the restart" else 1), res.stderr
    if point == "before the restart":
        assert_one_error_line(
            res, "restart slot 0 is no longer ours", "radosgw was not restarted", "the previous file is back in place"
        )
        assert gateway.rgw.supervisor("pid") == pid
        assert gateway.served() == served
        assert gateway.restarts() == 1
    else:
        assert_one_error_line(
            res,
            "did not serve certificate",
            "put the previous certificate back in place, but restart slot 0 is no longer ours",
            "radosgw was not restarted",
        )
        # The one restart before the freeze, onto the wrong certificate; none after it.
        assert gateway.restarts() == 2
    assert gateway.pem.read_bytes() == pem
    # The other gateway is done: the next run (forced past the backoff of the failed check) converges.
    other.free()
    again = run_cli(gateway.config(), "deploy", "--force")
    assert again.code == 0, again.stderr
    assert gateway.served() == fingerprint_of_pool(stack)
