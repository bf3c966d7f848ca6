"""How rollout reads the fleet's records: who serves, who restarts, who failed, and how it says so."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from rgwtls import config, fleet
from rgwtls.fleet import Gateway, _Progress, _standing, parse
from rgwtls.store import Holder
from tests.test_config import MINIMAL, write

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


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"{not json", "it is not JSON"),
        (b"[" * 200_000, "it is not JSON"),  # deeper than the parser's recursion
        (b"\xff\xfe{}", "it is not UTF-8"),
        (b'["a list"]', "it is not a JSON object"),
        (b'{"host": 1, "endpoint": "e", "certificate": "cog"}', "its host is not a string"),
        (b'{"host": "h", "endpoint": "e", "certificate": "cog", "error": {"x": 1}}', "its error is neither"),
        (b'{"host": "h", "endpoint": "e", "certificate": "cog", "ok": "yes"}', "its ok is not true or false"),
    ],
)
def test_an_unusable_record_is_one_warning_naming_it_escaped_and_is_skipped(raw: bytes, why: str) -> None:
    warnings: list[str] = []
    good = rec("gw1", "e", "fp-new")
    fleet = _standing({"host.gw1.e": good, "host.gw9\x1b[2J.e": raw}, WANT, SINCE, [], warnings.append)
    assert fleet == [Gateway("gw1 (e)", "serving", "serves the pool's certificate since 2026-12-04T10:00:05+00:00")]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"rollout: skipped deploy/host.gw9\\x1b[2J.e: {why}")
    assert not CONTROL.search(warnings[0])


def test_a_hostile_records_fields_and_a_slot_holders_since_are_shown_escaped_and_bounded() -> None:
    """One record once put 8 ESC and 2 BEL bytes on the operator's terminal: the fields are shown escaped."""
    esc = "\x1b]0;owned\x07\x1b[2J\x1b[H"
    records = {
        "host.a": rec(f"gw{esc}", f"e{esc}", "fp-old", ok=False, error=f"boom{esc}" + "x" * 5000, at=f"9999{esc}"),
        "host.b": rec(f"gw2{esc}", "e", "fp-old"),
        "host.c": rec("gw3", "e", "fp-new", at=f"2026{esc}", activate=f"haproxy{esc}"),
    }
    slot = Holder(f"gw2{esc}", "boot", 42, 1, f"2026{esc}\u202e", "c0ffee", "other")
    lines: list[str] = []
    progress = _Progress(lines.append)
    fleet = _standing(records, WANT, SINCE, [slot])
    progress.show(fleet, 1.0)
    assert [g.state for g in fleet] == ["failed", "waiting", "serving"]
    for line in lines:
        assert not CONTROL.search(line), repr(line)
    assert "gw\\x1b]0;owned\\x07\\x1b[2J\\x1b[H (e\\x1b]0;owned" in lines[0]
    assert max(len(line) for line in lines) < 2500  # the error is bounded
    assert "more characters cut]" in lines[0]
    # The slot holder's record: its since as rollout shows it, and as the "no restart slot free" line has it.
    holding = Holder("gw2", "boot", 42, 1, f"2026{esc}\u202e", "c0ffee", "e")
    shown = _standing({"host.b": rec("gw2", "e", "fp-old")}, WANT, SINCE, [holding])
    assert shown[0].state == "restarting"
    assert not CONTROL.search(shown[0].detail)
    assert "2026\\x1b]0;owned" in shown[0].detail
    assert not CONTROL.search(slot.describe())
    assert "\\u202e" in slot.describe()


def test_a_slot_holder_record_that_is_not_json_or_has_a_pid_of_infinity_is_no_holder() -> None:
    assert Holder.from_bytes(b"\x1b]0;owned\x07") is None
    assert (
        Holder.from_bytes(b'{"host": "h", "boot_id": "b", "pid": Infinity, "start": 1, "since": "s", "cookie": "c"}')
        is None
    )


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


def test_a_gateway_bounds_and_cleans_the_record_it_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its error may quote what a socket answered: each field bounded, the whole a few KiB, far below MAX_OBJECT."""
    written: list[bytes] = []

    class FakePool:
        def __init__(self, cfg: object) -> None:
            pass

        def __enter__(self) -> FakePool:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def write(self, ns: str, obj: str, data: bytes) -> None:
            written.append(data)

    def unreachable(*args: object) -> str:
        raise OSError("no handshake")

    monkeypatch.setattr(fleet, "Pool", FakePool)
    monkeypatch.setattr(fleet, "served_fingerprint", unreachable)
    cfg = config.load(write(tmp_path, MINIMAL))
    fleet.record(cfg, False, "HAProxy refused: \x1b]0;owned\x07" + "y" * (1 << 20))
    doc = json.loads(written[0])
    assert len(written[0]) < 4096
    assert doc["error"].startswith("HAProxy refused: \\x1b]0;owned\\x07yyy")
    assert doc["error"].endswith("more characters cut]")
    assert parse(written[0]) == {
        k: doc.get(k) for k in ("host", "endpoint", "certificate", "served", "error", "at", "activate", "ok")
    }
