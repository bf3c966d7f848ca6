"""Running a site's own command (a dehydrated hook, the radosgw restart): no shell, a timeout, one line."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence


class CommandFailed(Exception):
    """The command could not run, timed out, or exited non-zero; `problem` says which, in one phrase."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def run(argv: Sequence[str], timeout: float) -> None:
    """Run it to the end; on failure, its own last line of output is the reason shown."""
    try:
        res = subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"did not finish within {timeout:g}s") from None
    except OSError as e:
        raise CommandFailed(f"cannot be run ({argv[0]}: {e.strerror})") from None
    if res.returncode != 0:
        said = (res.stderr.strip() or res.stdout.strip()).splitlines()
        raise CommandFailed(f"failed (exit {res.returncode})" + (f": {said[-1]}" if said else ""))
