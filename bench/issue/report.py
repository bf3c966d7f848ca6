"""The issue benchmark's report: the Markdown section of docs/performance.md, and the text of a new one."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.harness import ROOT, median
from bench.issue.profiling import (
    M_DNS,
    M_IMPORTS,
    M_ISSUE,
    M_KEYLOAD_CALLS,
    M_KEYLOADS,
    M_MAIN,
    M_SLEEP,
    M_SLEEPS,
    RGWTLS_STEPS,
)
from bench.issue.rgwtls import Rgwtls
from bench.issue.rounds import Bench
from devsite.pebble import pebble_version

COMMAND = ".venv/bin/python -m bench.issue_bench"
# Targets for the median wall time of `rgwtls issue --force`.
TARGET_VS_CERTBOT = 0.25
TARGET_VS_DEHYDRATED = 0.1
# All tools get the key rgwtls makes by default (acme.key_type = "rsa2048"),
# so that none of them pays for a bigger or cheaper key than the others.
KEY_NOTE = "RSA 2048 certificate key for every tool"


def _version(argv: list[str], pick: str = "") -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "?"
    lines = (res.stdout + res.stderr).splitlines()
    for line in lines:
        if pick in line:
            return line.replace(pick, "").strip() if pick else line.strip()
    return "?"


def versions(bench: Bench) -> dict[str, str]:
    def pkg(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "?"

    git = _version(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
    peb = bench.stack.pebble.binary
    return {
        "rgwtls": f"{pkg('rgwtls')} (git {git}, src/ sha256 {src_fingerprint()}), acme {pkg('acme')}, "
        f"Python {platform.python_version()}",
        "certbot": _version([bench.cb.exe, "--version"]),
        "dehydrated": _version([bench.dh.exe, "--version"], "Dehydrated version:")
        + f", {_version(['curl', '--version']).split(' (')[0]}",
        "pebble": f"pebble {pebble_version(peb)} ({peb.relative_to(ROOT)}), Debian sid's package, "
        "fetched and unpacked by scripts/setup",
        "BIND": _version(["named", "-v"]),
        "nsupdate": "from " + _version(["dpkg-query", "-W", "-f", "${Package} ${Version}\n", "bind9-dnsutils"]),
    }


def src_fingerprint() -> str:
    """What rgwtls code ran: a hash over src/ (git describe says only "dirty")."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "src").rglob("*.py")):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f"{kib / 1024 / 1024:.0f} GiB"
    return f"{os.cpu_count()} cores ({model}), {mem} RAM, Linux {platform.release()}"


def fmt_ratio(r: float, target: float) -> str:
    return f"{r:.2f}x ({'meets' if r <= target else 'misses'} <= {target:g}x)"


