"""The README's demo runs the whole design and leaves nothing behind."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_issues_deploys_serves_and_stops_everything() -> None:
    res = subprocess.run([str(ROOT / "scripts" / "demo")], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "names:   cog.example.org, *.cog.example.org" in out
    assert "issuer:  CN=Pebble Intermediate CA" in out
    assert "HTTP 200, TLS verified: 0" in out
    workdir = re.search(r"starting the local stack in (\S+)", out)
    assert workdir is not None
    assert not Path(workdir.group(1)).exists()
    # Every server it started is gone: none runs from its directory any more.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert workdir.group(1) not in ps
