"""Hook back end: a dehydrated hook, called exactly as dehydrated calls it.

`HOOK deploy_challenge DOMAIN TOKEN_FILENAME TOKEN_VALUE` and
`HOOK clean_challenge DOMAIN TOKEN_FILENAME TOKEN_VALUE`, one call per value,
so that a site's existing hook works unchanged.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from rgwtls.config import HookConfig
from rgwtls.dns import Challenge
from rgwtls.errors import DnsError


class Hook:
    name = "hook"

    def __init__(self, cfg: HookConfig, cfg_path: Path) -> None:
        if not cfg.command:
            raise DnsError(f"config {cfg_path}: dns.hook.command: required (the hook's path)")
        if not os.access(cfg.command, os.X_OK):
            raise DnsError(f"config {cfg_path}: dns.hook.command: {cfg.command} is not an executable file")
        self.cfg = cfg

    def present(self, ch: Challenge) -> None:
        self._run("deploy_challenge", ch)

    def cleanup(self, ch: Challenge) -> None:
        self._run("clean_challenge", ch)

    def _run(self, op: str, ch: Challenge) -> None:
        argv = [self.cfg.command, op, ch.domain, ch.token, ch.value]
        try:
            res = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.cfg.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DnsError(
                f"hook: {self.cfg.command} {op} {ch.domain} did not finish within {self.cfg.timeout:g}s"
            ) from None
        except OSError as e:
            raise DnsError(f"hook: cannot run {self.cfg.command}: {e.strerror}") from None
        if res.returncode != 0:
            said = (res.stderr.strip() or res.stdout.strip()).splitlines()
            tail = f": {said[-1]}" if said else ""
            raise DnsError(f"hook: {self.cfg.command} {op} {ch.domain} failed (exit {res.returncode}){tail}")
