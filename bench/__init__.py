"""Benchmarks of rgwtls against the tools it replaces; see docs/performance.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def compile_sources() -> None:
    """Byte-compile src/, as pip does when it installs the wheel on a gateway.

    The editable install in .venv reads src/ directly, and with
    PYTHONDONTWRITEBYTECODE set (as in this workplace) every run would
    compile every module again: a cost no installed rgwtls pays.
    """
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "src")], check=True, env={"PATH": "/usr/bin:/bin"}
    )