def results_table(bench: Bench) -> str:
    cb = median([s.wall for s in bench.samples["certbot"]])
    dh = median([s.wall for s in bench.samples["dehydrated"]])
    rows = [
        "| tool | runs | median s | min s | max s | CPU s (median) | peak RSS MiB (median) "
        "| vs certbot | vs dehydrated |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for tool in bench.tools:
        ss = bench.samples[tool.key]
        walls = [s.wall for s in ss]
        m = median(walls)
        if isinstance(tool, Rgwtls) and tool.force:
            vs_cb, vs_dh = fmt_ratio(m / cb, TARGET_VS_CERTBOT), fmt_ratio(m / dh, TARGET_VS_DEHYDRATED)
        else:
            vs_cb, vs_dh = f"{m / cb:.2f}x", f"{m / dh:.2f}x"
        rows.append(
            f"| {tool.label} | {len(ss)} | {m:.3f} | {min(walls):.3f} | {max(walls):.3f} "
            f"| {median([s.cpu for s in ss]):.3f} | {median([s.maxrss_kib / 1024 for s in ss]):.0f} "
            f"| {vs_cb} | {vs_dh} |"
        )
    return "\n".join(rows)


def raw_table(bench: Bench) -> str:
    rows = [
        "| tool | " + " | ".join(f"run {i + 1}" for i in range(bench.runs)) + " | median |",
        "|---|" + "---:|" * (bench.runs + 1),
    ]
    for tool in bench.tools:
        ss = sorted(bench.samples[tool.key], key=lambda s: s.round)
        rows.append(
            f"| {tool.key} | " + " | ".join(f"{s.wall:.3f}" for s in ss) + f" | {median([s.wall for s in ss]):.3f} |"
        )
    return "\n".join(rows)


def _cell(vals: Sequence[float], fmt: str = "{:.3f}") -> str:
    return fmt.format(median(vals)) if vals else "-"


def overview_table(bench: Bench) -> str:
    """Per tool: the median timed wall time, split by the profiling runs' medians."""
    keys = [t.key for t in bench.tools if t.key in bench.profiles]
    head = "| s (medians) | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys)
    rows: dict[str, list[str]] = {}
    for key in keys:
        profs = bench.profiles[key]
        wall = median([s.wall for s in bench.samples[key]])
        sleep = median([p.get(M_SLEEP, 0.0) for p in profs])
        calls = median([p.get(M_SLEEPS, 0.0) for p in profs])
        dns = median([p.get(M_DNS, 0.0) for p in profs])
        start = imports = 0.0
        if M_IMPORTS in profs[0]:
            base = bench.baseline["certbot" if key == "certbot" else "rgwtls"]
            start = median([b[0] for b in base])
            imports = median([p[M_IMPORTS] for p in profs]) - median([b[1] for b in base])
        rest = wall - sleep - dns - start - imports
        cells = {
            "wall time of the timed runs": f"**{wall:.3f}**",
            "fixed waits (`sleep`)": f"{sleep:.3f} ({calls:.0f} calls)",
            "DNS: publish + remove the 2 values": f"{dns:.3f}" if dns else "-",
            "Python start-up (bare interpreter)": f"{start:.3f}" if start else "-",
            "imports (beyond the bare interpreter's)": f"{imports:.3f}" if start else "-",
            "the rest: ACME requests, crypto, Ceph, files, processes": f"{rest:.3f}",
        }
        for row, cell in cells.items():
            rows.setdefault(row, []).append(cell)
    return head + "\n" + "\n".join(f"| {row} | " + " | ".join(cells) + " |" for row, cells in rows.items())


def rgwtls_steps_table(bench: Bench) -> str:
    keys = [t.key for t in bench.tools if isinstance(t, Rgwtls) and t.key in bench.profiles]
    if not keys:
        return ""
    profs = {k: bench.profiles[k] for k in keys}
    head = "| s (medians, under cProfile) | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys)
    lines = [head]

    def row(label: str, get: Any, fmt: str = "{:.3f}") -> None:
        lines.append(f"| {label} | " + " | ".join(_cell([get(p) for p in profs[k]], fmt) for k in keys) + " |")

    for label, _, _ in RGWTLS_STEPS:
        row(label, lambda p, label=label: p.get(label, 0.0))
    row("the rest of `issue()`", lambda p: p[M_ISSUE] - sum(p.get(s[0], 0.0) for s in RGWTLS_STEPS))
    row("**`issue()`**", lambda p: p[M_ISSUE])
    row("outside `issue()`: CLI, config, exit", lambda p: p[M_MAIN] - p[M_ISSUE])
    row("**the whole CLI (modules imported beforehand)**", lambda p: p[M_MAIN])
    row("of which: private keys loaded from PEM (account key, new key)", lambda p: p[M_KEYLOADS])
    row("of which: private key PEM loads (calls)", lambda p: p[M_KEYLOAD_CALLS], "{:.0f}")
    row("of which: `time.sleep`", lambda p: p[M_SLEEP])
    row("of which: `time.sleep` calls", lambda p: p[M_SLEEPS], "{:.0f}")
    return "\n".join(lines)


def profile_section(bench: Bench) -> str:
    if not bench.profiles:
        return ""
    return "\n".join(
        [
            "### Where the time goes",
            "",
            f"From {bench.profile_runs} untimed profiling round(s) after the timed ones. Fixed waits: "
            "cProfile's `time.sleep` for rgwtls and certbot, a `sleep` shim first in `PATH` for "
            "dehydrated. DNS: for the three hook users the hook's own time (a wrapper times each "
            "call), for rfc2136 and infoblox the back end's calls under cProfile. Start-up: "
            "`python -X importtime -c pass` (rgwtls's venv Python, certbot's /usr/bin/python3); imports: "
            "the sum of a real run's top-level `-X importtime` entries minus the bare interpreter's. "
            "The rest is the median wall time minus all of these.",
            "",
            overview_table(bench),
            "",
            "The steps of `rgwtls issue` under cProfile, with every rgwtls module imported before "
            "profiling starts (so that no row holds import time; cProfile slows Python code down, "
            "so compare rows rather than add them to the timed numbers):",
            "",
            rgwtls_steps_table(bench),
        ]
    )


def section(bench: Bench, when: dt.datetime, vers: dict[str, str], took: float) -> str:
    s = bench.stack.settings()
    acme, dns = s["acme"], s["dns"]
    walls = {k: median([x.wall for x in v]) for k, v in bench.samples.items()}
    best = min(walls[f"rgwtls-{p}"] for p in ("hook", "rfc2136", "infoblox"))
    verdicts = []
    for p in ("hook", "rfc2136", "infoblox"):
        r_cb, r_dh = walls[f"rgwtls-{p}"] / walls["certbot"], walls[f"rgwtls-{p}"] / walls["dehydrated"]
        verdicts.append(
            f"`{p}` {r_cb:.2f}x certbot ({'met' if r_cb <= TARGET_VS_CERTBOT else 'missed'}), "
            f"{r_dh:.2f}x dehydrated ({'met' if r_dh <= TARGET_VS_DEHYDRATED else 'missed'})"
        )
    parts = [
        "## issue: rgwtls vs certbot vs dehydrated",
        "",
        f"Measured {when:%Y-%m-%d %H:%M} UTC on {machine()}; {bench.runs} timed runs per tool, "
        f"interleaved round-robin (the order rotating each round); the whole benchmark took {took:.0f} s. "
        f"Rerun: `{COMMAND}` (`--runs N`, default 7).",
        "",
        "Every run issues one certificate for `cog.example.org` and `*.cog.example.org` from the same "
        "Pebble, validating against the same BIND; it counts only if the tool exited 0, a new "
        "certificate for exactly these names whose key matches was stored, and no challenge record "
        "was left. Wall time is `time.perf_counter` around the child (started through GNU "
        "`time`, which adds about a millisecond to every tool alike); CPU (user + system, child "
        "processes included) comes from `os.wait4`, peak RSS (the largest single process of the tree) "
        "from GNU `time`'s `%M`.",
        "",
        results_table(bench),
        "",
        f"Targets (median wall time of `rgwtls issue --force`): at most {TARGET_VS_CERTBOT:g}x certbot and "
        f"at most {TARGET_VS_DEHYDRATED:g}x dehydrated: " + "; ".join(verdicts) + ". "
        f"Fastest rgwtls back end: {best:.3f} s. "
        "Reference numbers measured earlier on this machine: a plain acme-library flow with 0.2 s "
        "polling 0.34 s, certbot 2.74 s, dehydrated 7.96 s (medians).",
        "",
        "Raw medians (s): " + ", ".join(f"{k} {v:.3f}" for k, v in walls.items()),
        "",
        "### Set-up",
        "",
        *(f"- {k}: {v}" for k, v in vers.items()),
        "- rgwtls config as the tests make it (devsite/site.py): "
        f"`acme.poll_interval = {acme['poll_interval']}` "
        f"(the shipped default is 1), `acme.retry_backoff = {acme['retry_backoff']}`, "
        f"`dns.propagation_interval = {dns['propagation_interval']}` (default 5), "
        f"`dns.query_timeout = {dns['query_timeout']}`; `ceph.timeout = {s['ceph']['timeout']}`.",
        "- certbot waits a fixed 1 s before its first authorization poll and 1 s before each order "
        "poll after finalizing (acme 2.1's `finalize_order`); neither can be configured.",
        "- dehydrated sleeps 1 s between polls of a challenge and 2 s between polls of a "
        "processing order; neither can be configured.",
        f"- Pebble {pebble_version(bench.stack.pebble.binary)} (Debian sid's 2.10, as the tests use; the "
        "figures before 2026-11-26 used bookworm's 2.4): `PEBBLE_VA_NOSLEEP=1` (validates at once), "
        "`PEBBLE_AUTHZREUSE=0` (every order needs both challenges), one profile (`classic`, 90 days, so "
        "every order gets the same), ARI in its directory (`--force` runs do not ask it; the no-op run "
        "does, a request it could not make against 2.4), and `PEBBLE_WFE_NONCEREJECT=0`: with Pebble's default "
        "of rejecting 5% of nonces, dehydrated (which does not retry a badNonce) fails most runs, "
        "and retries would blur the timings.",
        f"- {KEY_NOTE}: rgwtls's default `rsa2048`, certbot `--key-type rsa --rsa-key-size 2048`, "
        "dehydrated `KEY_ALGO=rsa`, `KEYSIZE=2048`.",
        "- The `hook` back end, certbot (through two one-line wrappers that pass `$CERTBOT_DOMAIN` and "
        "`$CERTBOT_VALIDATION` on) and dehydrated call one and the same hook script, which publishes "
        "and removes each value with `nsupdate` (TSIG) against the BIND.",
        "- Accounts: certbot `register` and dehydrated `--register --accept-terms` once, then one "
        "untimed issuance per tool (rgwtls's first run creates its account key in the pool); none "
        "of this is timed. rgwtls still sends newAccount (answered with the existing account) in "
        "every run, as it does in production.",
        "- The no-op row is `rgwtls issue` with a stored certificate that is not due (infoblox config).",
        "- Every issuing run must make Pebble validate 2 challenges and issue 1 certificate. "
        "A run in which Pebble handed back a valid authorization (Pebble 2.4 did so 1% of the time "
        "even with `PEBBLE_AUTHZREUSE=0`) solved one challenge only, so it would not count and "
        f"would be made again: {len(bench.redone)} time(s) in this benchmark"
        + (f" ({'; '.join(bench.redone)})" if bench.redone else "")
        + ".",
        "",
        "### Runs (wall seconds, by round)",
        "",
        raw_table(bench),
    ]
    prof = profile_section(bench)
    if prof:
        parts += ["", prof]
    return "\n".join(parts).rstrip() + "\n"


def intro() -> str:
    return f"""# Performance

Measurements of rgwtls against the tools it replaces, on a real local stack
(Pebble, BIND 9, Ceph and the Infoblox WAPI emulator from `devsite`, all on
127.0.0.1), taken on a {os.cpu_count()}-core virtual machine. Each section says what it
measures and how to rerun it; rerunning rewrites only that section (the text
between its `<!-- ...:start -->` and `<!-- ...:end -->` markers).

The machine is shared and small: the stack's daemons run beside the tools, and
the medians of sub-second runs moved by up to about 15% between two runs of
the same benchmark. Ratios close to a target can land on either side of it.

Rerun the `issue` benchmark from the repository root with:

```sh
{COMMAND}            # --runs N, default 7
```
"""
