"""What the untimed profiling runs measure: cProfile's steps, `-X importtime`, the hook's own time."""

from __future__ import annotations

import pstats
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Metrics of the profiling runs.
M_SLEEP = "fixed waits (sleep)"
M_SLEEPS = "sleep calls"
M_DNS = "DNS: publish + remove the 2 values"
M_IMPORTS = "imports"
M_MAIN = "main() under cProfile"
M_ISSUE = "issue() under cProfile"
M_KEYLOADS = "private key loads"
M_KEYLOAD_CALLS = "private key load calls"

# (row, file, function): the steps of `rgwtls issue` in order, each the cumulative time of
# one function that none of the others calls. `file` matches the end of the path, or any
# path containing it if it ends in "/".
RGWTLS_STEPS: tuple[tuple[str, str, str], ...] = (
    ("Ceph: connect", "rgwtls/store/connection.py", "connect"),
    ("Ceph: issuer lock (take + release)", "rgwtls/store/locks.py", "issuer_lock"),
    ("Ceph: challenge journal check", "rgwtls/issue.py", "_clean_journal"),
    ("Ceph: read the current set", "rgwtls/store/sets.py", "read_set"),
    ("renewal decision (no-op: ACME directory + ARI)", "rgwtls/issue.py", "_decide"),
    ("ACME: account key, directory, newAccount", "rgwtls/issue.py", "registered"),
    ("new certificate key (RSA 2048)", "rgwtls/certs.py", "new_private_key"),
    ("CSR", "rgwtls/acmeflow.py", "make_csr"),
    ("ACME: new order + authorizations", "rgwtls/acmeflow.py", "new_order"),
    ("DNS: back end set-up", "rgwtls/dns/backends.py", "make_provider"),
    ("DNS: publish 2 values", "rgwtls/dns/", "present"),
    ("DNS: wait until the servers answer", "rgwtls/propagation.py", "wait_for_values"),
    ("ACME: answer challenges + poll authorizations", "rgwtls/acmeflow.py", "answer_and_wait"),
    ("ACME: finalize + poll order + download", "rgwtls/acmeflow.py", "finalize"),
    ("DNS: remove 2 values", "rgwtls/issue.py", "_cleanup"),
    ("check the new certificate", "rgwtls/issue.py", "_build_set"),
    ("Ceph: store the set (previous, current, legacy objects)", "rgwtls/store/sets.py", "write_set"),
)
CERTBOT_STEPS: tuple[tuple[str, str, str], ...] = (
    ("certbot: key generation", "certbot/crypto_util.py", "generate_key"),
)
_SLEEP = ("~", "<built-in method time.sleep>")


def profile_metrics(prof: Path, steps: Sequence[tuple[str, str, str]]) -> dict[str, float]:
    st = pstats.Stats(str(prof))
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = st.stats  # type: ignore[attr-defined]

    def cumulative(where: str, func: str) -> tuple[float, int]:
        ct, calls = 0.0, 0
        for (filename, _, name), (_, nc, _, fct, _) in raw.items():
            if name == func and (filename.endswith(where) or (where.endswith("/") and where in filename)):
                ct, calls = ct + fct, calls + nc
        return ct, calls

    out: dict[str, float] = {M_MAIN: float(st.total_tt)}  # type: ignore[attr-defined]
    for label, where, func in steps:
        out[label] = cumulative(where, func)[0]
    out[M_SLEEP], sleeps = cumulative(*_SLEEP)
    out[M_SLEEPS] = float(sleeps)
    if steps is RGWTLS_STEPS:
        out[M_ISSUE] = cumulative("rgwtls/issue.py", "issue")[0]
        loads = [v for (f, _, n), v in raw.items() if f == "~" and n.endswith("load_pem_private_key>")]
        out[M_KEYLOADS] = sum(v[3] for v in loads)
        out[M_KEYLOAD_CALLS] = float(sum(v[1] for v in loads))
        # The back ends' own calls: the hook wrapper times the hook's.
        out[M_DNS] = out["DNS: publish 2 values"] + out["DNS: remove 2 values"]
    return out


def import_seconds(stderr: Path) -> float:
    """The imports of one run, from its `-X importtime` lines: the sum over the top-level ones."""
    total_us = 0
    for line in stderr.read_text(errors="replace").splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        if parts[2].startswith(" ") and not parts[2].startswith("  "):
            total_us += int(parts[1])
    return total_us / 1e6


def hook_seconds(timing: Path) -> float:
    """The hook's own time for the deploy and clean calls, from the timing wrapper's log."""
    total = 0.0
    if timing.exists():
        for line in timing.read_text().splitlines():
            op, start, end = line.split()
            if op in ("deploy_challenge", "clean_challenge"):
                total += float(end) - float(start)
    return total
