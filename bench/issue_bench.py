"""`rgwtls issue` against certbot and dehydrated: one wildcard + apex certificate, same CA, same DNS.

Run from the repository root:

    .venv/bin/python -m bench.issue_bench [--runs N]

The benchmark starts its own stack from tests/stack, all on 127.0.0.1: one
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
RSS (the largest single process of its tree) from GNU time (see `measure`).

After the timed runs, untimed profiling runs show where each tool spends its
time: cProfile and `-X importtime` for rgwtls and certbot, a `sleep` shim for
dehydrated, and a timing wrapper around the shared hook for all three hook
users.

The results are printed as Markdown and written into docs/performance.md,
between the `<!-- issue-bench:start -->` and `<!-- issue-bench:end -->` markers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import pstats
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from cryptography import x509

from bench import compile_sources
from rgwtls.certs import key_matches_cert
from tests.stack.bind import bind_server
from tests.stack.ceph import ceph_cluster
from tests.stack.pebble import pebble_server, pebble_version
from tests.stack.site import DOMAINS, ISSUER_CAPS, POOL, ZONE, Stack
from tests.stack.tlsca import TestCA
from tests.stack.wapi import wapi_emulator

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "performance.md"
START_MARK = "<!-- issue-bench:start -->"
END_MARK = "<!-- issue-bench:end -->"
COMMAND = ".venv/bin/python -m bench.issue_bench"
EMAIL = "ops@example.org"
CHALLENGE_NAME = f"_acme-challenge.{ZONE}"
# Targets for the median wall time of `rgwtls issue --force`.
TARGET_VS_CERTBOT = 0.25
TARGET_VS_DEHYDRATED = 0.1
# All tools get the key rgwtls makes by default (acme.key_type = "rsa2048"),
# so that none of them pays for a bigger or cheaper key than the others.
KEY_NOTE = "RSA 2048 certificate key for every tool"
CERTBOT_KEY_ARGS = ("--key-type", "rsa", "--rsa-key-size", "2048")
RUN_TIMEOUT = 180.0
GNU_TIME = "/usr/bin/time"
MAX_REDOS = 3
# Pebble rejects 5% of nonces by default. dehydrated does not retry a badNonce (it fails the
# run) and certbot retries once: a speed benchmark must not depend on that lottery.
PEBBLE_ENV = {"PEBBLE_WFE_NONCEREJECT": "0"}
# Environment variables that would change how a tool finds its CA or config.
SCRUB_ENV = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "RGWTLS_CONFIG")


class BenchError(RuntimeError):
    """A run that did not do its job: the benchmark stops, nothing is timed."""


class AuthzReused(Exception):
    """Pebble handed back a valid authorization, so the run solved fewer than 2 challenges.

    `PEBBLE_AUTHZREUSE=0` still reused one 1% of the time in Pebble 2.4 (it reused when
    `rand.Intn(100) > percent` was false, which `rand.Intn(100) == 0` made it), and the check
    stays for any Pebble. Such a run did less work than the others: it is not timed, and the
    run is made again.
    """


# -- measuring one child ---------------------------------------------------------------


@dataclass
class Run:
    code: int
    wall: float  # seconds
    cpu: float  # user + system seconds, the child and its reaped descendants
    maxrss_kib: int  # the largest single process of the tree
    stdout: Path
    stderr: Path
    timed_out: bool = False

    def tail(self, lines: int = 25) -> str:
        out: list[str] = []
        for path in (self.stdout, self.stderr):
            try:
                text = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            if text:
                out.append(f"--- {path.name} (last {min(lines, len(text))} lines)")
                out += text[-lines:]
        return "\n".join(out)


def measure(argv: Sequence[str], env: dict[str, str], logs: Path, name: str, timeout: float = RUN_TIMEOUT) -> Run:
    """Run argv to its end: wall time around it, CPU from os.wait4, peak RSS from GNU time.

    CPU is user + system of the whole tree (every descendant is waited for). Peak RSS is GNU
    time's %M: the command's own ru_maxrss, i.e. its largest single process. It cannot come from
    our wait4: Linux starts a forked child's RSS high-water mark at its parent's RSS and keeps
    it across exec, so every child of this ~60 MiB process would report at least that. GNU time
    is small, and forks the command itself.
    """
    out, err, rss = logs / f"{name}.out", logs / f"{name}.err", logs / f"{name}.rss"
    timed_out = threading.Event()
    cmd = [GNU_TIME, "-q", "-o", str(rss), "-f", "%M", *argv]
    with out.open("wb") as fo, err.open("wb") as fe:
        started = time.perf_counter()
        # Its own process group, so that a timeout or ^C stops the whole tree (by its id).
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, env=env, cwd=logs, start_new_session=True
        )

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - started
        except BaseException:
            kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    try:
        maxrss = int(rss.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        maxrss = 0
    return Run(
        code=proc.returncode,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        maxrss_kib=maxrss,
        stdout=out,
        stderr=err,
        timed_out=timed_out.is_set(),
    )


# -- what a run must have produced ------------------------------------------------------


def leaf_facts(cert_pem: str, key_pem: str, who: str) -> int:
    """The leaf's serial, after checking its names and that the key is its key."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(san.get_values_for_type(x509.DNSName))
    if names != set(DOMAINS):
        raise BenchError(f"{who}: the certificate names {sorted(names)}, not {sorted(DOMAINS)}")
    if not key_matches_cert(key_pem, cert_pem):
        raise BenchError(f"{who}: the stored key does not match the certificate")
    return int(cert.serial_number)


