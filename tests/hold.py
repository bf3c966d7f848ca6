"""`python -m tests.hold STEP FILE rgwtls-args...`: the real rgwtls, held at the end of a revoke's STEP.

The run writes its PID into FILE there and waits until FILE is gone, so that
a test can kill it or freeze it exactly between two steps. The hold is put on
`rgwtls.revoke._pause`, a point the product names and leaves empty: the
product reads no switch of its own for it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main() -> None:
    from rgwtls import revoke

    wanted, held = sys.argv[1], Path(sys.argv[2])

    def pause(step: str) -> None:
        if step != wanted:
            return
        held.write_text(str(os.getpid()))
        while held.exists():
            time.sleep(0.05)

    revoke._pause = pause
    from rgwtls.cli import main as rgwtls

    rgwtls(["revoke", *sys.argv[3:]], prog_name="rgwtls")


if __name__ == "__main__":
    main()
