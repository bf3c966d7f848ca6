"""The test stack's servers: held by PID, and gone with the worker that started them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from devsite.proc import Server
from tests.test_command import alive
from tests.waits import STOP_BOUND, wait_for


def exec_done(pid: int) -> bool:
    """setpriv has set the signal and become the server: before that a parent's death goes unseen."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep\0")


def test_the_pid_held_is_the_servers_own(tmp_path: Path) -> None:
    server = Server("sleep", ["sleep", "60"], tmp_path / "sleep.out").start()
    pid = server.pid
    try:
        wait_for("sleep's exec", lambda: exec_done(pid), STOP_BOUND)
    finally:
        server.stop()
    assert not alive(pid)


def test_a_server_dies_with_the_worker_that_started_it(tmp_path: Path) -> None:
    """A worker killed outright (a segfault runs no teardown) must not leave its stack running."""
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import signal, sys
                from pathlib import Path
                from devsite.proc import Server
                s = Server("sleep", ["sleep", "60"], Path({str(tmp_path / "sleep.out")!r})).start()
                print(s.pid, flush=True)
                signal.pause()
            """),
        ],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    assert worker.stdout is not None
    pid = int(worker.stdout.readline())
    try:
        wait_for("sleep's exec", lambda: exec_done(pid), STOP_BOUND)
        worker.kill()
        worker.wait(10)
        wait_for("the server's end after its worker's", lambda: not alive(pid), STOP_BOUND)
    finally:
        worker.kill()
        worker.wait(10)
        worker.stdout.close()
        # Only our own sleep: by now its PID may be another process's.
        with contextlib.suppress(OSError):
            if alive(pid) and exec_done(pid):
                os.kill(pid, signal.SIGKILL)