@dataclass(frozen=True)
class Before:
    serial: int | None
    generation: int | None
    hook_offset: int


class HookLog:
    """The shared hook appends `"$@"` to this file: what every tool asked it to do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def since(self, offset: int) -> Counter[tuple[str, str]]:
        if not self.path.exists():
            return Counter()
        with self.path.open("rb") as f:
            f.seek(offset)
            lines = f.read().decode().splitlines()
        return Counter((p[0], p[1]) for p in (line.split() for line in lines) if len(p) >= 2)


# -- the tools ---------------------------------------------------------------------------


class Tool:
    key = ""
    label = ""
    uses_hook = False
    issues = True  # False: a run must leave the certificate as it is

    def argv(self, profile: Path | None = None, importtime: bool = False) -> list[str]:
        """The command; `profile`: under cProfile, writing there; `importtime`: with -X importtime."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return clean_env()

    def current(self) -> tuple[int | None, int | None]:
        """(serial, generation) of what the tool has stored now."""
        raise NotImplementedError

    def verify(self, before: Before, run: Run) -> None:
        serial, generation = self.current()
        if not self.issues:
            if (serial, generation) != (before.serial, before.generation):
                raise BenchError(f"{self.label}: the no-op run changed the stored certificate")
            return
        if serial is None or serial == before.serial:
            raise BenchError(f"{self.label}: exit 0, but no new certificate was stored\n{run.tail()}")


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB_ENV}
    env["LC_ALL"] = "C.UTF-8"
    return env


class Rgwtls(Tool):
    def __init__(self, bench: Bench, provider: str, config: Path, force: bool = True) -> None:
        self.bench = bench
        self.provider = provider
        self.config = config
        self.force = force
        self.issues = force
        self.uses_hook = force and provider == "hook"
        self.key = f"rgwtls-{provider}" if force else "rgwtls-noop"
        self.label = f"rgwtls issue --force ({provider})" if force else "rgwtls issue, nothing due (cron no-op)"

    def argv(self, profile: Path | None = None, importtime: bool = False) -> list[str]:
        args = ["--config", str(self.config), "issue", *(["--force"] if self.force else [])]
        if profile is not None:
            return [sys.executable, "-c", PROFILE_DRIVER, str(profile), *args]
        if importtime:  # the console script itself, as cron runs it (no runpy)
            return [sys.executable, "-X", "importtime", str(self.bench.rgwtls), *args]
        return [str(self.bench.rgwtls), *args]

    def stored(self) -> dict[str, Any] | None:
        ioctx = self.bench.stack.ceph.admin().open_ioctx(POOL)
        try:
            try:
                raw = bytes(ioctx.read(f"{ZONE}/current", 1 << 20))
            except Exception:
                return None
            doc: dict[str, Any] = json.loads(raw)
            return doc
        finally:
            ioctx.close()

    def current(self) -> tuple[int | None, int | None]:
        doc = self.stored()
        if doc is None:
            return None, None
        serial = leaf_facts(str(doc["cert_pem"]), str(doc["key_pem"]), f"pool {POOL} {ZONE}/current")
        return serial, int(doc["generation"])

    def verify(self, before: Before, run: Run) -> None:
        super().verify(before, run)
        if not self.force:
            return
        _, generation = self.current()
        want = (before.generation or 0) + 1
        if generation != want:
            raise BenchError(f"{self.label}: expected pool generation {want}, found {generation}\n{run.tail()}")


