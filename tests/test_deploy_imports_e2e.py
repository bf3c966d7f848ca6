"""What cron's deploy loads: a no-op deploy, every few minutes on every gateway, imports only what it uses."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from devsite.gateway import Gateway
from tests.conftest import Stack
from tests.test_deploy_e2e import issue


def imported_by_deploy(gateway: Gateway) -> tuple[str, set[str]]:
    """`rgwtls -v deploy` as cron runs it, under -X importtime: what it said, and every module it imported."""
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "rgwtls", "-v", "deploy"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RGWTLS_CONFIG": str(gateway.config())},
        check=False,
    )
    assert res.returncode == 0, res.stderr
    modules = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", res.stderr, re.MULTILINE))
    return res.stderr, modules


def test_a_no_op_deploy_does_not_import_the_fleet_module_that_only_a_change_or_a_failure_needs(
    stack: Stack, gateway: Gateway
) -> None:
    issue(stack)
    said, changed = imported_by_deploy(gateway)
    assert "rgwtls.fleet" in changed, said  # it wrote this gateway's record
    said, noop = imported_by_deploy(gateway)
    assert "nothing to do" in said, said
    assert "rgwtls.deploy" in noop
    assert "rgwtls.fleet" not in noop
