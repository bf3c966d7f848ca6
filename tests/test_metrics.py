"""The metric set: one owner per series, label values escaped, runs carried over."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rgwtls import metrics
from rgwtls.metrics import EVERY, FAMILIES
from rgwtls.status import HostFacts, PoolFacts, Report, Status

COMMANDS = ("issue", "issue-staging", "deploy", "check")
HOSTILE = 'we said "no" \\ to\nthis'


def facts(cls: type[Any], **extra: Any) -> Any:
    return cls(
        fingerprint="ab",
        serial="01",
        names=["example.org"],
        not_before="2026-01-01T00:00:00Z",
        not_after="2026-04-01T00:00:00Z",
        days_left=30.0,
        lifetime_days=90.0,
        **extra,
    )


def full_report(name: str = "example.org") -> Report:
    """Every side known: what an issuer host that is also a gateway sees."""
    pool = facts(PoolFacts, generation=2, issued_at="2026-01-01T00:00:00+00:00", issued_by="rgw0")
    st = Status(
        name,
        pool=pool,
        staging=facts(PoolFacts, generation=1),
        last_issue={"ok": False, "last_success": "2026-01-01T00:00:00", "last_failure": "2026-01-02T00:00:00"},
        deployed=facts(HostFacts, where="/etc/ceph/rgw.pem", matches_pool=True),
        served=facts(HostFacts, where="127.0.0.1:443", matches_pool=True),
        revocation_known=True,
    )
    return Report("rgw0", [st, Status("absent")], activations={"haproxy": 2})


def parse(text: str) -> list[Any]:
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def written(command: str, report: Report | None = None, previous: str = "") -> str:
    report = full_report() if report is None else report
    return metrics.render(metrics.samples(command, True, 0.1, report, 0 if command == "check" else None, previous))


def test_no_series_is_written_by_two_commands() -> None:
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
    for command in COMMANDS:
        for s in parse(written(command)):
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in seen, f"{key} written by {seen[key]} and {command}"
            seen[key] = command


def test_each_family_is_written_only_by_its_owner_with_its_declared_labels() -> None:
    by: dict[str, set[str]] = {}
    runs = [(c, ok) for c in COMMANDS for ok in (True, False)]
    for command, ok in runs:
        text = metrics.render(metrics.samples(command, ok, 0.1, full_report(), 0))
        for fam in text_string_to_metric_families(text):
            name = fam.name + "_total" if fam.type == "counter" else fam.name
            by.setdefault(name, set()).add(command)
            for s in fam.samples:
                assert set(s.labels) == set(FAMILIES[name].labels), (name, s.labels)
    for name, commands in by.items():
        owner = FAMILIES[name].owner
        assert commands == (set(COMMANDS) if owner == EVERY else set(owner.split("+"))), name
    assert set(by) == set(FAMILIES)


def test_what_could_not_be_read_is_left_out_not_written_as_zero() -> None:
    st = Status("example.org", unknown=["pool", "staging", "last_issue"])
    st.served = facts(HostFacts, where="127.0.0.1:443", matches_pool=None)
    report = Report("rgw0", [st], error="cannot connect to the Ceph cluster")
    deployed = parse(written("deploy", report))
    names = {s.name for s in deployed}
    assert "rgwtls_certificate_matches_pool" not in names
    assert "rgwtls_deployed_generation" not in names
    assert [s.value for s in deployed if s.name == "rgwtls_pool_up"] == [0]
    assert not {s.name for s in parse(written("issue", report))} & {
        "rgwtls_certificate_generation",
        "rgwtls_issue_last_attempt_success",
    }


def test_check_exports_revoked_as_one_and_leaves_out_a_certificate_whose_revocation_is_unknown() -> None:
    revoked = Status("a.example.org", pool=facts(PoolFacts), revoked="listed in its CA's CRL")
    good = Status("b.example.org", pool=facts(PoolFacts), revocation_known=True)
    unknown = Status("c.example.org", pool=facts(PoolFacts))
    samples = parse(written("check", Report("rgw0", [revoked, good, unknown])))
    found = {s.labels["certificate"]: s.value for s in samples if s.name == "rgwtls_certificate_revoked"}
    assert found == {"a.example.org": 1, "b.example.org": 0}


@pytest.mark.parametrize("command", COMMANDS)
def test_hostile_label_values_read_back_by_prometheus_client(command: str) -> None:
    report = full_report(HOSTILE)
    got = {s.labels["certificate"] for s in parse(written(command, report)) if "certificate" in s.labels}
    assert got <= {HOSTILE, "absent"}
    if command not in ("check", "issue-staging"):  # these two write no certificate series
        assert HOSTILE in got


def test_label_escaping_follows_the_text_format() -> None:
    assert metrics.escape(HOSTILE) == 'we said \\"no\\" \\\\ to\\nthis'


def test_a_label_value_carries_no_control_byte_and_no_key_into_the_file() -> None:
    from tests.test_scrub import key_pem

    value = f"gw\x1b]0;owned\x07 {key_pem('ec-pkcs8')}"
    escaped = metrics.escape(value)
    assert "\x1b" not in escaped
    assert "\x07" not in escaped
    assert "PRIVATE KEY" not in escaped
    assert "[key removed]" in escaped


def test_runs_and_last_times_carry_over_from_the_previous_file(tmp_path: Path) -> None:
    started = time.monotonic()
    path = metrics.write(tmp_path, "deploy", True, started, full_report())
    first = {(s.name, s.labels.get("result")): s.value for s in parse(path.read_text())}
    metrics.write(tmp_path, "deploy", False, started, full_report())
    metrics.write(tmp_path, "deploy", True, started, full_report())
    last = {(s.name, s.labels.get("result")): s.value for s in parse(path.read_text())}
    assert last[("rgwtls_runs_total", "success")] == 2
    assert last[("rgwtls_runs_total", "failure")] == 1
    assert (
        last[("rgwtls_last_failure_timestamp_seconds", None)] >= first[("rgwtls_last_success_timestamp_seconds", None)]
    )
    assert last[("rgwtls_last_run_success", None)] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rgwtls_deploy.prom"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_a_family_has_one_help_and_type_whoever_writes_it() -> None:
    helps: dict[str, set[str]] = {}
    for command in COMMANDS:
        for line in written(command).splitlines():
            if line.startswith(("# HELP", "# TYPE")):
                kind, name, text = line[2:].split(" ", 2)
                helps.setdefault(f"{kind} {name}", set()).add(text)
    assert all(len(texts) == 1 for texts in helps.values()), helps


ROOT = Path(__file__).resolve().parent.parent
METRIC = re.compile(r"\brgwtls_[a-z_]+\b")


def written_names() -> set[str]:
    """Every series name the commands write, on a host where every side is known."""
    names = set()
    for command in COMMANDS:
        for ok in (True, False):
            text = metrics.render(metrics.samples(command, ok, 0.1, full_report(), 0))
            names |= {s.name for s in parse(text)}
    return names


def exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k in ("expr", "definition") and isinstance(v, str)]
        query = node.get("query")
        if isinstance(query, dict):
            found += exprs(query)
        elif isinstance(query, str) and "rgwtls_" in query:
            found.append(query)
        return found + [e for k, v in node.items() if k != "query" for e in exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in exprs(v)]
    return []


def test_the_grafana_dashboard_queries_only_what_the_commands_write() -> None:
    dash = json.loads((ROOT / "contrib" / "grafana-rgwtls.json").read_text())
    queries = exprs(dash)
    used = {m for q in queries for m in METRIC.findall(q)}
    assert used, queries
    assert used - written_names() == set()
    panels = {p["title"] for p in dash["panels"]}
    assert {"Days left, served, per gateway", "Served vs pool", "Issue attempts"} <= panels
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_the_documented_alerts_and_metric_table_match_what_the_commands_write() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    section = doc.split("## Metrics: `--textfile DIR`")[1].split("\n## ")[0]
    alerts = section.split("```yaml")[1].split("```")[0]
    assert set(METRIC.findall(alerts)) - written_names() == set()
    table = {m for line in section.splitlines() if line.startswith("| `") for m in METRIC.findall(line.split("|")[1])}
    assert table == set(FAMILIES)


def _plant_links(directory: Path, victim: Path, pids: range) -> list[Path]:
    """What a member of the textfile directory's group can do: links at every name the old code would open."""
    links = []
    for pid in pids:
        for name in (f".rgwtls_check.prom.{pid}.tmp", f".rgwtls_check.prom.rgwtls-{pid}"):
            link = directory / name
            link.symlink_to(victim)
            links.append(link)
    return links