class Certbot(Tool):
    key = "certbot"
    label = "certbot certonly --manual"
    uses_hook = True

    def __init__(self, bench: Bench, base: Path, auth: Path, cleanup: Path) -> None:
        self.bench = bench
        self.base = base
        self.auth, self.cleanup = auth, cleanup

    def dirs(self) -> list[str]:
        return [
            "--config-dir",
            str(self.base / "config"),
            "--work-dir",
            str(self.base / "work"),
            "--logs-dir",
            str(self.base / "logs"),
        ]

    def register_argv(self) -> list[str]:
        return [
            self.bench.certbot,
            "register",
            "--server",
            self.bench.stack.pebble.directory_url,
            "--non-interactive",
            "--agree-tos",
            "-m",
            EMAIL,
            "--no-eff-email",
            *self.dirs(),
        ]

    def argv(self, profile: Path | None = None, importtime: bool = False) -> list[str]:
        args = [
            "certonly",
            "--manual",
            "--preferred-challenges",
            "dns",
            "--manual-auth-hook",
            str(self.auth),
            "--manual-cleanup-hook",
            str(self.cleanup),
            "--server",
            self.bench.stack.pebble.directory_url,
            "--non-interactive",
            "--agree-tos",
            "-m",
            EMAIL,
            "--force-renewal",
            *CERTBOT_KEY_ARGS,
            "-d",
            ZONE,
            "-d",
            f"*.{ZONE}",
            *self.dirs(),
        ]
        python = self.bench.certbot_python
        if profile is not None:
            return [python, "-m", "cProfile", "-o", str(profile), self.bench.certbot, *args]
        if importtime:
            return [python, "-X", "importtime", self.bench.certbot, *args]
        return [self.bench.certbot, *args]

    def env(self) -> dict[str, str]:
        return {**clean_env(), "REQUESTS_CA_BUNDLE": str(self.bench.stack.pebble.ca_bundle)}

    def current(self) -> tuple[int | None, int | None]:
        live = self.base / "config" / "live" / ZONE
        if not (live / "cert.pem").exists():
            return None, None
        cert = (live / "cert.pem").read_text()
        return leaf_facts(cert, (live / "privkey.pem").read_text(), f"certbot {live}"), None


class Dehydrated(Tool):
    key = "dehydrated"
    label = "dehydrated -c --force"
    uses_hook = True

    def __init__(self, bench: Bench, base: Path, config: Path) -> None:
        self.bench = bench
        self.base = base
        self.config = config
        self.path_prefix: str | None = None  # the sleep shim of the profiling runs

    def register_argv(self) -> list[str]:
        return [self.bench.dehydrated, "-f", str(self.config), "--register", "--accept-terms"]

    def argv(self, profile: Path | None = None, importtime: bool = False) -> list[str]:
        return [self.bench.dehydrated, "-f", str(self.config), "-c", "-d", ZONE, "-d", f"*.{ZONE}", "--force"]

    def env(self) -> dict[str, str]:
        env = {**clean_env(), "CURL_CA_BUNDLE": str(self.bench.stack.pebble.ca_bundle)}
        if self.path_prefix:
            env["PATH"] = f"{self.path_prefix}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def current(self) -> tuple[int | None, int | None]:
        certdir = self.base / "certs" / ZONE
        if not (certdir / "cert.pem").exists():
            return None, None
        cert = (certdir / "cert.pem").read_text()
        return leaf_facts(cert, (certdir / "privkey.pem").read_text(), f"dehydrated {certdir}"), None


