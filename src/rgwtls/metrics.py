"""Prometheus metrics for node_exporter's textfile collector.

`--textfile DIR` writes `DIR/rgwtls_<command>.prom` atomically (temporary file,
rename), so the collector never reads half a file. Each command writes its
own file; the last success and failure times of a command are carried over
from its previous file, since each run only knows its own outcome.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from pathlib import Path

from rgwtls.status import Report

_HELP = {
    "rgwtls_certificate_expiry_timestamp_seconds": "When the certificate expires, by where it was seen.",
    "rgwtls_certificate_generation": "The generation of the set in the pool.",
    "rgwtls_deployed_generation": "The pool generation this host serves, if it serves the pool's.",
    "rgwtls_certificate_matches_pool": "1 if the deployed or served certificate is the pool's.",
    "rgwtls_issue_last_success_timestamp_seconds": "When issue last succeeded for the certificate.",
    "rgwtls_issue_last_failure_timestamp_seconds": "When issue last failed for the certificate.",
    "rgwtls_last_success_timestamp_seconds": "When this command last succeeded on this host.",
    "rgwtls_last_failure_timestamp_seconds": "When this command last failed on this host.",
    "rgwtls_last_run_timestamp_seconds": "When this command last ran on this host.",
    "rgwtls_last_run_success": "1 if the last run of this command succeeded.",
    "rgwtls_last_run_duration_seconds": "How long the last run of this command took.",
    "rgwtls_pool_up": "1 if the pool could be read.",
    "rgwtls_check_status": "The last check's state: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
}


def _ts(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"'.replace("\\", "\\\\").replace("\n", " ") for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _previous(path: Path, name: str, command: str) -> float | None:
    """A value of our own previous file: carried over across runs."""
    try:
        text = path.read_text()
    except OSError:
        return None
    m = re.search(rf'^{name}\{{command="{command}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def write(
    directory: Path,
    command: str,
    ok: bool,
    started: float,
    report: Report | None,
    check_state: int | None = None,
) -> Path:
    path = directory / f"rgwtls_{command}.prom"
    now = time.time()
    samples: dict[str, list[tuple[str, float]]] = {k: [] for k in _HELP}

    def add(name: str, value: float | None, **labels: str) -> None:
        if value is not None:
            samples[name].append((_labels(**labels), value))

    last_ok = now if ok else _previous(path, "rgwtls_last_success_timestamp_seconds", command)
    last_fail = now if not ok else _previous(path, "rgwtls_last_failure_timestamp_seconds", command)
    add("rgwtls_last_success_timestamp_seconds", last_ok, command=command)
    add("rgwtls_last_failure_timestamp_seconds", last_fail, command=command)
    add("rgwtls_last_run_timestamp_seconds", now, command=command)
    add("rgwtls_last_run_success", 1.0 if ok else 0.0, command=command)
    add("rgwtls_last_run_duration_seconds", round(time.monotonic() - started, 3), command=command)
    add("rgwtls_check_status", None if check_state is None else float(check_state))
    if report is not None:
        add("rgwtls_pool_up", 0.0 if report.error else 1.0)
        for st in report.certificates:
            cert = st.name
            if st.pool is not None:
                add(
                    "rgwtls_certificate_expiry_timestamp_seconds",
                    _ts(st.pool.not_after),
                    certificate=cert,
                    source="pool",
                )
                add("rgwtls_certificate_generation", float(st.pool.generation), certificate=cert)
            if st.staging is not None:
                add(
                    "rgwtls_certificate_expiry_timestamp_seconds",
                    _ts(st.staging.not_after),
                    certificate=cert,
                    source="staging",
                )
            for source, facts in (("deployed", st.deployed), ("served", st.served)):
                if facts is None:
                    continue
                add(
                    "rgwtls_certificate_expiry_timestamp_seconds",
                    _ts(facts.not_after),
                    certificate=cert,
                    source=source,
                )
                add(
                    "rgwtls_certificate_matches_pool",
                    1.0 if facts.matches_pool else 0.0,
                    certificate=cert,
                    source=source,
                )
            if st.pool is not None and st.served is not None and st.served.matches_pool:
                add("rgwtls_deployed_generation", float(st.pool.generation), certificate=cert)
            li = st.last_issue or {}
            add("rgwtls_issue_last_success_timestamp_seconds", _ts(li.get("last_success")), certificate=cert)
            add("rgwtls_issue_last_failure_timestamp_seconds", _ts(li.get("last_failure")), certificate=cert)
    lines = []
    for name, values in samples.items():
        if not values:
            continue
        lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} gauge"]
        lines += [f"{name}{labels} {value:.17g}" for labels, value in values]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(0o644)
    os.replace(tmp, path)
    return path
