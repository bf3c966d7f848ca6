"""Prometheus metrics for node_exporter's textfile collector.

`--textfile DIR` writes `DIR/rgwtls_<command>.prom` atomically, through
files.atomic_write (an unguessable temporary file opened O_EXCL|O_NOFOLLOW,
fsynced, renamed), so the collector never reads half a file and a link
planted in a shared directory is never written through.

One series, one owner: node_exporter merges every file of the directory into
one scrape, and a series found in two files is a gathering error on every
scrape (and the first file's value wins). So each command writes only what it
alone knows, and the facts of a run carry its `command` label:

- every command: its own run (`rgwtls_last_run_*`, `rgwtls_runs_total`,
  `rgwtls_pool_up`), labelled `command`;
- issue: the pool's side (generation, expiry of the production and staging
  sets, the last attempt recorded in the pool);
- deploy: this host's side (the deployed file and the served certificate,
  each compared with the pool);
- check: its verdict, and whether each certificate is revoked.

`issue --staging` writes `rgwtls_issue-staging.prom`: only its own run,
labelled `command="issue-staging"`, so that a staging run never overwrites
the production issuer's run figures, nor writes the pool's side twice.

A family written by several commands has one HELP and TYPE (`FAMILIES`), since
node_exporter also rejects a family whose HELP differs between files. What a
run cannot read is left out, never written as 0. The last success and failure
times and the run counters are carried over from the command's previous file,
since each run only knows its own outcome.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from rgwtls import files
from rgwtls.scrub import clean
from rgwtls.status import Report

EVERY = "every command"


@dataclass(frozen=True)
class Family:
    type: str
    help: str
    owner: str  # the command that writes it, or EVERY (then labelled `command`)
    labels: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {
    "rgwtls_last_run_timestamp_seconds": Family(
        "gauge", "When this command last ran on this host.", EVERY, ("command",)
    ),
    "rgwtls_last_run_success": Family("gauge", "1 if the last run of this command succeeded.", EVERY, ("command",)),
    "rgwtls_last_run_duration_seconds": Family(
        "gauge", "How long the last run of this command took.", EVERY, ("command",)
    ),
    "rgwtls_last_success_timestamp_seconds": Family(
        "gauge", "When this command last succeeded on this host.", EVERY, ("command",)
    ),
    "rgwtls_last_failure_timestamp_seconds": Family(
        "gauge", "When this command last failed on this host.", EVERY, ("command",)
    ),
    "rgwtls_runs_total": Family(
        "counter", "Runs of this command on this host, by result.", EVERY, ("command", "result")
    ),
    "rgwtls_pool_up": Family("gauge", "1 if this command's run could read the pool.", EVERY, ("command",)),
    "rgwtls_certificate_generation": Family(
        "gauge", "The generation of the production set in the pool.", "issue", ("certificate",)
    ),
    "rgwtls_certificate_issued_timestamp_seconds": Family(
        "gauge", "When the production set in the pool was issued.", "issue", ("certificate",)
    ),
    "rgwtls_certificate_expiry_timestamp_seconds": Family(
        "gauge",
        "When the certificate expires, by where it was seen: pool and staging (issue), deployed and served (deploy).",
        "issue+deploy",
        ("certificate", "source"),
    ),
    "rgwtls_issue_last_attempt_success": Family(
        "gauge", "1 if the last issue attempt recorded in the pool succeeded.", "issue", ("certificate",)
    ),
    "rgwtls_issue_last_success_timestamp_seconds": Family(
        "gauge", "When issue last succeeded for the certificate, from the pool's record.", "issue", ("certificate",)
    ),
    "rgwtls_issue_last_failure_timestamp_seconds": Family(
        "gauge", "When issue last failed for the certificate, from the pool's record.", "issue", ("certificate",)
    ),
    "rgwtls_certificate_matches_pool": Family(
        "gauge",
        "1 if the deployed file or the served certificate is the pool's production set.",
        "deploy",
        ("certificate", "source"),
    ),
    "rgwtls_deployed_generation": Family(
        "gauge", "The pool generation this host serves, when it serves the pool's set.", "deploy", ("certificate",)
    ),
    "rgwtls_activations_total": Family(
        "counter",
        "Verified activations of a new certificate on this host, by deploy.activate method "
        "(restart, haproxy, self, self-then-restart).",
        "deploy",
        ("method",),
    ),
    "rgwtls_check_status": Family("gauge", "The last check's state: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.", "check"),
    "rgwtls_certificate_revoked": Family(
        "gauge",
        "1 if the certificate this host serves (else the pool's) is revoked, by the pool's record or its CA's CRL.",
        "check",
        ("certificate",),
    ),
}

# Which `source` of the expiry each command owns.
_EXPIRY_SOURCES = {"issue": ("pool", "staging"), "deploy": ("deployed", "served")}


def _ts(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def escape(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped.

    Cleaned first (rgwtls.scrub), so that no label carries a control byte or a key into a scrape; the
    newline is the text format's own to escape, and reads back as one.
    """
    return clean(value, 200, newlines=True).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in sorted(labels.items())) + "}"


