"""deploy.activate = "self" against a real radosgw that does not re-read its file, on every Ceph release tested.

Neither Pacific (16.2) nor Tentacle (20.2.4) has beast's `ssl_reload`: deploy
installs the file, waits `deploy.self_reload_wait` for the new certificate to
be served, says in one NOTICE that it was not, and restarts radosgw once under
a slot. The test is apart from tests/test_activate_e2e.py, whose HAProxy and
nginx the Tentacle root does not have, so that it runs on both releases.
"""

from __future__ import annotations

import time

from devsite.gateway import Gateway
from tests.conftest import Stack, run_cli
from tests.test_deploy_e2e import fingerprint_of_pool, issue


def test_self_against_a_radosgw_without_ssl_reload_restarts_it_once_after_the_wait_with_one_notice(
    stack: Stack, gateway: Gateway
) -> None:
    gateway.settings["deploy"].update(activate="self", self_reload_wait=3.0)
    issue(stack)
    rgw_pid = gateway.rgw.radosgw_pid()
    started = time.monotonic()
    res = run_cli(gateway.config(), "deploy")
    took = time.monotonic() - started
    assert res.code == 0, res.stderr
    said = [i for i, line in enumerate(res.lines) if "did not pick up" in line]
    assert len(said) == 1, res.stderr
    notice = res.lines[said[0]]
    assert notice.startswith("NOTICE:")
    assert "within 3s" in notice
    assert notice.endswith("; restarting it")
    # Restarted once, after the wait, and the line that says so comes before the one that says it is served.
    assert took >= 3.0
    assert gateway.restarts() == 1
    assert gateway.rgw.radosgw_pid() != rgw_pid
    done = [i for i, line in enumerate(res.lines) if "restarted radosgw, and it serves it" in line]
    assert done == [len(res.lines) - 1], res.stderr
    assert said[0] < done[0]
    assert gateway.served() == fingerprint_of_pool(stack)
    assert "1 self-then-restart" in run_cli(gateway.config(), "status").stdout
    # The next run is a silent no-op.
    again = run_cli(gateway.config(), "deploy")
    assert again.code == 0
    assert again.stderr == "", again.stderr