def test_links_planted_at_the_temporary_names_are_never_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "root-only"
    victim.write_bytes(b"root's own bytes\n")
    victim.chmod(0o600)
    textfile = tmp_path / "textfile"
    textfile.mkdir(mode=0o775)
    monkeypatch.setattr(os, "getpid", lambda: 4242)  # the pid the links were planted for
    links = _plant_links(textfile, victim, range(4200, 4300))
    path = metrics.write(textfile, "check", True, time.monotonic(), full_report(), 0)
    assert victim.read_bytes() == b"root's own bytes\n"
    assert victim.stat().st_mode & 0o777 == 0o600
    assert all(link.is_symlink() for link in links)
    assert not path.is_symlink()
    assert path.stat().st_mode & 0o777 == 0o644
    assert [s.value for s in parse(path.read_text()) if s.name == "rgwtls_check_status"] == [0]
    assert sorted(p.name for p in textfile.iterdir() if not p.is_symlink()) == ["rgwtls_check.prom"]


def test_a_link_planted_at_the_prom_file_is_replaced_not_followed_nor_read(tmp_path: Path) -> None:
    victim = tmp_path / "root-only"
    victim.write_text('rgwtls_runs_total{command="check",result="success"} 31337\n')
    victim.chmod(0o600)
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    (textfile / "rgwtls_check.prom").symlink_to(victim)
    path = metrics.write(textfile, "check", True, time.monotonic(), full_report(), 0)
    assert victim.read_text() == 'rgwtls_runs_total{command="check",result="success"} 31337\n'
    assert not path.is_symlink()
    runs = [
        s.value for s in parse(path.read_text()) if s.name == "rgwtls_runs_total" and s.labels["result"] == "success"
    ]
    assert runs == [1]  # nothing carried over from the link's target
