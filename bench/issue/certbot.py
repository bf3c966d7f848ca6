"""certbot in the issue benchmark: `certbot certonly --manual`, publishing through the shared hook."""

from __future__ import annotations

import shlex
from pathlib import Path

from bench.issue.tool import EMAIL, Tool, clean_env, leaf_facts, write_script
from devsite.pebble import Pebble
from devsite.site import ZONE

# The key rgwtls makes by default (see KEY_NOTE in bench.issue.report).
CERTBOT_KEY_ARGS = ("--key-type", "rsa", "--rsa-key-size", "2048")


def certbot_hooks(workdir: Path, hook: Path, suffix: str) -> tuple[Path, Path]:
    """The auth and cleanup hooks: `hook`, called as dehydrated calls it."""
    # certbot passes the domain and the value in its environment; the hook takes them as
    # dehydrated passes them. CERTBOT_DOMAIN is the name without "*." for a wildcard.
    auth = write_script(
        workdir / f"certbot-auth{suffix}.sh",
        f'#!/bin/sh\nexec {shlex.quote(str(hook))} deploy_challenge "$CERTBOT_DOMAIN" '
        '"${CERTBOT_TOKEN:-}" "$CERTBOT_VALIDATION"\n',
    )
    cleanup = write_script(
        workdir / f"certbot-cleanup{suffix}.sh",
        f'#!/bin/sh\nexec {shlex.quote(str(hook))} clean_challenge "$CERTBOT_DOMAIN" '
        '"${CERTBOT_TOKEN:-}" "$CERTBOT_VALIDATION"\n',
    )
    return auth, cleanup


class Certbot(Tool):
    key = "certbot"
    label = "certbot certonly --manual"
    uses_hook = True
    python = "/usr/bin/python3"  # the interpreter of Debian's certbot

    def __init__(self, exe: str, pebble: Pebble, base: Path, auth: Path, cleanup: Path) -> None:
        self.exe = exe
        self.pebble = pebble
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

    def account(self) -> list[str]:
        """The CA and the account, as every certbot command here names them."""
        return ["--server", self.pebble.directory_url, "--non-interactive", "--agree-tos", "-m", EMAIL]

    def register_argv(self) -> list[str]:
        return [self.exe, "register", *self.account(), "--no-eff-email", *self.dirs()]

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
            *self.account(),
            "--force-renewal",
            *CERTBOT_KEY_ARGS,
            "-d",
            ZONE,
            "-d",
            f"*.{ZONE}",
            *self.dirs(),
        ]
        if profile is not None:
            return [self.python, "-m", "cProfile", "-o", str(profile), self.exe, *args]
        if importtime:
            return [self.python, "-X", "importtime", self.exe, *args]
        return [self.exe, *args]

    def env(self) -> dict[str, str]:
        return {**clean_env(), "REQUESTS_CA_BUNDLE": str(self.pebble.ca_bundle)}

    def current(self) -> tuple[int | None, int | None]:
        live = self.base / "config" / "live" / ZONE
        if not (live / "cert.pem").exists():
            return None, None
        cert = (live / "cert.pem").read_text()
        return leaf_facts(cert, (live / "privkey.pem").read_text(), f"certbot {live}"), None
