"""Compare the code, not the machine: rgwtls at REF against the working tree, interleaved, on one stack.

    .venv/bin/python -m bench.ab REF [--rounds N] [--docs]

Absolute figures move with the machine (another job on it, a slower CPU, a
colder cache: docs/performance.md saw Python's start-up 1.7x slower from one
day to the next). A ratio of two versions measured in one run, on one stack,
each run beside its rival in time, does not. Three benchmarks, each round
running A (REF) then B (the working tree), the order turning every round:

- `rgwtls issue --force` (Infoblox WAPI back end): a whole issuance from Pebble;
- `rgwtls issue` when nothing is due: the hourly cron no-op;
- `rgwtls deploy` when the gateway serves the pool's set: the cron no-op of every gateway.

REF's code is `git archive REF src/` unpacked in a temporary directory, and run
by the same venv with PYTHONPATH at that src/ (the working tree's runs get
PYTHONPATH at its own src/, so that both import the same way). One venv: the
dependencies are the same objects, only rgwtls differs, and nothing needs
installing; a REF whose dependencies differ from the working tree's is not a
comparison of rgwtls alone anyway. An export, not `git worktree add`: nothing is
registered in the repository that a killed run would leave behind. The
temporary directory (REF's tree, the stack, the logs) is removed at the end,
however the run ends.

Each run must do its job (exit 0; a new pool generation for `--force`, none
for the no-ops; no radosgw restart for the deploy no-op), or the benchmark stops.
Printed: per benchmark, the median wall time of A and of B, their ratio B/A,
and the median of each round's own B/A with its lowest and highest (a round's
A and B ran side by side in time, so a busy moment weighs on both); `--docs` writes it
into docs/performance.md between the `<!-- ab:start -->` and `<!-- ab:end -->` markers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import ROOT, BenchError, Run, measure, median, say, update_docs
from bench.issue.rounds import started_stack
from devsite.gateway import Gateway
from devsite.site import DEPLOY_CAPS, POOL, ZONE, Stack

RGWTLS = str(Path(sys.executable).with_name("rgwtls"))
COMMAND = ".venv/bin/python -m bench.ab REF"
BENCHES = {
    "issue-force": "rgwtls issue --force (infoblox)",
    "issue-noop": "rgwtls issue, nothing due (cron no-op)",
    "deploy-noop": "rgwtls deploy, nothing to do (cron no-op)",
}


def export_src(ref: str, dest: Path) -> str:
    """REF's src/ unpacked into dest; REF's full commit id."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if commit.returncode != 0:
        raise BenchError(f"{ref} is no commit of this repository: {commit.stderr.strip()}")
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit.stdout.strip(), "src"],
        capture_output=True,
        check=True,
    )
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as t:
        t.extractall(dest, filter="data")
    return commit.stdout.strip()


def compile_tree(src: Path) -> None:
    """Byte-compile, as pip does on a gateway: no run pays for compiling (see bench.harness.compile_sources)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True, env={"PATH": "/usr/bin:/bin"})


def machine() -> str:
    """What this ran on: cores, CPU model, Python, and how busy the machine was."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{len(os.sched_getaffinity(0))} cores ({model}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; load average {load}"
    )


@dataclass
class Side:
    name: str  # "A" or "B"
    src: Path
    walls: dict[str, list[float]] = field(default_factory=dict)

    def env(self, config: Path) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RGWTLS_CONFIG")}
        return {**base, "PYTHONPATH": str(self.src), "RGWTLS_CONFIG": str(config), "LC_ALL": "C.UTF-8"}

    def check_imports_its_own(self) -> None:
        """The rgwtls this side runs is the one in its src/, not the venv's editable install."""
        code = "import rgwtls.cli; print(rgwtls.cli.__file__)"
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env(Path("-")), capture_output=True, text=True, check=True
        )
        if not Path(out.stdout.strip()).is_relative_to(self.src):
            raise BenchError(f"{self.name} imports rgwtls from {out.stdout.strip()}, not from {self.src}")


