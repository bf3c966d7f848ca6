"""dehydrated in the issue benchmark: `dehydrated -c --force` with the shared hook."""

from __future__ import annotations

import shlex
from pathlib import Path

from bench.harness import which
from bench.issue.tool import EMAIL, Tool, clean_env, leaf_facts, write_script
from devsite.pebble import Pebble
from devsite.site import ZONE


def dehydrated_config(base: Path, pebble: Pebble, hook: Path, name: str) -> Path:
    """Its config file `base/name`: DNS-01 through `hook`, an RSA 2048 key, everything under `base`."""
    lines = {
        "CA": pebble.directory_url,
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


def sleep_shim(shim_dir: Path, log: Path) -> Path:
    """A `sleep` for the front of PATH that appends each duration to `log`; returns its directory."""
    shim_dir.mkdir(exist_ok=True)
    write_script(
        shim_dir / "sleep",
        f'#!/bin/sh\necho "$1" >> {shlex.quote(str(log))}\nexec {shlex.quote(which("sleep"))} "$@"\n',
    )
    return shim_dir


class Dehydrated(Tool):
    key = "dehydrated"
    label = "dehydrated -c --force"
    uses_hook = True

    def __init__(self, exe: str, pebble: Pebble, base: Path, config: Path) -> None:
        self.exe = exe
        self.pebble = pebble
        self.base = base
        self.config = config
        self.path_prefix: str | None = None  # the sleep shim of the profiling runs

    def register_argv(self) -> list[str]:
        return [self.exe, "-f", str(self.config), "--register", "--accept-terms"]

    def argv(self, profile: Path | None = None, importtime: bool = False) -> list[str]:
        return [self.exe, "-f", str(self.config), "-c", "-d", ZONE, "-d", f"*.{ZONE}", "--force"]

    def env(self) -> dict[str, str]:
        env = {**clean_env(), "CURL_CA_BUNDLE": str(self.pebble.ca_bundle)}
        if self.path_prefix:
            env["PATH"] = f"{self.path_prefix}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def current(self) -> tuple[int | None, int | None]:
        certdir = self.base / "certs" / ZONE
        if not (certdir / "cert.pem").exists():
            return None, None
        cert = (certdir / "cert.pem").read_text()
        return leaf_facts(cert, (certdir / "privkey.pem").read_text(), f"dehydrated {certdir}"), None
