"""Hook back end: a dehydrated hook, called exactly as dehydrated calls it.

`HOOK deploy_challenge DOMAIN TOKEN_FILENAME TOKEN_VALUE` and
`HOOK clean_challenge DOMAIN TOKEN_FILENAME TOKEN_VALUE`, one call per value,
so that a site's existing hook works unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

from rgwtls.command import CommandFailed, run
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
        try:
            run([self.cfg.command, op, ch.domain, ch.token, ch.value], self.cfg.timeout)
        except CommandFailed as e:
            raise DnsError(f"hook: {self.cfg.command} {op} {ch.domain} {e.problem}") from None
