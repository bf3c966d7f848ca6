"""Running a site's own command (a dehydrated hook, the radosgw restart): no shell, a timeout, one line.

The command runs in a process group of its own, and whatever stops waiting for
it (its timeout, an exception, a signal) kills the whole group: a hook's
children die with it, and none is left holding a lock or a port for the next
run. Its output is read through a bounded tail, so a command printing
megabytes costs neither memory nor a megabyte error line.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import IO

from rgwtls.scrub import clean

# The most kept of each stream: its tail, where the reason for a failure is.
KEEP = 64 * 1024
CHUNK = 16 * 1024
# The most of the command's last line quoted in a failure.
SHOWN = 200
# How often the wait looks whether the command has exited while its pipes stay
# open: a child it left behind may hold them open long after it is done.
POLL = 0.05
# What is read after the command exited, at most: output a straggler goes on writing is not waited for.
DRAIN = 4 * KEEP


class CommandFailed(Exception):
    """The command could not run, timed out, or exited non-zero; `problem` says which, in one phrase."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def run(argv: Sequence[str], timeout: float) -> None:
    """Run it to the end; on failure, its own last line of output is the reason shown."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as e:
        raise CommandFailed(f"cannot be run ({argv[0]}: {e.strerror})") from None
    try:
        finished, out, err = _collect(proc, time.monotonic() + timeout)
        if not finished:
            _kill_group(proc)
    except BaseException:
        # KeyboardInterrupt, or Interrupted from a signal handler: the run
        # unwinds, and the command must not outlive it.
        _kill_group(proc)
        raise
    finally:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    said = _last_line(err, out)
    if not finished:
        raise CommandFailed(f"did not finish within {timeout:g}s" + (f": {said}" if said else ""))
    if proc.returncode != 0:
        how = f"exit {proc.returncode}" if proc.returncode > 0 else f"killed by {_signame(-proc.returncode)}"
        raise CommandFailed(f"failed ({how})" + (f": {said}" if said else ""))


def _collect(proc: subprocess.Popen[bytes], deadline: float) -> tuple[bool, bytes, bytes]:
    """(whether it exited before the deadline, the tail of stdout, the tail of stderr)."""
    pipes: list[IO[bytes]] = [p for p in (proc.stdout, proc.stderr) if p is not None]
    tails = {p.fileno(): bytearray() for p in pipes}
    with selectors.DefaultSelector() as sel:
        for pipe in pipes:
            sel.register(pipe, selectors.EVENT_READ)
        while True:
            if proc.poll() is not None:
                _drain(sel, tails)
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if not sel.get_map():
                # Both pipes closed: only the exit is left to wait for.
                try:
                    proc.wait(remaining)
                except subprocess.TimeoutExpired:
                    break
                continue
            for key, _ in sel.select(min(remaining, POLL)):
                data = os.read(key.fd, CHUNK)
                if data:
                    _keep_tail(tails[key.fd], data)
                else:
                    sel.unregister(key.fileobj)
    out, err = (bytes(tails[p.fileno()]) if p is not None else b"" for p in (proc.stdout, proc.stderr))
    return proc.returncode is not None, out, err


def _drain(sel: selectors.BaseSelector, tails: dict[int, bytearray]) -> None:
    """Read what the exited command left in its pipes, without waiting for more."""
    for key in list(sel.get_map().values()):
        os.set_blocking(key.fd, False)
        taken = 0
        while taken < DRAIN:
            try:
                data = os.read(key.fd, CHUNK)
            except BlockingIOError:
                break
            if not data:
                break
            taken += len(data)
            _keep_tail(tails[key.fd], data)


def _keep_tail(buf: bytearray, data: bytes) -> None:
    buf += data
    if len(buf) > KEEP:
        del buf[:-KEEP]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command's whole process group, and reap the command.

    Its group id is its pid (start_new_session), and Linux does not reuse a
    pid while a group of that id has members, so this kills only its own.
    """
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _last_line(*streams: bytes) -> str:
    """The last non-empty line of the first stream that has one, cleaned (rgwtls.scrub), at most SHOWN characters."""
    for data in streams:
        lines = data.decode("utf-8", "replace").strip().splitlines()
        if lines:
            return clean(lines[-1].strip(), SHOWN)
    return ""


def _signame(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
