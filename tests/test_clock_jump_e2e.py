"""The wall clock stepped in the middle of a run: a day forward, an hour back, as NTP or an operator may step it.

Durations (the run's bound, the issuer lock's lease, the restart slot's hold,
the waits and deadlines) are measured on the monotonic clock, which a step
does not move; dates (a certificate's validity, when it is due, a record's
time stamp) are the wall clock's. Each run here gets its own wall clock
(devsite.walljump), stepped from inside the run: by the DNS hook once the
challenge record is published, by the restart command as radosgw restarts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devsite.gateway import Gateway
from devsite.walljump import WallJump
from rgwtls.store import ISSUER_LOCK, ISSUER_LOCK_NAME, NS_DEPLOY, NS_ISSUER, SLOT_LOCK
from tests.conftest import POOL, ZONE, Result, Stack, run_cli
from tests.test_issue_e2e import stored_set, write_hook
from tests.test_watch_e2e import serves_pool

RECORD = f"_acme-challenge.{ZONE}"
DAY, HOUR = 86400, 3600
STEPS = pytest.mark.parametrize("step", [DAY, -HOUR], ids=["a-day-forward", "an-hour-back"])


@pytest.fixture
def wall(tmp_path: Path) -> WallJump:
    return WallJump(tmp_path / "wall-offset")


def run(config: Path, wall: WallJump, *args: str) -> tuple[Result, float]:
    started = time.monotonic()
    res = run_cli(config, *args, env=wall.env())
    return res, time.monotonic() - started


def lock_free(stack: Stack, ns: str, obj: str, name: str) -> bool:
    """Whether someone else could take this RADOS lock now (and give it back at once)."""
    import rados

    ioctx = stack.ceph.admin().open_ioctx(POOL)
    try:
        ioctx.set_namespace(ns)
        try:
            ioctx.lock_exclusive(obj, name, "clock-test", duration=60)
        except rados.ObjectBusy:
            return False
        ioctx.unlock(obj, name, "clock-test")
        return True
    finally:
        ioctx.close()


@STEPS
def test_issue_whose_wall_clock_steps_mid_run_keeps_its_bound_and_its_lock_and_leaves_no_record(
    stack: Stack, wall: WallJump, step: int
) -> None:
    secret = stack.secret_file("hook-tsig", stack.bind.tsig_secret)
    lease = 3.0
    stepped = stack.dir / "stepped"
    # Published, then the clock steps, then the hook holds the run past the lease: the lock must be
    # renewed across the step, on the lease's own (monotonic) clock, or the fenced store fails. The
    # hook's nsupdate keeps the true time: BIND refuses a TSIG signed a day off, as it should.
    hook = write_hook(
        stack.dir / "hook.sh",
        f"""case "$1" in
  deploy_challenge) op=add ;;
  clean_challenge) op=delete ;;
  *) exit 0 ;;
esac
printf 'server 127.0.0.1 {stack.bind.port}\\nupdate %s {RECORD}. 60 TXT "%s"\\nsend\\n' "$op" "$4" |
  env -u LD_PRELOAD nsupdate -y "{stack.bind.tsig_algorithm}:{stack.bind.tsig_name}:$(cat {secret})"
