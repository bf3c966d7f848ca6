"""Could a new radosgw start? The probe's verdicts, with a fake cluster (tests/test_stalled_e2e.py has the real one)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from rgwtls import health
from rgwtls.config import CephConfig
from rgwtls.errors import StoreError

POOLS = (".rgw.root", "default.rgw.control")


def fake_cluster(
    monkeypatch: pytest.MonkeyPatch, answers: dict[tuple[str, str], str], connects: bool = True
) -> list[Any]:
    """health's Pool, answering `answers` ("ok" for the rest); the list gets each connection's timeout."""
    made: list[Any] = []

    class FakePool:
        def __init__(self, cfg: CephConfig) -> None:
            made.append(cfg.timeout)

        def connect(self) -> FakePool:
            if not connects:
                raise StoreError("cannot connect to the Ceph cluster (...) after 5.0s: timed out")
            return self

        def probe(self, pool: str, obj: str) -> str:
            return answers.get((pool, obj), "ok")

        def close(self) -> None:
            pass

    monkeypatch.setattr(health, "Pool", FakePool)
    return made


def test_pools_that_answer_let_the_restart_go_and_the_probe_waits_at_most_5s(monkeypatch: pytest.MonkeyPatch) -> None:
    made = fake_cluster(monkeypatch, {})
    assert health.radosgw_could_not_start(CephConfig(timeout=10.0), POOLS) == ""
    assert made == [5.0]


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
