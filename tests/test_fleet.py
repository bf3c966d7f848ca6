"""How rollout reads the fleet's records: who serves, who restarts, who failed, and how it says so."""

from __future__ import annotations

import io
import json

import pytest

from rgwtls.fleet import Gateway, _Progress, _standing
from rgwtls.store import Holder

SINCE = "2026-12-04T10:00:00+00:00"
WANT = {"cog": "fp-new"}


def rec(host: str, endpoint: str, served: str, ok: bool = True, error: str | None = None, **more: str) -> bytes:
    doc = {"host": host, "endpoint": endpoint, "certificate": "cog", "served": served, "ok": ok, "error": error}
    return json.dumps({"at": "2026-12-04T10:00:05+00:00", **doc, **more}).encode()


def holder(host: str, label: str) -> Holder:
    return Holder(host, "boot", 42, 1, "2026-12-04T10:00:03Z", "c0ffee", label)


def test_a_gateway_holding_a_restart_slot_is_restarting_until_its_record_says_it_serves() -> None:
    records = {
        "host.gw1.127.0.0.1:443": rec("gw1", "127.0.0.1:443", "fp-old"),
        "host.gw1.127.0.0.1:8443": rec("gw1", "127.0.0.1:8443", "fp-old"),
        "host.gw2.127.0.0.1:443": rec("gw2", "127.0.0.1:443", "fp-new", activate="haproxy"),
    }
    fleet = _standing(records, WANT, SINCE, [holder("gw1", "127.0.0.1:8443")])
    assert [(g.name, g.state) for g in fleet] == [
        ("gw1 (127.0.0.1:443)", "waiting"),  # the same host, another gateway: not the one restarting
        ("gw1 (127.0.0.1:8443)", "restarting"),
        ("gw2 (127.0.0.1:443)", "serving"),
    ]
    assert fleet[1].detail == "holds a restart slot since 2026-12-04T10:00:03Z"
    assert fleet[2].detail.endswith(", haproxy")  # how it took the certificate, when not by restart


def test_a_failure_recorded_before_the_rollout_began_is_waiting_not_failed() -> None:
    old = rec("gw1", "e", "fp-old", ok=False, error="boom").replace(b"10:00:05", b"09:00:05")
    new = rec("gw2", "e", "fp-old", ok=False, error="verify failed")
    fleet = _standing({"host.gw1.e": old, "host.gw2.e": new}, WANT, SINCE, [])
    assert [(g.state, g.detail) for g in fleet] == [
        ("waiting", "last deploy 2026-12-04T09:00:05+00:00"),
        ("failed", "verify failed"),
    ]


def test_an_unreadable_record_is_a_failed_gateway_named_by_its_object() -> None:
    fleet = _standing({"host.gw9.e": b"{not json"}, WANT, SINCE, [])
    assert fleet == [Gateway("host.gw9.e", "failed", "its record is unreadable")]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_count_is_rewritten_in_place_and_each_change_is_a_line_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    err = Tty()
    monkeypatch.setattr("sys.stderr", err)
    p = _Progress(None)
    a, b = "gw1 (e)", "gw2 (e)"
    p.show([Gateway(a, "restarting", "x"), Gateway(b, "waiting", "y")], 1.0)
    p.show([Gateway(a, "restarting", "x"), Gateway(b, "waiting", "y")], 2.0)
    p.show([Gateway(a, "serving", "z"), Gateway(b, "serving", "z")], 3.0)
    p.end()
    out = err.getvalue()
    assert out.count("\n") == 5  # four changes, and the end of the progress line
    assert out.count("rollout: gw1 (e): restarting (x)\n") == 1
    assert "\r\x1b[Krollout: 0/2 gateways serve the pool's certificate (2s)" in out
    assert out.endswith("\r\x1b[Krollout: 2/2 gateways serve the pool's certificate (3s)\n")


def test_off_a_terminal_each_line_is_said_once_and_the_count_only_when_it_changes() -> None:
    lines: list[str] = []
    p = _Progress(lines.append)
    p.show([Gateway("gw1 (e)", "waiting", "y")], 1.0)
    p.show([Gateway("gw1 (e)", "waiting", "y")], 2.0)
    p.show([Gateway("gw1 (e)", "serving", "z")], 3.0)
    p.end()
    assert lines == [
        "rollout: gw1 (e): waiting (y)",
        "rollout: 0/1 gateways serve the pool's certificate (1s)",
        "rollout: gw1 (e): serving (z)",
        "rollout: 1/1 gateways serve the pool's certificate (3s)",
    ]
