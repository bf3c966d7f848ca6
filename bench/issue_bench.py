"""`rgwtls issue` against certbot and dehydrated: one wildcard + apex certificate, same CA, same DNS.

Run from the repository root:

    .venv/bin/python -m bench.issue_bench [--runs N]

The benchmark starts its own stack from devsite, all on 127.0.0.1: one
Pebble validating against one BIND, a Ceph cluster with the `rgwtls` pool, and
the Infoblox WAPI emulator writing into that BIND. Every tool issues one
certificate for `cog.example.org` and `*.cog.example.org` from that Pebble:

- `rgwtls issue --force` with the `hook`, `rfc2136` and `infoblox` back ends,
  and `rgwtls issue` when nothing is due (the daily cron no-op);
- `certbot certonly --manual` with an auth and a cleanup hook;
- `dehydrated -c --force` with a hook.

rgwtls's `hook` back end, certbot and dehydrated publish through one and the
same script, the nsupdate hook of tests/test_issue_e2e.py.

Registration and a first issuance are done once per tool before any run is
timed (a warm-up round). The timed runs are interleaved round-robin, the
order rotating each round. A run counts only when the tool exited 0, a new
certificate for exactly the two names is stored (a new pool generation for
rgwtls, a new serial in the tool's files for the others) whose key matches,
the hook was called for both values, Pebble validated two challenges and
issued one certificate, and no challenge record is left in DNS; anything else
aborts the benchmark. (One exception: when Pebble hands back a still valid
authorization, the run solved one challenge only; it is not timed and is made
again. See `AuthzReused`.)

Each run's wall time is taken with time.perf_counter around the child; its
CPU time (user + system, children included) comes from os.wait4, its peak
RSS (the largest single process of its tree) from GNU time (see `bench.harness.measure`).

After the timed runs, untimed profiling runs show where each tool spends its
time: cProfile and `-X importtime` for rgwtls and certbot, a `sleep` shim for
dehydrated, and a timing wrapper around the shared hook for all three hook
users.

The results are printed as Markdown and written into docs/performance.md,
between the `<!-- issue-bench:start -->` and `<!-- issue-bench:end -->` markers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.harness import DOCS, ROOT, BenchError, compile_sources, say, update_docs
from bench.issue.report import COMMAND, intro, section, src_fingerprint, versions
from bench.issue.rounds import Bench, started_stack


def main(argv: Sequence[str] | None = None) -> int:
    compile_sources()
    parser = argparse.ArgumentParser(prog="python -m bench.issue_bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--runs", type=int, default=7, help="timed runs per tool (default 7, at least 5 to write the docs)"
    )
    parser.add_argument("--profile-runs", type=int, default=3, help="untimed profiling runs per tool (0: none)")
    parser.add_argument("--no-docs", action="store_true", help=f"print only; leave {DOCS.relative_to(ROOT)} alone")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if Path.cwd().resolve() != ROOT:
        parser.error(f"run it from the repository root: cd {ROOT} && {COMMAND}")

    started = time.monotonic()
    when = dt.datetime.now(dt.UTC)
    workdir = Path(tempfile.mkdtemp(prefix="rgwtls-bench-"))
    src_at_start = src_fingerprint()
    ok = False
    try:
        with started_stack(workdir) as stack:
            bench = Bench(workdir, stack, args.runs, args.profile_runs)
            vers = versions(bench)
            bench.warm_up()
            bench.timed()
            bench.profiled()
            took = time.monotonic() - started
            text = section(bench, when, vers, took)
            if src_fingerprint() != src_at_start:
                warning = "WARNING: src/ changed while the benchmark ran: these numbers mix two versions; rerun."
                say(warning)
                text = text.replace("\n\n", f"\n\n**{warning}**\n\n", 1)
        ok = True
    except BenchError as e:
        say(f"\nBENCHMARK ABORTED: {e}\n(work directory kept: {workdir})")
        return 1
    finally:
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif ok:
            say(f"work directory kept: {workdir}")
    print(text)
    if args.no_docs:
        return 0
    if args.runs < 5:
        say(f"fewer than 5 runs per tool: {DOCS.relative_to(ROOT)} left alone")
        return 0
    update_docs("issue-bench", text, new_doc=intro())
    say(f"wrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
