"""docs/ceph-versions.md: the Ceph releases the end-to-end tests passed on, written by the test run.

Each release has one row, the last run's: the host's run (Debian 12, Pacific)
and the Tentacle root's run (`scripts/tentacle`) each rewrite their own and
keep the other's. The exact package versions come from dpkg, the release from
`ceph-mon --version`, so the table says what really ran.

Only a run asked to writes it (WRITE_VAR=1; `.ci/run` sets it for both
runs): the date and the counts change at every run, and a test suite must
leave a fresh clone's `git status` clean.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import platform
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "ceph-versions.md"
WRITE_VAR = "RGWTLS_WRITE_CEPH_VERSIONS"
PACKAGES = ("ceph-mon", "ceph-osd", "radosgw", "librados2", "python3-rados")
COLUMNS = ("Ceph", "release", "tested on", "Debian", "Python", *PACKAGES, "end-to-end tests")
HEADER = """\
# Ceph releases tested

Written by the test run itself (`devsite/versions.py`), never by hand: a
run asked to (`RGWTLS_WRITE_CEPH_VERSIONS=1`, as `.ci/run` sets it) in which
every test passed and every end-to-end test that touches Ceph ran (the
`tentacle` marker) rewrites its release's row and keeps the others. The
host's run (`.venv/bin/python -m pytest`, Debian 12) gives Pacific's row, the
Tentacle root's (`scripts/tentacle pytest -m tentacle`, Debian sid) Tentacle's.
rgwtls runs on the librados and Python of the cluster's own release: a Pacific
client cannot join a Tentacle cluster.

"""


def asked(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this run was asked to write its row: WRITE_VAR=1 in its environment."""
    return env.get(WRITE_VAR) == "1"


def _out(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30).stdout.strip()


def current_row(passed: int, skipped: int) -> dict[str, str]:
    """What this machine runs: the release, the date, and the exact package versions."""
    # "ceph version 20.2.4 (7f79...) tentacle (stable - RelWithDebInfo)"
    m = re.match(r"ceph version (\S+) \(\S+\) (\w+)", _out(["ceph-mon", "--version"]))
    version, release = (m.group(1), m.group(2)) if m else ("?", "?")
    row = {
        "Ceph": version,
        "release": release,
        "tested on": dt.datetime.now(dt.UTC).date().isoformat(),
        "Debian": Path("/etc/debian_version").read_text().strip(),
        "Python": platform.python_version(),
    }
    for pkg in PACKAGES:
        row[pkg] = _out(["dpkg-query", "-W", "-f", "${Version}", pkg]) or "-"
    row["end-to-end tests"] = f"{passed} passed" + (f", {skipped} skipped" if skipped else "")
    return row


def _read_rows(text: str) -> list[dict[str, str]]:
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == len(COLUMNS) and cells[0] not in ("Ceph", "") and "---" not in line:
            rows.append(dict(zip(COLUMNS, cells, strict=True)))
    return rows


def _release_key(row: dict[str, str]) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", row["Ceph"])[:3])


def render(rows: list[dict[str, str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in sorted(rows, key=_release_key)]
    return HEADER + "\n".join(lines) + "\n"


def record(row: dict[str, str], doc: Path = DOC) -> None:
    """Put `row` in place of its release's, under a lock (the two runs may end together), atomically."""
    lock = os.open(doc.parent, os.O_RDONLY)  # the docs directory itself: no lock file left behind
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = doc.read_text() if doc.exists() else ""
        rows = [r for r in _read_rows(old) if r["release"] != row["release"]] + [row]
        new = render(rows)
        if new == old:
            return
        tmp = doc.with_name(f".{doc.name}.{os.getpid()}.tmp")
        tmp.write_text(new)
        tmp.replace(doc)
    finally:
        os.close(lock)
