"""What both benchmarks share: running a measured child, medians, and their section of docs/performance.md."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "performance.md"
GNU_TIME = "/usr/bin/time"
RUN_TIMEOUT = 180.0


class BenchError(RuntimeError):
    """A run that did not do its job: the benchmark stops, nothing is timed."""


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def which(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(f"{name} is not installed")
    return path


def compile_sources() -> None:
    """Byte-compile src/, as pip does when it installs the wheel on a gateway.

    The editable install in .venv reads src/ directly, and with
    PYTHONDONTWRITEBYTECODE set (as in this workplace) every run would
    compile every module again: a cost no installed rgwtls pays.
    """
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "src")], check=True, env={"PATH": "/usr/bin:/bin"}
    )


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


@dataclass
class Run:
    code: int
    wall: float  # seconds
    cpu: float  # user + system seconds, the child and its reaped descendants
    maxrss_kib: int  # see `measure`
    stdout: Path
    stderr: Path
    timed_out: bool = False

    def tail(self, lines: int = 25) -> str:
        out: list[str] = []
        for path in (self.stdout, self.stderr):
            try:
                text = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            if text:
                out.append(f"--- {path.name} (last {min(lines, len(text))} lines)")
                out += text[-lines:]
        return "\n".join(out)


def measure(
    argv: Sequence[str],
    env: dict[str, str],
    logs: Path,
    name: str,
    timeout: float = RUN_TIMEOUT,
    gnu_time: bool = True,
) -> Run:
    """Run argv to its end, its output in logs/NAME.out and .err: wall time around it, CPU from os.wait4.

    CPU is user + system of the whole tree (every descendant is waited for). Peak RSS, with
    `gnu_time`, is GNU time's %M: the command's own ru_maxrss, i.e. its largest single process.
    Without it, it is os.wait4's ru_maxrss, which is at least this process's RSS: Linux starts a
    forked child's RSS high-water mark at its parent's RSS and keeps it across exec. GNU time is
    small, and forks the command itself.
    """
    out, err, rss = logs / f"{name}.out", logs / f"{name}.err", logs / f"{name}.rss"
    timed_out = threading.Event()
    cmd = [GNU_TIME, "-q", "-o", str(rss), "-f", "%M", *argv] if gnu_time else list(argv)
    with out.open("wb") as fo, err.open("wb") as fe:
        started = time.perf_counter()
        # Its own process group, so that a timeout or ^C stops the whole tree (by its id).
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, env=env, cwd=logs, start_new_session=True
        )

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - started
        except BaseException:
            kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    maxrss = usage.ru_maxrss
    if gnu_time:
        try:
            maxrss = int(rss.read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            maxrss = 0
    return Run(
        code=proc.returncode,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        maxrss_kib=maxrss,
        stdout=out,
        stderr=err,
        timed_out=timed_out.is_set(),
    )


def update_docs(name: str, text: str, new_doc: str = "# Performance\n", path: Path = DOCS) -> None:
    """Put text between the `<!-- NAME:start -->` and `<!-- NAME:end -->` markers, or append it with them."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    doc = path.read_text() if path.exists() else new_doc
    if start in doc and end in doc:
        pre, rest = doc.split(start, 1)
        _, post = rest.split(end, 1)
        doc = pre + block + post
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(doc)
