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


def test_devsite_up_runs_the_site_until_ctrl_c_and_rgwtls_works_against_it() -> None:
    import os
    import signal
    import sys

    site = subprocess.Popen(
        [sys.executable, "-m", "devsite", "up"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert site.stdout is not None
        seen: list[str] = []
        for line in site.stdout:
            seen.append(line)
            if line.startswith("Ctrl-C stops everything"):
                break
        out = "".join(seen)
        issuer = re.search(r"RGWTLS_CONFIG=(\S+issuer\.toml) rgwtls -v issue", out)
        gateway = re.search(r"RGWTLS_CONFIG=(\S+gateway\.toml) rgwtls -v deploy", out)
        workdir = re.search(r"starting the local site in (\S+)", out)
        assert issuer, out
        assert gateway, out
        assert workdir, out
        rgwtls = [sys.executable, "-m", "rgwtls"]
        for config, command in ((issuer.group(1), "issue"), (gateway.group(1), "deploy")):
            res = subprocess.run(
                [*rgwtls, command],
                env={**os.environ, "RGWTLS_CONFIG": config},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert res.returncode == 0, res.stderr
        site.send_signal(signal.SIGINT)
        assert site.wait(60) == 0
        assert not Path(workdir.group(1)).exists()
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
        assert workdir.group(1) not in ps
    finally:
        if site.poll() is None:
            os.killpg(site.pid, signal.SIGKILL)
            site.wait()
        if site.stdout is not None:
            site.stdout.close()