# -- the benchmark ---------------------------------------------------------------------------


@dataclass
class Sample:
    round: int
    wall: float
    cpu: float
    maxrss_kib: int


def write_script(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(0o755)
    return path


class Bench:
    def __init__(self, workdir: Path, stack: Stack, runs: int, profile_runs: int) -> None:
        self.workdir = workdir
        self.stack = stack
        self.runs = runs
        self.profile_runs = profile_runs
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.rgwtls = Path(sys.executable).with_name("rgwtls")
        self.certbot = _which("certbot")
        self.certbot_python = "/usr/bin/python3"
        self.dehydrated = _which("dehydrated")
        self.hook_log = HookLog(workdir / "hook-calls")
        self.hook = self._write_hook()
        self.timed_hook, self.hook_timing = self._write_timed_hook()
        self.sleeps = workdir / "dehydrated-sleeps"  # written by the sleep shim of the profiling runs
        self.pebble_log = stack.pebble.server.log
        self.redone: list[str] = []
        self.samples: dict[str, list[Sample]] = {}
        # Per tool, one dict per profiling round: metric -> seconds (or a count).
        self.profiles: dict[str, list[dict[str, float]]] = {}
        # Per interpreter, (wall, import seconds) of `python -X importtime -c pass`.
        self.baseline: dict[str, list[tuple[float, float]]] = {}
        self.tools = self._make_tools()

    # -- set-up ----------------------------------------------------------------------

    def _write_hook(self) -> Path:
        """The nsupdate hook of tests/test_issue_e2e.py, dehydrated's calling convention."""
        bind = self.stack.bind
        secret = self.stack.secret_file("hook-tsig", bind.tsig_secret)
        return write_script(
            self.workdir / "hook.sh",
            f"""#!/bin/sh
echo "$@" >> {self.hook_log.path}
case "$1" in
  deploy_challenge) op=add ;;
  clean_challenge) op=delete ;;
  *) exit 0 ;;
esac
printf 'server 127.0.0.1 {bind.port}\\nupdate %s _acme-challenge.%s. 60 TXT "%s"\\nsend\\n' \\
  "$op" "$2" "$4" | nsupdate -y "{bind.tsig_algorithm}:{bind.tsig_name}:$(cat {secret})"
""",
        )

    def _write_timed_hook(self) -> tuple[Path, Path]:
        """For the profiling runs: the same hook, each call's start and end logged."""
        timing = self.workdir / "hook-timing"
        wrapper = write_script(
            self.workdir / "hook-timed.sh",
            f"""#!/bin/bash
s=$EPOCHREALTIME
{shlex.quote(str(self.hook))} "$@"
rc=$?
echo "$1 $s $EPOCHREALTIME" >> {shlex.quote(str(timing))}
exit $rc
""",
        )
        return wrapper, timing

    def _rgwtls_config(self, provider: str, hook: Path | None = None, name: str = "") -> Path:
        settings = self.stack.settings(provider)
        if provider == "hook":
            settings["dns"]["hook"] = {"command": str(hook or self.hook)}
        return self.stack.write_config(settings, name or f"rgwtls-{provider}.toml")

    def _certbot_hooks(self, hook: Path, suffix: str) -> tuple[Path, Path]:
        # certbot passes the domain and the value in its environment; the hook takes them as
        # dehydrated passes them. CERTBOT_DOMAIN is the name without "*." for a wildcard.
        auth = write_script(
            self.workdir / f"certbot-auth{suffix}.sh",
            f'#!/bin/sh\nexec {shlex.quote(str(hook))} deploy_challenge "$CERTBOT_DOMAIN" '
            '"${CERTBOT_TOKEN:-}" "$CERTBOT_VALIDATION"\n',
        )
        cleanup = write_script(
            self.workdir / f"certbot-cleanup{suffix}.sh",
            f'#!/bin/sh\nexec {shlex.quote(str(hook))} clean_challenge "$CERTBOT_DOMAIN" '
            '"${CERTBOT_TOKEN:-}" "$CERTBOT_VALIDATION"\n',
        )
        return auth, cleanup

    def _dehydrated_config(self, base: Path, hook: Path, name: str) -> Path:
        lines = {
            "CA": self.stack.pebble.directory_url,
            "CHALLENGETYPE": "dns-01",
            "HOOK": str(hook),
            "HOOK_CHAIN": "no",
            "BASEDIR": str(base),
            "CONTACT_EMAIL": EMAIL,
            "KEY_ALGO": "rsa",
            "KEYSIZE": "2048",
            "CONFIG_D": "",
            "LOCKFILE": str(base / "lock"),
        }
        path = base / name
        path.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in lines.items()))
        return path

    def _make_tools(self) -> list[Tool]:
        self.rg = {p: Rgwtls(self, p, self._rgwtls_config(p)) for p in ("hook", "rfc2136", "infoblox")}
        self.rg_noop = Rgwtls(self, "infoblox", self.rg["infoblox"].config, force=False)
        certbot_base = self.workdir / "certbot"
        certbot_base.mkdir()
        self.cb = Certbot(self, certbot_base, *self._certbot_hooks(self.hook, ""))
        dh_base = self.workdir / "dehydrated"
        dh_base.mkdir()
        self.dh = Dehydrated(self, dh_base, self._dehydrated_config(dh_base, self.hook, "config"))
        return [self.rg["hook"], self.rg["rfc2136"], self.rg["infoblox"], self.rg_noop, self.cb, self.dh]

    # -- one run -----------------------------------------------------------------------

    def run_once(self, tool: Tool, name: str, profile: Path | None = None, importtime: bool = False) -> Run:
        """One verified run; again (untimed, counted) if Pebble skipped a challenge."""
        for attempt in range(1, MAX_REDOS + 2):
            self.hook_timing.unlink(missing_ok=True)
            self.sleeps.unlink(missing_ok=True)
            try:
                return self._attempt(tool, name if attempt == 1 else f"{name}-redo{attempt - 1}", profile, importtime)
            except AuthzReused as e:
                self.redone.append(f"{name}: {e}")
                say(f"  {tool.label}: {e}; run again")
        raise BenchError(f"{tool.label} ({name}): Pebble reused an authorization {MAX_REDOS + 1} times in a row")

    def _attempt(self, tool: Tool, name: str, profile: Path | None, importtime: bool) -> Run:
        before = Before(*tool.current(), self.hook_log.offset())
        pebble_at = self.pebble_log.stat().st_size
        run = measure(tool.argv(profile, importtime), tool.env(), self.logs, name)
        if run.timed_out:
            raise BenchError(f"{tool.label} ({name}): no exit within {RUN_TIMEOUT:g}s\n{run.tail()}")
        if run.code != 0:
            raise BenchError(f"{tool.label} ({name}): exit status {run.code}\n{run.tail()}")
        tool.verify(before, run)
        with self.pebble_log.open("rb") as f:
            f.seek(pebble_at)
            pebble = f.read().decode(errors="replace")
        validated, issued = (
            pebble.count("set VALID by completed challenge"),
            pebble.count("Issued certificate"),
        )
        if tool.issues and issued == 1 and validated < 2:
            raise AuthzReused(f"Pebble validated {validated} of 2 challenges (it reused a valid authorization)")
        want = (2, 1) if tool.issues else (0, 0)
        if (validated, issued) != want:
            raise BenchError(
                f"{tool.label} ({name}): Pebble validated {validated} challenges and issued {issued} "
                f"certificates (want {want[0]} and {want[1]})"
            )
        calls = self.hook_log.since(before.hook_offset)
        if tool.uses_hook:
            deploys, cleans = calls[("deploy_challenge", ZONE)], calls[("clean_challenge", ZONE)]
            if (deploys, cleans) != (2, 2):
                raise BenchError(
                    f"{tool.label} ({name}): the hook published {deploys} and removed {cleans} values "
                    "(want 2 and 2: apex and wildcard)"
                )
        left = self.stack.bind.txt(CHALLENGE_NAME)
        if left or self.stack.wapi.records():
            raise BenchError(f"{tool.label} ({name}): challenge records left behind: {sorted(left)}")
        return run

    def _setup_run(self, argv: list[str], env: dict[str, str], name: str) -> None:
        run = measure(argv, env, self.logs, name)
        if run.code != 0:
            raise BenchError(f"{name}: exit status {run.code}\n{run.tail()}")

    # -- the rounds --------------------------------------------------------------------

    def warm_up(self) -> None:
        """Untimed: accounts and each tool's first certificate."""
        say("warm-up (untimed): register the accounts and issue each tool's first certificate")
        self._setup_run(self.cb.register_argv(), self.cb.env(), "certbot-register")
        self._setup_run(self.dh.register_argv(), self.dh.env(), "dehydrated-register")
        # rgwtls keeps its account key in the pool: the first run creates and registers it.
        for tool in self.tools:
            run = self.run_once(tool, f"{tool.key}-warmup")
            say(f"  {tool.label}: {run.wall:.2f} s")

    def timed(self) -> None:
        for i in range(self.runs):
            k = i % len(self.tools)
            order = self.tools[k:] + self.tools[:k]
            say(f"round {i + 1}/{self.runs}")
            for tool in order:
                run = self.run_once(tool, f"{tool.key}-{i + 1}")
                self.samples.setdefault(tool.key, []).append(Sample(i + 1, run.wall, run.cpu, run.maxrss_kib))
                say(f"  {tool.label}: {run.wall:.3f} s, cpu {run.cpu:.3f} s, {run.maxrss_kib / 1024:.0f} MiB")

    def profiled(self) -> None:
        """Untimed runs that show where the time goes.

        Per round: for rgwtls and certbot one run under `-X importtime` (the imports) and one
        under cProfile (the steps, the sleeps); for dehydrated one run with a `sleep` shim
        first in PATH. The hook users call the shared hook through a wrapper that times it.
        """
        if self.profile_runs <= 0:
            return
        say("profiling runs (untimed)")
        rg_hook = Rgwtls(self, "hook", self._rgwtls_config("hook", self.timed_hook, "rgwtls-hook-timed.toml"))
        cb = Certbot(self, self.cb.base, *self._certbot_hooks(self.timed_hook, "-timed"))
        dh = Dehydrated(self, self.dh.base, self._dehydrated_config(self.dh.base, self.timed_hook, "config-timed"))
        shim_dir = self.workdir / "shim"
        shim_dir.mkdir(exist_ok=True)
        sleeps = self.sleeps
        write_script(
            shim_dir / "sleep",
            f'#!/bin/sh\necho "$1" >> {shlex.quote(str(sleeps))}\nexec {shlex.quote(_which("sleep"))} "$@"\n',
        )
        dh.path_prefix = str(shim_dir)
        tools: list[Tool] = [rg_hook, self.rg["rfc2136"], self.rg["infoblox"], self.rg_noop, cb, dh]
        for i in range(self.profile_runs):
            say(f"profiling round {i + 1}/{self.profile_runs}")
            for python, label in ((sys.executable, "rgwtls"), (self.certbot_python, "certbot")):
                run = measure([python, "-X", "importtime", "-c", "pass"], clean_env(), self.logs, f"python-{label}")
                self.baseline.setdefault(label, []).append((run.wall, import_seconds(run.stderr)))
            for tool in tools:
                m: dict[str, float] = {}
                name = f"{tool.key}-profile-{i + 1}"
                if isinstance(tool, Rgwtls | Certbot):
                    run = self.run_once(tool, f"{name}-importtime", importtime=True)
                    m[M_IMPORTS] = import_seconds(run.stderr)
                    prof = self.logs / f"{name}.prof"
                    run = self.run_once(tool, name, profile=prof)
                    m.update(profile_metrics(prof, RGWTLS_STEPS if isinstance(tool, Rgwtls) else CERTBOT_STEPS))
                else:
                    run = self.run_once(tool, name)
                    slept = [float(x) for x in sleeps.read_text().split()] if sleeps.exists() else []
                    m[M_SLEEP], m[M_SLEEPS] = sum(slept), float(len(slept))
                if tool.uses_hook:
                    m[M_DNS] = hook_seconds(self.hook_timing)
                self.profiles.setdefault(tool.key, []).append(m)
                say(f"  {tool.label}: done")


