"""Start and stop the test stack's servers by handle, never by name."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

# How long a dev-site server may take to start. No server documents a bound of its own, so this
# one only ends a start that hangs: one that dies fails its wait at once, with its log. It holds
# on a machine under scripts/cpu-hog while both xdist workers start their stacks.
START_BOUND = 60.0

# A server dies with the process that started it: an xdist worker that crashes (a segfault runs no
# teardown) left its named, Pebble and OSD running after the run. setpriv (util-linux, essential)
# sets the parent-death signal and execs the server, whose PID is then the one we hold. The signal
# follows the thread that started the server (the worker's, which lives as long as its stack), and
# the kernel clears it for a server that drops to another user itself (radosgw --setuser): that one
# still stops by its fixture, or with its supervisor (rgwsup.py), which has the signal. A worker
# that dies in the millisecond before setpriv has run escapes it.
_DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []


class Server:
    """One server process of the stack, its output kept in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        extra_groups: Sequence[str | int] | None = None,
    ) -> None:
        """`extra_groups`: the supplementary groups to start with (`[]`: none), else ours."""
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log = log
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.extra_groups = None if extra_groups is None else list(extra_groups)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        # Append: a restarted server keeps its earlier output for the post-mortem.
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*_DIE_WITH_PARENT, *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                extra_groups=self.extra_groups,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after the timeout: only this process."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_until(self, ready: Callable[[], bool], timeout: float = START_BOUND, what: str = "") -> None:
        """Poll `ready` until it holds; fail with the server's log if it dies or times out."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise RuntimeError(f"{self.name} exited before {what or 'ready'}:\n{self.log_tail()}")
            try:
                if ready():
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not {what or 'ready'} after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)


def state_of(pid: int, task: int | None = None) -> str:
    """The state letter of a process, or of one of its threads, from /proc: R, S, T (stopped), Z (zombie)...

    It follows the command's name, which is in parentheses and may hold spaces and ")" itself.
    FileNotFoundError once the process (or the thread) is gone.
    """
    stat = Path(f"/proc/{pid}/stat") if task is None else Path(f"/proc/{pid}/task/{task}/stat")
    return stat.read_text().rsplit(")", 1)[1].split()[0]


def run(argv: Sequence[str | os.PathLike[str]], timeout: float = 60.0, **kw: object) -> str:
    """Run a set-up command; fail with its output."""
    res = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,  # type: ignore[call-overload]
    )
    if res.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return str(res.stdout)
