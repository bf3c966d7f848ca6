"""Could a new radosgw start? The probe's verdicts, with a fake cluster (tests/test_stalled_e2e.py has the real one)."""

from __future__ import annotations

import logging
import os
import types
from typing import Any

import pytest

from rgwtls import health
from rgwtls.config import CephConfig
from rgwtls.errors import StoreError

POOLS = (".rgw.root", "default.rgw.control")


def fake_cluster(
    monkeypatch: pytest.MonkeyPatch,
    answers: dict[tuple[str, str], str],
    connects: bool = True,
    writes: dict[tuple[str, str], str] | None = None,
) -> list[Any]:
    """health's Pool: stats answer `answers` (notify.N there in the control pool, absent elsewhere), writes `writes`.

    The list gets each connection's timeout, then each write as (pool, object, beside).
    """
    made: list[Any] = []

    class FakePool:
        def __init__(self, cfg: CephConfig) -> None:
            made.append(cfg.timeout)

        def connect(self) -> FakePool:
            if not connects:
                raise StoreError("cannot connect to the Ceph cluster (...) after 5.0s: timed out")
            return self

        def probe(self, pool: str, obj: str) -> str:
            return answers.get((pool, obj), "present" if pool.endswith(".rgw.control") else "absent")

        def probe_write(self, pool: str, obj: str, beside: str) -> str:
            made.append((pool, obj, beside))
            return (writes or {}).get((pool, beside), "ok")

        def close(self) -> None:
            pass

    monkeypatch.setattr(health, "Pool", FakePool)
    return made


def test_pools_that_answer_let_the_restart_go_and_the_probe_waits_at_most_5s(monkeypatch: pytest.MonkeyPatch) -> None:
    made = fake_cluster(monkeypatch, {})
    assert health.radosgw_could_not_start(CephConfig(timeout=10.0), POOLS) == ""
    assert made[0] == 5.0


def test_a_write_beside_each_control_object_is_an_object_of_our_own_in_its_pg(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only where radosgw's control objects are (not in .rgw.root); named after this host; radosgw's own only read."""
    made = fake_cluster(monkeypatch, {})
    assert health.radosgw_could_not_start(CephConfig(), POOLS) == ""
    host = os.uname().nodename
    assert made[1:] == [("default.rgw.control", f"rgwtls-probe.{host}.{i}", f"notify.{i}") for i in range(8)]


def test_a_control_pool_that_answers_reads_but_takes_no_write_is_the_reason_not_to_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What follows an OSD stall: stats answer, writes in some of the control objects' PGs stay blocked."""
    made = fake_cluster(
        monkeypatch, {}, writes={("default.rgw.control", "notify.5"): "timed out ([errno 110] RADOS timed out)"}
    )
    why = health.radosgw_could_not_start(CephConfig(), POOLS)
    host = os.uname().nodename
    assert why.startswith(
        f"radosgw's pool default.rgw.control takes no write (a write of rgwtls-probe.{host}.5 beside notify.5: "
        "timed out ([errno 110] RADOS timed out) after "
    ), why
    assert why.endswith("s; writes blocked, as after an OSD stall)"), why
    assert len(made) == 1 + 6


def test_a_deploy_user_that_may_only_read_the_control_pool_restarts_after_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The caps of before the write probe: its stats still run, its writes are one WARNING and no refusal."""
    made = fake_cluster(monkeypatch, {}, writes={("default.rgw.control", f"notify.{i}"): "denied" for i in range(8)})
    with caplog.at_level(logging.WARNING, logger="rgwtls"):
        assert health.radosgw_could_not_start(CephConfig(user="client.d"), POOLS) == ""
    [warning] = caplog.records
    assert warning.getMessage() == (
        "whether a new radosgw could start is not checked before this restart: client.d may not write in pool "
        "default.rgw.control, so its writes are not checked (make its cap there 'allow rw pool=default.rgw.control', "
        "docs/deploy.md); the restart goes ahead"
    )
    assert len(made) == 1 + 1  # one denied write, then stats only


def test_a_slow_cluster_is_refused_within_the_total_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each answer just inside its own timeout must not add up to minutes: the probe stops after TOTAL."""
    fake_cluster(monkeypatch, {})
    clock = iter(range(0, 1000, 3))
    monkeypatch.setattr("rgwtls.health.time", types.SimpleNamespace(monotonic=lambda: float(next(clock))))
    why = health.radosgw_could_not_start(CephConfig(), POOLS)
    assert why.startswith("radosgw's pools did not answer within 10s (slow at .rgw.root, notify."), why


def test_a_control_object_that_does_not_answer_is_the_reason_not_to_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cluster(monkeypatch, {("default.rgw.control", "notify.3"): "timed out ([errno 110] RADOS timed out)"})
    why = health.radosgw_could_not_start(CephConfig(), POOLS)
    assert why.startswith("radosgw's pool default.rgw.control does not answer (a stat of notify.3: timed out")


def test_a_cluster_that_cannot_be_connected_is_the_reason_not_to_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cluster(monkeypatch, {}, connects=False)
    assert health.radosgw_could_not_start(CephConfig(), POOLS).startswith("cannot connect to the Ceph cluster")


def test_pools_it_may_not_read_or_that_do_not_exist_are_one_warning_and_no_refusal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_cluster(monkeypatch, {(".rgw.root", "notify.0"): "denied", ("default.rgw.control", "notify.0"): "no pool"})
    with caplog.at_level(logging.WARNING, logger="rgwtls"):
        assert health.radosgw_could_not_start(CephConfig(user="client.d"), POOLS) == ""
    [warning] = caplog.records
    text = warning.getMessage()
    assert "client.d may not read pool .rgw.root (add 'allow r pool=.rgw.root' to its osd caps" in text
    assert "there is no pool default.rgw.control (set deploy.rgw_pools" in text
    assert text.endswith("the restart goes ahead")


def test_no_pools_no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    made = fake_cluster(monkeypatch, {})
    assert health.radosgw_could_not_start(CephConfig(), ()) == ""
    assert made == []