def _previous(text: str, name: str, **labels: str) -> float | None:
    """A value of our own previous file, found by its exact series: carried over across runs."""
    m = re.search(rf"^{re.escape(name + _labels(**labels))} (\S+)$", text, re.M)
    try:
        return float(m.group(1)) if m else None
    except ValueError:
        return None


def samples(
    command: str,
    ok: bool,
    duration: float,
    report: Report | None,
    check_state: int | None = None,
    previous: str = "",
    now: float | None = None,
) -> dict[str, list[tuple[str, float]]]:
    """What `command` writes: for each family it owns, its (labels, value) pairs."""
    now = time.time() if now is None else now
    out: dict[str, list[tuple[str, float]]] = {k: [] for k in FAMILIES}

    def add(name: str, value: float | None, **labels: str) -> None:
        if value is not None:
            out[name].append((_labels(**labels), value))

    def carried(name: str, **labels: str) -> float | None:
        return _previous(previous, name, command=command, **labels)

    run = {"command": command}
    add("rgwtls_last_run_timestamp_seconds", now, **run)
    add("rgwtls_last_run_success", 1.0 if ok else 0.0, **run)
    add("rgwtls_last_run_duration_seconds", round(duration, 3), **run)
    add("rgwtls_last_success_timestamp_seconds", now if ok else carried("rgwtls_last_success_timestamp_seconds"), **run)
    add("rgwtls_last_failure_timestamp_seconds", carried("rgwtls_last_failure_timestamp_seconds") if ok else now, **run)
    for result in ("success", "failure"):
        count = carried("rgwtls_runs_total", result=result) or 0.0
        add("rgwtls_runs_total", count + (1 if ok == (result == "success") else 0), result=result, **run)
    if report is not None:
        add("rgwtls_pool_up", 0.0 if report.error else 1.0, **run)
    if command == "deploy" and report is not None:
        for method, count in sorted(report.activations.items()):
            add("rgwtls_activations_total", float(count), method=method)
    if command == "check":
        add("rgwtls_check_status", None if check_state is None else float(check_state))
    for st in report.certificates if report is not None else []:
        cert = st.name
        if command == "issue":
            if st.pool is not None:
                add("rgwtls_certificate_generation", float(st.pool.generation), certificate=cert)
                add("rgwtls_certificate_issued_timestamp_seconds", _ts(st.pool.issued_at), certificate=cert)
            li = st.last_issue or {}
            if "ok" in li:
                add("rgwtls_issue_last_attempt_success", 1.0 if li["ok"] else 0.0, certificate=cert)
            add("rgwtls_issue_last_success_timestamp_seconds", _ts(li.get("last_success")), certificate=cert)
            add("rgwtls_issue_last_failure_timestamp_seconds", _ts(li.get("last_failure")), certificate=cert)
        sides = {"pool": st.pool, "staging": st.staging, "deployed": st.deployed, "served": st.served}
        for source in _EXPIRY_SOURCES.get(command, ()):
            facts = sides[source]
            if facts is None:
                continue
            add("rgwtls_certificate_expiry_timestamp_seconds", _ts(facts.not_after), certificate=cert, source=source)
            matches = getattr(facts, "matches_pool", None)
            if command == "deploy" and matches is not None:
                add("rgwtls_certificate_matches_pool", 1.0 if matches else 0.0, certificate=cert, source=source)
        if command == "check" and (st.revoked or st.revocation_known):
            add("rgwtls_certificate_revoked", 1.0 if st.revoked else 0.0, certificate=cert)
        if command == "deploy" and st.pool is not None and st.served is not None and st.served.matches_pool:
            add("rgwtls_deployed_generation", float(st.pool.generation), certificate=cert)
    return out


def render(values: dict[str, list[tuple[str, float]]]) -> str:
    lines = []
    for name, pairs in values.items():
        if not pairs:
            continue
        lines += [f"# HELP {name} {FAMILIES[name].help}", f"# TYPE {name} {FAMILIES[name].type}"]
        lines += [f"{name}{labels} {value:.17g}" for labels, value in pairs]
    return "\n".join(lines) + "\n"


def _read_previous(path: Path) -> str:
    """Our previous file, never through a link: a planted one must not carry a root-only file's numbers out."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(1 << 20).decode()
    except (OSError, UnicodeDecodeError):
        return ""
    finally:
        os.close(fd)


def write(
    directory: Path,
    command: str,
    ok: bool,
    started: float,
    report: Report | None,
    check_state: int | None = None,
) -> Path:
    """Replace DIR/rgwtls_COMMAND.prom whole, through files.atomic_write, the package's one writer of files.

    The directory is often group-writable (`root:ceph 0775`), and this runs
    as root: its temporary file must not be a name another user can plant a
    link at. A DeployError (the directory is missing, full, read-only) is
    reported by the CLI as a warning; the run's outcome stands.
    """
    path = directory / f"rgwtls_{command}.prom"
    previous = _read_previous(path)
    text = render(samples(command, ok, time.monotonic() - started, report, check_state, previous))
    files.atomic_write(path, text.encode(), files.Access(0o644, os.getuid(), os.getgid()))
    return path
