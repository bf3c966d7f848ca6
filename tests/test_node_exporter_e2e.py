"""What a real node_exporter makes of the metrics of an issuer host.

issue, deploy and check write into one textfile directory, in the order an
issuer host runs them, and Debian's node_exporter (only the textfile
collector) is scraped after each: every rgwtls series is there once, with the
current values, and its gathering-error counter stays 0.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devsite.gateway import Gateway
from devsite.node_exporter import NodeExporter, node_exporter
from rgwtls.metrics import FAMILIES
from tests.conftest import ZONE, Stack, run_cli

OK, CRITICAL = 0, 2


@pytest.fixture
def textfile(tmp_path: Path) -> Path:
    d = tmp_path / "textfile"
    d.mkdir()
    return d


@pytest.fixture
def exporter(textfile: Path, tmp_path: Path) -> Iterator[NodeExporter]:
    workdir = tmp_path / "node_exporter"
    workdir.mkdir()
    with node_exporter(textfile, workdir) as ne:
        yield ne


class Scrape:
    """One scrape, parsed as Prometheus parses it."""

    def __init__(self, ne: NodeExporter) -> None:
        self.text = ne.scrape()
        self.samples: list[Any] = [s for f in text_string_to_metric_families(self.text) for s in f.samples]
        self.log = ne.log_tail()

    def get(self, name: str, **labels: str) -> list[float]:
        return [
            float(s.value)
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def one(self, name: str, **labels: str) -> float:
        found = self.get(name, **labels)
        assert len(found) == 1, (name, labels, found, self.log)
        return found[0]

    def rgwtls_series(self) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
        return [(s.name, tuple(sorted(s.labels.items()))) for s in self.samples if s.name.startswith("rgwtls_")]

    def assert_clean(self) -> None:
        """No gathering error so far, no unreadable file, and no series twice."""
        assert self.one("promhttp_metric_handler_errors_total", cause="gathering") == 0, self.log
        assert self.one("node_textfile_scrape_error") == 0, self.log
        series = self.rgwtls_series()
        assert len(series) == len(set(series))


def cli(config: Path, *args: str, textfile: Path) -> int:
    res = run_cli(config, *args, "--textfile", str(textfile))
    assert "could not write the metrics" not in res.stderr, res.stderr
    return res.code


def test_an_issuer_hosts_commands_share_one_directory_without_a_gathering_error(
    stack: Stack, gateway: Gateway, textfile: Path, exporter: NodeExporter
) -> None:
    issuer = stack.write_config(stack.settings(), "issuer.toml")
    gw = gateway.config()

    assert cli(issuer, "issue", textfile=textfile) == 0
    Scrape(exporter).assert_clean()
    assert cli(gw, "deploy", textfile=textfile) == 0
    Scrape(exporter).assert_clean()
    assert cli(gw, "check", textfile=textfile) == OK
    s = Scrape(exporter)
    s.assert_clean()
    now = time.time()
    assert s.one("rgwtls_certificate_generation", certificate=ZONE) == 1
    assert s.one("rgwtls_deployed_generation", certificate=ZONE) == 1
    for source in ("pool", "deployed", "served"):
        assert s.one("rgwtls_certificate_expiry_timestamp_seconds", certificate=ZONE, source=source) > now
    assert s.one("rgwtls_certificate_matches_pool", certificate=ZONE, source="served") == 1
    assert s.one("rgwtls_issue_last_attempt_success", certificate=ZONE) == 1
    assert s.one("rgwtls_check_status") == OK
    for command in ("issue", "deploy", "check"):
        assert s.one("rgwtls_last_run_success", command=command) == 1
        assert s.one("rgwtls_pool_up", command=command) == 1
        assert s.one("rgwtls_runs_total", command=command, result="success") == 1

    # A renewal: the scrape shows generation 2 everywhere, not a stale file's 1.
    assert cli(issuer, "issue", "--force", textfile=textfile) == 0
    s = Scrape(exporter)
    s.assert_clean()
    assert s.one("rgwtls_certificate_generation", certificate=ZONE) == 2
    assert s.one("rgwtls_deployed_generation", certificate=ZONE) == 1  # deploy has not run yet
    assert cli(gw, "deploy", textfile=textfile) == 0
    assert cli(gw, "check", textfile=textfile) == OK
    s = Scrape(exporter)
    s.assert_clean()
    assert s.one("rgwtls_deployed_generation", certificate=ZONE) == 2
    assert s.one("rgwtls_runs_total", command="deploy", result="success") == 2

    # A failed issue attempt: recorded in the pool, so every gateway's check sees it.
    stack.wapi.fail(503)
    assert cli(issuer, "issue", "--force", textfile=textfile) == 1
    stack.wapi.fail(None)
    assert cli(gw, "check", textfile=textfile) == CRITICAL
    s = Scrape(exporter)
    s.assert_clean()
    assert s.one("rgwtls_issue_last_attempt_success", certificate=ZONE) == 0
    assert s.one("rgwtls_issue_last_failure_timestamp_seconds", certificate=ZONE) >= s.one(
        "rgwtls_issue_last_success_timestamp_seconds", certificate=ZONE
    )
    assert s.one("rgwtls_last_run_success", command="issue") == 0
    assert s.one("rgwtls_runs_total", command="issue", result="failure") == 1
    assert s.one("rgwtls_certificate_generation", certificate=ZONE) == 2
    assert s.one("rgwtls_check_status") == CRITICAL
    # Every family rgwtls documents reached Prometheus.
    seen = {name.removesuffix("_total") for name, _ in s.rgwtls_series()}
    assert seen == {name.removesuffix("_total") for name in FAMILIES}


# A newline would be escaped as well, but a certificate name cannot hold one (config refuses it).
HOSTILE = 'we said "no" \\ to this'


def test_a_certificate_name_with_quote_and_backslash_reaches_prometheus_intact(
    stack: Stack, gateway: Gateway, textfile: Path, exporter: NodeExporter
) -> None:
    def with_hostile_name(settings: dict[str, Any], name: str) -> Path:
        settings["certificate"][0]["name"] = "HOSTILE"
        path = stack.write_config(settings, name)
        # TOML's basic string escapes, as an operator would write them.
        escaped = HOSTILE.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        path.write_text(path.read_text().replace('"HOSTILE"', f'"{escaped}"'))
        return path

    issuer = with_hostile_name(stack.settings(), "issuer.toml")
    gateway.config()
    gw = with_hostile_name(gateway.settings, "hostile-gateway.toml")
    assert cli(issuer, "issue", textfile=textfile) == 0
    assert cli(gw, "deploy", textfile=textfile) == 0
    s = Scrape(exporter)
    s.assert_clean()
    assert s.one("rgwtls_certificate_generation", certificate=HOSTILE) == 1
    assert s.one("rgwtls_deployed_generation", certificate=HOSTILE) == 1
    assert s.one("rgwtls_certificate_matches_pool", certificate=HOSTILE, source="served") == 1
