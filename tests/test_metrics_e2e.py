"""`rgwtls check --textfile DIR` through the CLI, against the real pool, in a directory shared with a group."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Result, Stack

CLI = Callable[..., Result]
CRITICAL = 2


def test_check_never_writes_through_links_planted_at_its_temporary_names(
    stack: Stack, cli: CLI, tmp_path: Path
) -> None:
    victim = tmp_path / "root-only"
    victim.write_bytes(b"root's own bytes\n")
    victim.chmod(0o600)
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    textfile.chmod(0o775)  # node_exporter's directory as a site shares it: root:ceph 0775
    # The next few thousand PIDs, at every name the old code opened: the CLI's process is among them.
    start = os.getpid()
    links = [
        textfile / name
        for pid in range(start, start + 3000)
        for name in (f".rgwtls_check.prom.{pid}.tmp", f".rgwtls_check.prom.rgwtls-{pid}")
    ]
    for link in links:
        link.symlink_to(victim)
    res = cli(stack.write_config(stack.settings()), "check", "--textfile", str(textfile))
    assert res.code == CRITICAL, res.stdout + res.stderr  # an empty pool: no certificate yet
    assert "could not write the metrics" not in res.stderr
    assert victim.read_bytes() == b"root's own bytes\n"
    assert victim.stat().st_mode & 0o777 == 0o600
    assert all(link.is_symlink() for link in links)
    prom = textfile / "rgwtls_check.prom"
    assert not prom.is_symlink()
    assert prom.stat().st_mode & 0o777 == 0o644
    samples = {s.name: s.value for f in text_string_to_metric_families(prom.read_text()) for s in f.samples}
    assert samples["rgwtls_check_status"] == CRITICAL
    assert sorted(p.name for p in textfile.iterdir() if not p.is_symlink()) == ["rgwtls_check.prom"]