[ "$1" = deploy_challenge ] && [ ! -e {stepped} ] || exit 0
touch {stepped}
{wall.shell_step(step)}
sleep {lease * 1.5:g}
""",
    )
    settings = stack.settings("hook")
    settings["dns"]["hook"] = {"command": str(hook)}
    settings["ceph"]["lock_duration"] = lease
    config = stack.write_config(settings)
    res, took = run(config, wall, "issue")
    assert res.code == 0, res.stderr
    assert int(wall.path.read_text()) == step  # the step did happen mid-run
    s = stored_set(stack)
    assert s is not None
    assert s["generation"] == 1
    assert stack.bind.txt(RECORD) == set()
    assert lock_free(stack, NS_ISSUER, ISSUER_LOCK, ISSUER_LOCK_NAME)
    assert took < 60, took  # nowhere near a day, nor an hour: no wait followed the wall clock
    # The next run, on the stepped clock, finds the set current and takes the lock at once.
    again, _ = run(config, wall, "issue")
    assert again.code == 0, again.stderr


@STEPS
def test_deploy_whose_wall_clock_steps_as_it_restarts_frees_its_slot_and_waits_for_nothing_longer(
    stack: Stack, gateway: Gateway, wall: WallJump, step: int
) -> None:
    issuer = stack.write_config(stack.settings())
    assert run_cli(issuer, "issue").code == 0
    d = gateway.settings["deploy"]
    d["restart_command"] = f"sh -c '{wall.shell_step(step)}; exec {d['restart_command']}'"
    res, took = run(gateway.config(), wall, "deploy")
    assert res.code == 0, res.stderr
    assert int(wall.path.read_text()) == step
    assert serves_pool(stack, gateway)
    assert lock_free(
        stack, NS_DEPLOY, "restart-slot.0", SLOT_LOCK
    )  # released at once, not held until a wall-clock time that moved
    assert took < d["verify_timeout"] + d["restart_wait"], took


def test_a_deploy_backoff_is_not_stretched_by_a_wall_clock_stepped_back(tmp_path: Path, wall: WallJump) -> None:
    """The backoff's record outlives the process, so it holds a wall-clock time: a step back must not add to it."""
    config = tmp_path / "rgwtls.toml"
    (tmp_path / "state").mkdir()
    config.write_text(
        f'[[certificate]]\nname = "cog.example.org"\ndomains = ["cog.example.org"]\n'
        f'[deploy]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    config.chmod(0o644)
    code = f"""
import pathlib
import subprocess
from rgwtls import config
from rgwtls.backoff import Backoff
from rgwtls.errors import DeployDeferred, DeployError
from rgwtls.store import CertSet

cfg = config.load(pathlib.Path({str(config)!r}))
s = CertSet("cog.example.org", 2, "", "", "", ("cog.example.org",), "", "", "")
print(Backoff(cfg, s, "f" * 64).failed(DeployError("it failed")))
try:
    Backoff(cfg, s, "f" * 64).wait_unless(force=False)
except DeployDeferred:
    print("deferred before the step")
subprocess.run(["sh", "-c", {wall.shell_step(-HOUR)!r}], check=True)
try:
    Backoff(cfg, s, "f" * 64).wait_unless(force=False)
    print("tries after the step")
except DeployDeferred as e:
    print("deferred after the step:", e)
"""
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **wall.env()}, check=False
    )
    assert res.returncode == 0, res.stderr
    assert "(in 5 min)" in res.stdout
    assert "deferred before the step" in res.stdout
    assert "tries after the step" in res.stdout, res.stdout


def test_an_issue_retry_schedule_is_not_stretched_by_a_wall_clock_stepped_back(stack: Stack, wall: WallJump) -> None:
    """The schedule's next attempt is a wall time in the pool (every issuer host reads it): a step back must not add."""
    config = stack.write_config(stack.settings())
    stack.wapi.fail(503, methods={"POST"})  # the records cannot be made; nothing is left to clean up
    failed, _ = run(config, wall, "issue")
    stack.wapi.fail(None)
    assert failed.code == 1, failed.stderr
    assert "next attempt after" in failed.stderr
    # Minutes later, on the same clock: held back, silently, as its schedule says.
    held, _ = run(config, wall, "issue")
    assert held.code == 0, held.stderr
    assert stored_set(stack) is None
    # The clock stepped an hour back: the next attempt is now two hours away, more than the schedule sets.
    wall.set(-HOUR)
    res, _ = run(config, wall, "issue")
    assert res.code == 0, res.stderr
    assert stored_set(stack) is not None
