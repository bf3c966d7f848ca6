"""Hook back end: a dehydrated hook, called exactly as dehydrated calls it.

`HOOK deploy_challenge DOMAIN TOKEN_FILENAME TOKEN_VALUE` and
`HOOK clean_challenge DOMAIN TOKEN_FILENAME TOKEN_VALUE`, one call per value,
so that a site's existing hook works unchanged.

A delegated challenge is handed over as the domain whose `_acme-challenge`
name is its target (`acme.example.net` for `_acme-challenge.acme.example.net`),
so the same hook writes it there, in the target zone. A hook can only write
`_acme-challenge.DOMAIN`: a CNAME to any other name is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

from rgwtls import deadline
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
        domain = ch.domain
        if ch.delegated:
            domain = ch.record_name.removeprefix("_acme-challenge.")
            if domain == ch.record_name:
                raise DnsError(
                    f"hook: the challenge for {ch.domain} is delegated to {ch.record_name}, and a hook can only "
                    "write _acme-challenge.DOMAIN: point the CNAME at an _acme-challenge name, or set challenge_alias"
                )
        # Once the run is stopping, a cleanup call gets the wind-down's few seconds, not dns.hook.timeout.
        timeout = deadline.limit(self.cfg.timeout) or 0.0
        if timeout <= 0:
            raise DnsError(f"hook: {self.cfg.command} {op} {domain} {deadline.used_up()}")
        try:
            run([self.cfg.command, op, domain, ch.token, ch.value], timeout)
        except CommandFailed as e:
            raise DnsError(f"hook: {self.cfg.command} {op} {domain} {e.problem}") from None
