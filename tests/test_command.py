"""A site's command, run for real: its whole process group dies on timeout or interruption, its output is capped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from devsite.proc import state_of
from rgwtls import command
from rgwtls.command import CommandFailed, run
from rgwtls.errors import Interrupted


def script(tmp_path: Path, body: str, name: str = "hook") -> str:
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return str(p)


def alive(pid: int) -> bool:
    """Whether the process runs; a zombie waiting for init to reap it is dead."""
    try:
        return state_of(pid) != "Z"
    except FileNotFoundError:
        return False


def gone_soon(pid: int, within: float = 5.0) -> bool:
    """SIGKILL is delivered asynchronously: give the kernel a moment."""
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def child_pid(pidfile: Path) -> int:
    deadline = time.monotonic() + 5
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "the hook never wrote its child's pid"
        time.sleep(0.02)
    return int(pidfile.read_text())


@pytest.fixture
def pidfile(tmp_path: Path) -> Iterator[Path]:
    """Where a hook writes its child's pid; the child is killed after the test whatever happened."""
    p = tmp_path / "child.pid"
    yield p
    if p.exists() and p.read_text().strip():
        pid = int(p.read_text())
        # Only our own sleep: its pid may be another process's by now.
        with contextlib.suppress(OSError):
            if alive(pid) and Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep\0"):
                os.kill(pid, signal.SIGKILL)


def forking_hook(tmp_path: Path, pidfile: Path) -> str:
    return script(tmp_path, f"sleep 60 &\necho $! > {pidfile}\necho waiting for the zone >&2\nwait\n")


def test_successful_command_returns_quietly(tmp_path: Path) -> None:
    run([script(tmp_path, "echo all fine\necho also fine >&2\n")], 10)


def test_nonzero_exit_quotes_the_last_line_of_stderr(tmp_path: Path) -> None:
    hook = script(tmp_path, "echo progress\necho first >&2\necho 'zone is locked by change freeze' >&2\nexit 3\n")
    with pytest.raises(CommandFailed) as err:
        run([hook], 10)
    assert err.value.problem == "failed (exit 3): zone is locked by change freeze"


def test_nonzero_exit_quotes_stdout_when_stderr_is_empty(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed) as err:
        run([script(tmp_path, "echo Unit not found.\nexit 5\n")], 10)
    assert err.value.problem == "failed (exit 5): Unit not found."


def test_silent_failure_says_only_the_exit_status(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed) as err:
        run(["false"], 10)
    assert err.value.problem == "failed (exit 1)"


def test_command_killed_by_a_signal_names_the_signal(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed) as err:
        run([script(tmp_path, "kill -TERM $$\n")], 10)
    assert err.value.problem == "failed (killed by SIGTERM)"


def test_missing_command_cannot_be_run(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed) as err:
        run([str(tmp_path / "nope"), "deploy_challenge"], 10)
    assert err.value.problem == f"cannot be run ({tmp_path / 'nope'}: No such file or directory)"


def test_timeout_kills_the_hook_and_the_children_it_started(tmp_path: Path, pidfile: Path) -> None:
    start = time.monotonic()
    with pytest.raises(CommandFailed) as err:
        run([forking_hook(tmp_path, pidfile)], 1)
    assert time.monotonic() - start < 10
    assert err.value.problem == "did not finish within 1s: waiting for the zone"
    assert gone_soon(child_pid(pidfile))


def test_interruption_while_waiting_kills_the_group_and_propagates(tmp_path: Path, pidfile: Path) -> None:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted("SIGALRM")

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(Interrupted):
            run([forking_hook(tmp_path, pidfile)], 30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert gone_soon(child_pid(pidfile))


def test_five_megabytes_of_output_give_a_short_line(tmp_path: Path) -> None:
    hook = script(
        tmp_path,
        "head -c 5000000 /dev/zero | tr '\\0' x\nhead -c 5000000 /dev/zero | tr '\\0' y >&2\nexit 1\n",
    )
    with pytest.raises(CommandFailed) as err:
        run([hook], 30)
    problem = err.value.problem
    assert problem.startswith("failed (exit 1): " + "y" * (command.SHOWN // 2))
    assert problem.endswith(" more characters cut]")
    assert len(problem) <= len("failed (exit 1): ") + command.SHOWN


def test_output_kept_is_capped_per_stream(tmp_path: Path) -> None:
    hook = script(tmp_path, "head -c 3000000 /dev/zero\nhead -c 3000000 /dev/zero >&2\n")
    proc = subprocess.Popen([hook], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        finished, out, err = command._collect(proc, time.monotonic() + 30)
    finally:
        command._kill_group(proc)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert finished
    assert len(out) == len(err) == command.KEEP


def test_control_characters_do_not_reach_the_error_line(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed) as err:
        run([script(tmp_path, "printf 'bad \\033[31mred\\r\\n' >&2\nexit 2\n")], 10)
    assert err.value.problem == "failed (exit 2): bad \\x1b[31mred"  # visible, as rgwtls.scrub shows it


def test_undecodable_output_is_quoted_with_replacements(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed) as err:
        run([script(tmp_path, "printf 'caf\\351\\n' >&2\nexit 2\n")], 10)
    assert err.value.problem == "failed (exit 2): caf\ufffd"


def test_child_left_holding_the_pipes_does_not_hold_up_a_finished_command(tmp_path: Path, pidfile: Path) -> None:
    # The background child inherits stdout and stderr; reading to end of file would wait for it.
    hook = script(tmp_path, f"sleep 60 &\necho $! > {pidfile}\nexit 0\n")
    start = time.monotonic()
    run([hook], 30)
    assert time.monotonic() - start < 5


def test_arguments_reach_the_command_as_words_without_a_shell(tmp_path: Path) -> None:
    out = tmp_path / "argv"
    hook = script(tmp_path, f'for a in "$@"; do echo "[$a]"; done > {out}\n')
    run([hook, "deploy_challenge", "a b; touch x", "$HOME"], 10)
    assert out.read_text() == "[deploy_challenge]\n[a b; touch x]\n[$HOME]\n"
    assert not (tmp_path / "x").exists()
