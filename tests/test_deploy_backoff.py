"""The backoff of a set that failed its restart or check on this host: when the next attempt is, and what skips it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rgwtls import config
from rgwtls.backoff import Backoff, backoff_delay
from rgwtls.errors import DeployDeferred, DeployError, Interrupted
from rgwtls.store import CertSet

MINIMAL = """
[[certificate]]
name = "cog.example.org"
domains = ["cog.example.org", "*.cog.example.org"]

[deploy]
state_dir = "{state}"
"""


def load(tmp_path: Path, extra: str = "") -> config.Config:
    p = tmp_path / "rgwtls.toml"
    p.write_text(MINIMAL.format(state=tmp_path / "state") + extra)
    p.chmod(0o644)
    (tmp_path / "state").mkdir(exist_ok=True)
    return config.load(p)


def a_set(generation: int = 2) -> CertSet:
    return CertSet("cog.example.org", generation, "", "", "", ("cog.example.org",), "", "", "")


FAILED = DeployError("127.0.0.1:443 did not serve certificate 0123456789abcdef for cog.example.org within 30s")


def test_the_wait_is_five_minutes_doubling_to_an_hour() -> None:
    assert [backoff_delay(n) / 60 for n in range(1, 8)] == [5, 10, 20, 40, 60, 60, 60]
    assert backoff_delay(10_000) == 3600


def test_a_failure_is_recorded_and_the_next_run_inside_the_backoff_changes_nothing(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    tail = Backoff(cfg, a_set(), "f" * 64).failed(FAILED)
    assert tail.startswith("; failed 1 time(s) in a row on this host: the next attempt is after ")
    assert "(in 5 min), or now with rgwtls deploy --force" in tail
    record = json.loads((tmp_path / "state" / "cog.example.org.deploy-failed").read_bytes())
    assert (record["generation"], record["fingerprint"], record["failures"]) == (2, "f" * 64, 1)
    assert (tmp_path / "state" / "cog.example.org.deploy-failed").stat().st_mode & 0o777 == 0o600
    with pytest.raises(DeployDeferred, match=r"failed on this host 1 time\(s\) in a row \(last: 127.0.0.1:443 did not"):
        Backoff(cfg, a_set(), "f" * 64).wait_unless(force=False)


def test_failures_in_a_row_double_the_wait(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    Backoff(cfg, a_set(), "f" * 64).failed(FAILED)
    assert "failed 2 time(s) in a row on this host" in Backoff(cfg, a_set(), "f" * 64).failed(FAILED)
    assert "(in 20 min)" in Backoff(cfg, a_set(), "f" * 64).failed(FAILED)


def test_force_a_new_set_or_a_changed_config_try_at_once(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    Backoff(cfg, a_set(), "f" * 64).failed(FAILED)
    Backoff(cfg, a_set(), "f" * 64).wait_unless(force=True)
    Backoff(cfg, a_set(generation=3), "e" * 64).wait_unless(force=False)
    Backoff(cfg, a_set(), "e" * 64).wait_unless(force=False)  # same generation, another certificate
    changed = load(tmp_path, '\n[ceph]\npool = "rgwtls"\n')
    Backoff(changed, a_set(), "f" * 64).wait_unless(force=False)
    # And a new set starts counting again.
    assert "failed 1 time(s)" in Backoff(cfg, a_set(generation=3), "e" * 64).failed(FAILED)


def test_once_the_wait_is_over_the_next_run_tries(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    b = Backoff(cfg, a_set(), "f" * 64)
    b.failed(FAILED)
    record = json.loads(b.path.read_bytes())
    b.path.write_text(json.dumps({**record, "next_attempt": time.time() - 1}))
    b.wait_unless(force=False)


def test_a_signal_is_not_the_sets_fault_and_records_nothing(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    b = Backoff(cfg, a_set(), "f" * 64)
    assert b.failed(Interrupted("SIGTERM")) == ""
    assert not b.path.exists()


@pytest.mark.parametrize("content", [b"\xff not json", b"[1, 2]", b'{"generation": 2}'])
def test_a_record_that_cannot_be_read_holds_nothing_back(tmp_path: Path, content: bytes) -> None:
    cfg = load(tmp_path)
    b = Backoff(cfg, a_set(), "f" * 64)
    b.path.write_bytes(content)
    b.wait_unless(force=False)
    assert "failed 1 time(s)" in b.failed(FAILED)


def test_success_removes_the_record(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    b = Backoff(cfg, a_set(), "f" * 64)
    b.failed(FAILED)
    b.clear()
    assert not b.path.exists()
    b.clear()  # twice: a no-op