# Metrics of the profiling runs.
M_SLEEP = "fixed waits (sleep)"
M_SLEEPS = "sleep calls"
M_DNS = "DNS: publish + remove the 2 values"
M_IMPORTS = "imports"
M_MAIN = "main() under cProfile"
M_ISSUE = "issue() under cProfile"
M_KEYLOADS = "private key loads"
M_KEYLOAD_CALLS = "private key load calls"

# Python run by `python -c`: import every rgwtls module (so that the profile holds no import
# time), then run the CLI under cProfile and write the profile to argv[1].
PROFILE_DRIVER = """
import cProfile, importlib, pkgutil, sys
import rgwtls
for m in pkgutil.walk_packages(rgwtls.__path__, "rgwtls."):
    if not m.name.endswith("__main__"):
        importlib.import_module(m.name)
from rgwtls.cli import main
out, args = sys.argv[1], sys.argv[2:]
sys.argv = ["rgwtls", *args]
prof = cProfile.Profile()
code = 0
try:
    prof.runcall(main, args, prog_name="rgwtls")
except SystemExit as e:
    code = e.code
finally:
    prof.dump_stats(out)
sys.exit(code)
"""

# (row, file, function): the steps of `rgwtls issue` in order, each the cumulative time of
# one function that none of the others calls. `file` matches the end of the path, or any
# path containing it if it ends in "/".
RGWTLS_STEPS: tuple[tuple[str, str, str], ...] = (
    ("Ceph: connect", "rgwtls/store.py", "connect"),
    ("Ceph: issuer lock (take + release)", "rgwtls/store.py", "issuer_lock"),
    ("Ceph: challenge journal check", "rgwtls/issue.py", "_clean_journal"),
    ("Ceph: read the current set", "rgwtls/store.py", "read_set"),
    ("renewal decision (no-op: ACME directory + ARI)", "rgwtls/issue.py", "_decide"),
    ("ACME: account key, directory, newAccount", "rgwtls/issue.py", "registered"),
    ("new certificate key (RSA 2048)", "rgwtls/certs.py", "new_private_key"),
    ("CSR", "rgwtls/acmeflow.py", "make_csr"),
    ("ACME: new order + authorizations", "rgwtls/acmeflow.py", "new_order"),
    ("DNS: back end set-up", "rgwtls/dns/__init__.py", "make_provider"),
    ("DNS: publish 2 values", "rgwtls/dns/", "present"),
    ("DNS: wait until the servers answer", "rgwtls/propagation.py", "wait_for_values"),
    ("ACME: answer challenges + poll authorizations", "rgwtls/acmeflow.py", "answer_and_wait"),
    ("ACME: finalize + poll order + download", "rgwtls/acmeflow.py", "finalize"),
    ("DNS: remove 2 values", "rgwtls/issue.py", "_cleanup"),
    ("check the new certificate", "rgwtls/issue.py", "_build_set"),
    ("Ceph: store the set (previous, current, legacy objects)", "rgwtls/store.py", "write_set"),
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


# -- the report ------------------------------------------------------------------------------


def _which(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(f"{name} is not installed")
    return path


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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
        "certbot": _version([bench.certbot, "--version"]),
        "dehydrated": _version([bench.dehydrated, "--version"], "Dehydrated version:")
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


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def fmt_ratio(r: float, target: float) -> str:
    return f"{r:.2f}x ({'meets' if r <= target else 'misses'} <= {target:g}x)"


def results_table(bench: Bench) -> str:
    cb = med([s.wall for s in bench.samples["certbot"]])
    dh = med([s.wall for s in bench.samples["dehydrated"]])
    rows = [
        "| tool | runs | median s | min s | max s | CPU s (median) | peak RSS MiB (median) "
        "| vs certbot | vs dehydrated |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for tool in bench.tools:
        ss = bench.samples[tool.key]
        walls = [s.wall for s in ss]
        m = med(walls)
        if isinstance(tool, Rgwtls) and tool.force:
            vs_cb, vs_dh = fmt_ratio(m / cb, TARGET_VS_CERTBOT), fmt_ratio(m / dh, TARGET_VS_DEHYDRATED)
        else:
            vs_cb, vs_dh = f"{m / cb:.2f}x", f"{m / dh:.2f}x"
        rows.append(
            f"| {tool.label} | {len(ss)} | {m:.3f} | {min(walls):.3f} | {max(walls):.3f} "
            f"| {med([s.cpu for s in ss]):.3f} | {med([s.maxrss_kib / 1024 for s in ss]):.0f} "
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
            f"| {tool.key} | " + " | ".join(f"{s.wall:.3f}" for s in ss) + f" | {med([s.wall for s in ss]):.3f} |"
        )
    return "\n".join(rows)


def _cell(vals: Sequence[float], fmt: str = "{:.3f}") -> str:
    return fmt.format(med(vals)) if vals else "-"


def overview_table(bench: Bench) -> str:
    """Per tool: the median timed wall time, split by the profiling runs' medians."""
    keys = [t.key for t in bench.tools if t.key in bench.profiles]
    head = "| s (medians) | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys)
    rows: dict[str, list[str]] = {}
    for key in keys:
        profs = bench.profiles[key]
        wall = med([s.wall for s in bench.samples[key]])
        sleep = med([p.get(M_SLEEP, 0.0) for p in profs])
        calls = med([p.get(M_SLEEPS, 0.0) for p in profs])
        dns = med([p.get(M_DNS, 0.0) for p in profs])
        start = imports = 0.0
        if M_IMPORTS in profs[0]:
            base = bench.baseline["certbot" if key == "certbot" else "rgwtls"]
            start = med([b[0] for b in base])
            imports = med([p[M_IMPORTS] for p in profs]) - med([b[1] for b in base])
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
    walls = {k: med([x.wall for x in v]) for k, v in bench.samples.items()}
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
        "- rgwtls config as the tests make it (tests/stack/site.py): "
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
(Pebble, BIND 9, Ceph and the Infoblox WAPI emulator from `tests/stack`, all on
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


def update_docs(path: Path, text: str) -> None:
    block = f"{START_MARK}\n{text.rstrip()}\n{END_MARK}"
    if path.exists():
        doc = path.read_text()
        if START_MARK in doc and END_MARK in doc:
            pre, rest = doc.split(START_MARK, 1)
            _, post = rest.split(END_MARK, 1)
            doc = pre + block + post
        else:
            doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    else:
        doc = intro() + "\n" + block + "\n"
    path.write_text(doc)


# -- main ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def started_stack(workdir: Path) -> Iterator[Stack]:
    """Pebble, BIND, Ceph and the WAPI emulator, as tests/conftest.py starts them; all stopped on exit."""
    with contextlib.ExitStack() as es:
        say("starting BIND, Pebble, Ceph and the WAPI emulator")
        bind = es.enter_context(bind_server(workdir / "bind", zones=(ZONE,)))
        pebble = es.enter_context(pebble_server(workdir / "pebble", TestCA(workdir / "ca"), bind.port, env=PEBBLE_ENV))
        ceph = es.enter_context(ceph_cluster(workdir / "ceph", pools=(POOL,)))
        wapi = es.enter_context(wapi_emulator(workdir / "wapi", bind))
        keyring = ceph.create_user("client.rgwtls-issuer", ISSUER_CAPS)
        cfg_dir = workdir / "rgwtls"
        cfg_dir.mkdir()
        yield Stack(cfg_dir, bind, pebble, ceph, wapi, keyring)
        say("stopping the stack")


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
    update_docs(DOCS, text)
    say(f"wrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
