"""check's output by the Nagios plugin guidelines: a short first line, long output and perfdata."""

from __future__ import annotations

import re
import threading
import time

import pytest

from rgwtls.check import CRITICAL, OK, WARNING, Threshold, ceph_timeout, judge, since_start, within
from rgwtls.status import PoolFacts, Report, Status

W, C = Threshold.parse("20%", "w"), Threshold.parse("10%", "c")


def pool(days_left: float, lifetime: float = 90.0) -> PoolFacts:
    return PoolFacts(
        fingerprint="ab",
        serial="01",
        names=["example.org"],
        not_before="2026-01-01T00:00:00Z",
        not_after="2026-04-01T00:00:00Z",
        days_left=days_left,
        lifetime_days=lifetime,
        generation=3,
        issued_at="2026-01-01T00:00:00+00:00",
        issued_by="rgw0",
    )


def fleet(n: int) -> list[Status]:
    """`n` certificates: most good, two near their end, one whose issuer failed, one never issued."""
    certs = [Status(f"c{i:03d}.example.org", pool=pool(30.0 + i % 40)) for i in range(n)]
    certs[10] = Status("c010.example.org", pool=pool(12.0))  # WARNING at a fifth of 90 days
    certs[20] = Status("c020.example.org", pool=pool(5.0))  # CRITICAL at a tenth
    certs[30] = Status(
        "c030.example.org",
        pool=pool(40.0),
        last_issue={"ok": False, "at": "2026-02-01T03:00:00", "host": "rgw0", "error": "ACME: " + "x" * 400},
    )
    certs[40] = Status("c040.example.org")  # nothing in the pool
    return certs


def test_one_certificate_is_one_line_with_its_perfdata_as_before() -> None:
    state, out = judge(Report("rgw1", [Status("cog.example.org", pool=pool(30.0))]), W, C, 3600)
    assert state == OK
    assert out == (
        "RGWTLS OK - cog.example.org: pool certificate good for 30.0 days"
        " | 'cog.example.org days_left'=30.00;18.00;9.00;0;90.00"
    )


def test_up_to_three_certificates_stay_one_line_with_problems_first() -> None:
    certs = [Status("a.example.org", pool=pool(30.0)), Status("b.example.org", pool=pool(5.0))]
    state, out = judge(Report("rgw1", certs), W, C, 3600)
    assert state == CRITICAL
    assert "\n" not in out
    assert out.startswith(
        "RGWTLS CRITICAL - b.example.org: the pool certificate expires in 5.0 days; "
        "a.example.org: pool certificate good for 30.0 days | "
    )


def test_a_hundred_certificates_give_a_short_first_line_naming_the_worst_three() -> None:
    state, out = judge(Report("rgw1", fleet(100)), W, C, 3600)
    assert state == CRITICAL
    first, *long_output = out.split("\n")
    assert len(first) < 200, first
    status, perf = first.split(" | ")
    # CRITICAL ones first, the soonest to end before the others; then the count of the rest.
    assert status == (
        "RGWTLS CRITICAL - c040.example.org: not in the pool; c020.example.org: expires in 5.0 days; "
        "c030.example.org: the last issue failed; and 97 more"
    )
    assert perf == "certificates=100;;;0 critical=3;;;0 warning=1;;;0"
    # The long output: every certificate's full detail, the failed issue's whole error included.
    text = [line.split(" | ")[0] for line in long_output if not line.startswith("'")]
    assert len(text) == 101  # one text each, and c030 has two: its failed issue and its expiry
    assert {line.split(":")[0] for line in text} == {f"c{i:03d}.example.org" for i in range(100)}
    assert any("x" * 400 in line for line in text)
    assert text.index("c010.example.org: the pool certificate expires in 12.0 days") < text.index(
        "c000.example.org: pool certificate good for 30.0 days"
    )


def test_a_hundred_certificates_carry_every_perfdata_after_a_bar_in_the_long_output() -> None:
    _, out = judge(Report("rgw1", fleet(100)), W, C, 3600)
    lines = out.split("\n")
    bars = [i for i, line in enumerate(lines) if " | " in line]
    assert bars[0] == 0
    assert len(bars) == 2  # the first line's, and the one starting the long output's perfdata
    start = bars[1]
    perf = [lines[start].split(" | ", 1)[1], *lines[start + 1 :]]
    labels = [re.match(r"'([^']+) days_left'=[\d.]+;[\d.]+;[\d.]+;0;[\d.]+$", p) for p in perf]
    assert all(labels), perf
    # Every certificate with a certificate has its perfdata, once; the one never issued has none.
    assert sorted(m.group(1) for m in labels if m) == sorted(f"c{i:03d}.example.org" for i in range(100) if i != 40)


