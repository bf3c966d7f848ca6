"""Waiting in the tests: for the event itself, bounded by the operation's own bound, never a fixed sleep.

A busy machine (another job, the other xdist worker, `scripts/cpu-hog`) makes
every step slower, and a wait of a fixed "within 30 s" then fails where nothing
is wrong, hiding the real failures behind noise. So a wait here polls for the
event, its bound is the one the product documents for the operation that makes
the event (`issue`'s run bound, a deploy's restart and verify timeouts...), and
a wait on a process ends at once, with that process's output, when the process
exits without making the event: that, not the clock, is the failure to show.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen
from typing import Any

from devsite.proc import state_of
from rgwtls.config import load
from rgwtls.run import issue_bound


def wait_for(
    what: str,
    ready: Callable[[], object],
    bound: float,
    proc: Popen[Any] | None = None,
    output: Callable[[], str] | None = None,
    why: str = "",
) -> float:
    """Poll `ready` until it is true; how long it took.

    `bound`: the operation's own, named in `why`. `proc`: the process that makes
    the event; `output`: what it said, if its stderr is read elsewhere.
    """
    started = time.monotonic()
    pause = 0.02
    while not ready():
        if proc is not None and proc.poll() is not None and not ready():
            if output is not None:
                out = output()
            else:
                out = proc.stderr.read() if proc.stderr and not proc.stderr.closed else ""
            raise AssertionError(f"{what}: the process ended first (exit status {proc.returncode}):\n{out}")
        took = time.monotonic() - started
        if took > bound:
            raise AssertionError(f"{what} did not happen within {bound:g}s{f' ({why})' if why else ''}")
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)
    return time.monotonic() - started


# A process stops thread by thread; on a machine with a load of 20 on 2 cores the last may wait
# its turn for seconds. Nothing documents a bound: this is ample, and reached only by a wedged kernel.
STOP_BOUND = 30.0


def sigstop(pid: int) -> None:
    """SIGSTOP `pid`, and return once every one of its threads has stopped.

    The kernel starts a stop when one thread of the process next runs, and stops
    the others as each of them next runs: until then they go on, and a server
    "stalled" by a test answers what reaches it meanwhile. A test that stalls a
    server and then asks it something (the write-probe test: the probe's write
    was answered, a later operation timed out) must wait for the whole stop.
    """
    os.kill(pid, signal.SIGSTOP)
    wait_for(f"every thread of process {pid} stopped", lambda: all_stopped(pid), STOP_BOUND, why="SIGSTOP")


def all_stopped(pid: int) -> bool:
    """Whether each thread of `pid` is in the stopped state (T), from /proc; a thread that exited counts as stopped."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if state_of(pid, int(task.name)) != "T":
                return False
        except (FileNotFoundError, ProcessLookupError):
            continue
    return True


def issue_run_bound(config: Path) -> float:
    """The bound `rgwtls issue` puts on a run with this config (docs/configuration.md, "The run's bound")."""
    return issue_bound(load(config))[0]


def deploy_bound(config: Path) -> float:
    """How long a deploy with this config may take to reach and finish its restart.

    Its reads at ceph.timeout each (the set, the slot, the mon check), then
    the restart slot's hold (deploy.slot_hold: a restart and its check, twice
    over for a rollback, and a margin): how long the deploy itself may hold a slot.
    """
    cfg = load(config)
    return 4 * cfg.ceph.timeout + cfg.deploy.slot_hold