class AB:
    def __init__(self, work: Path, stack: Stack, sides: tuple[Side, Side], rounds: int) -> None:
        self.work, self.stack, self.sides, self.rounds = work, stack, sides, rounds
        self.logs = work / "logs"
        self.logs.mkdir()
        self.issuer = stack.write_config(stack.settings("infoblox"), "issuer.toml")
        keyring = stack.ceph.create_user("client.rgwtls-deploy", DEPLOY_CAPS)
        self.gateway = Gateway(stack, keyring, work / "gateway")
        self.deployer = self.gateway.config()

    def generation(self) -> int:
        ioctx = self.stack.ceph.admin().open_ioctx(POOL)
        try:
            try:
                return int(json.loads(bytes(ioctx.read(f"{ZONE}/current", 1 << 20)))["generation"])
            except Exception:
                return 0
        finally:
            ioctx.close()

    def run(self, side: Side, bench: str, argv: list[str], config: Path, n: int) -> Run:
        run = measure([RGWTLS, *argv], side.env(config), self.logs, f"{bench}-{side.name}-{n}", gnu_time=False)
        if run.code != 0 or run.timed_out:
            raise BenchError(f"{side.name}: rgwtls {' '.join(argv)} failed ({run.code}):\n{run.tail()}")
        side.walls.setdefault(bench, []).append(run.wall)
        return run

    def interleaved(self, bench: str, one: Callable[[Side, int], None]) -> None:
        say(f"{BENCHES[bench]}: {self.rounds} rounds, A and B in turn")
        for n in range(self.rounds):
            for side in self.sides if n % 2 == 0 else reversed(self.sides):
                one(side, n)

    def issue_force(self, side: Side, n: int) -> None:
        before = self.generation()
        self.run(side, "issue-force", ["issue", "--force"], self.issuer, n)
        if self.generation() != before + 1:
            raise BenchError(f"{side.name}: issue --force made no new generation (still {before})")

    def issue_noop(self, side: Side, n: int) -> None:
        before = self.generation()
        self.run(side, "issue-noop", ["issue"], self.issuer, n)
        if self.generation() != before:
            raise BenchError(f"{side.name}: issue with nothing due made a new generation")

    def deploy_noop(self, side: Side, n: int) -> None:
        restarts = self.gateway.restarts()
        self.run(side, "deploy-noop", ["deploy"], self.deployer, n)
        if self.gateway.restarts() != restarts:
            raise BenchError(f"{side.name}: deploy with nothing to do restarted radosgw")

    def all(self) -> None:
        # Warm-up, untimed: the account, a first set, and that set installed on the gateway.
        for side in self.sides:
            self.run(side, "warm-up", ["issue", "--force"], self.issuer, 0)
        self.run(self.sides[1], "warm-up", ["deploy"], self.deployer, 0)
        for side in self.sides:
            side.walls.pop("warm-up", None)
        self.interleaved("issue-force", self.issue_force)
        self.interleaved("issue-noop", self.issue_noop)
        # The last --force made a new set: installed once, untimed, then only no-ops.
        self.run(self.sides[1], "install", ["deploy"], self.deployer, 0)
        self.sides[1].walls.pop("install", None)
        self.interleaved("deploy-noop", self.deploy_noop)


def ratios(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """B/A: the median of each round's own ratio, and the lowest and highest of them."""
    each = [y / x for x, y in zip(a, b, strict=True)]
    return median(each), min(each), max(each)


def section(
    ref: str, commit: str, head: str, sides: tuple[Side, Side], rounds: int, took: float, where: str, busy: bool
) -> str:
    a, b = sides
    rows = [
        "| benchmark | A median s | B median s | B/A of the medians | B/A of each round: median (lowest-highest) |",
        "|---|---:|---:|---:|---|",
    ]
    for key, label in BENCHES.items():
        am, bm = median(a.walls[key]), median(b.walls[key])
        r, lo, hi = ratios(a.walls[key], b.walls[key])
        rows.append(f"| {label} | {am:.3f} | {bm:.3f} | {bm / am:.2f}x | {r:.2f}x ({lo:.2f}-{hi:.2f}) |")
    return "\n".join(
        [
            "## A/B: the code of two commits, on one machine, in one run",
            "",
            f"A = `{ref}` ({commit[:12]}), B = the working tree at {head}; measured "
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {rounds} rounds, A and B in turn (the order turning "
            f"each round), on one stack; the whole run took {took:.0f} s. Machine: {where}. "
            f"Rerun: `{COMMAND} --docs` (`bench/ab.py`, whose docstring says how REF is run).",
            "",
            *rows,
            "",
            "B/A below 1 is B faster. The ratios compare the code; the absolute seconds beside them are this "
            "machine's at this hour, and move with it."
            + (
                " The machine was busy (its load average above its cores: other jobs ran beside the benchmark), "
                "which spreads each side's runs, and the ratios less than the seconds."
                if busy
                else ""
            ),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("ref", help="the commit to compare the working tree with (A)")
    parser.add_argument("--rounds", type=int, default=9, help="timed runs of each side per benchmark (default 9)")
    parser.add_argument("--docs", action="store_true", help="write the section into docs/performance.md")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    started = time.monotonic()
    head = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, check=True
    ).stdout.strip()
    before = machine()
    try:
        with tempfile.TemporaryDirectory(prefix="rgwtls-ab-") as tmp:
            work = Path(tmp)
            commit = export_src(args.ref, work / "ref")
            sides = (Side("A", work / "ref" / "src"), Side("B", ROOT / "src"))
            for side in sides:
                compile_tree(side.src)
                side.check_imports_its_own()
            (work / "stack").mkdir()
            with started_stack(work / "stack") as stack:  # stops radosgw with the cluster, however it ends
                AB(work, stack, sides, args.rounds).all()
    except BenchError as e:
        say(f"\nA/B ABORTED: {e}")
        return 1
    where = f"{before} at the start, {machine().rsplit('load average ', 1)[1]} at the end"
    busy = os.getloadavg()[1] > len(os.sched_getaffinity(0))
    text = section(args.ref, commit, head, sides, args.rounds, time.monotonic() - started, where, busy)
    print(text)
    if args.docs:
        update_docs("ab", text)
        say("wrote docs/performance.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