def test_all_good_many_certificates_are_ok_and_name_the_soonest_to_end() -> None:
    certs = [Status(f"c{i}.example.org", pool=pool(60.0 - i)) for i in range(10)]
    state, out = judge(Report("rgw1", certs), W, C, 3600)
    assert state == OK
    assert out.split("\n")[0] == (
        "RGWTLS OK - c9.example.org: good for 51.0 days; c8.example.org: good for 52.0 days; "
        "c7.example.org: good for 53.0 days; and 7 more | certificates=10;;;0 critical=0;;;0 warning=0;;;0"
    )


def test_long_names_make_the_first_line_name_fewer_certificates_not_grow() -> None:
    certs = [Status(f"{'n' * 60}{i}.example.org", pool=pool(5.0 + i)) for i in range(5)]
    state, out = judge(Report("rgw1", certs), W, C, 3600)
    first = out.split("\n")[0]
    assert state == CRITICAL
    assert len(first) < 200, first
    assert "and 3 more" in first or "and 4 more" in first


def test_a_revoked_certificate_is_critical_with_revoked_in_the_first_line_before_anything_else() -> None:
    st = Status("cog.example.org", pool=pool(30.0), revoked="listed in its CA's CRL http://ca.example/1.crl")
    st.last_issue = {"ok": False, "at": "2026-02-01T03:00:00", "host": "rgw0", "error": "ACME: down"}
    state, out = judge(Report("rgw1", [st]), W, C, 3600)
    assert state == CRITICAL
    assert out.startswith("RGWTLS CRITICAL - cog.example.org: the pool certificate is revoked: listed in its CA's CRL")
    many = [Status(f"c{i}.example.org", pool=pool(30.0)) for i in range(5)] + [st]
    first = judge(Report("rgw1", many), W, C, 3600)[1].split("\n")[0]
    assert first.startswith("RGWTLS CRITICAL - cog.example.org: revoked, the last issue failed; ")


def test_the_cas_renewal_window_begun_is_a_warning() -> None:
    st = Status("cog.example.org", pool=pool(60.0), renew_now="its renewal window (ARI) began at 2026-02-01 00:00 UTC")
    state, out = judge(Report("rgw1", [st]), W, C, 3600)
    assert state == WARNING
    assert out.startswith("RGWTLS WARNING - cog.example.org: the CA asks for renewal now: its renewal window (ARI)")


def test_a_crl_that_could_not_be_fetched_is_a_note_and_one_that_does_not_verify_a_warning() -> None:
    down = Status("cog.example.org", pool=pool(60.0), revocation_notes=["the CRL http://x/1.crl could not be fetched"])
    state, out = judge(Report("rgw1", [down]), W, C, 3600)
    assert state == OK
    assert "could not be fetched" in out
    bad = Status("cog.example.org", pool=pool(60.0), revocation_warnings=["the CRL http://x/1.crl does not verify"])
    assert judge(Report("rgw1", [bad]), W, C, 3600)[0] == WARNING


def test_within_gives_back_what_the_work_returned() -> None:
    assert within(5.0, lambda: (OK, "fine")) == (True, (OK, "fine"))


def test_within_raises_what_the_work_raised() -> None:
    def broken() -> None:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        within(5.0, broken)


def test_within_gives_up_at_its_deadline_while_the_work_still_hangs() -> None:
    release = threading.Event()
    started = time.monotonic()
    try:
        assert within(0.3, lambda: release.wait(30)) == (False, None)
        assert time.monotonic() - started < 2.0
    finally:
        release.set()


def test_within_counts_from_the_process_start_and_cuts_the_ceph_timeout_to_half_of_it() -> None:
    assert 0.0 <= since_start() < 24 * 3600
    assert ceph_timeout(10.0, 8.0) == 4.0
    assert ceph_timeout(3.0, 8.0) == 3.0
    assert ceph_timeout(10.0, 1.0) == 1.0


def test_what_the_pool_says_reaches_the_plugins_output_escaped() -> None:
    st = Status("cog.example.org", pool=pool(5.0))
    st.last_issue = {"ok": False, "at": "2026-02-01T03:00:00", "host": "rgw0", "error": "ACME: \x1b]0;owned\x07 down"}
    out = judge(Report("rgw1", [st]), W, C, 3600)[1]
    assert "\x1b" not in out
    assert "\x07" not in out
