"""[dns.hook]: a dehydrated-style hook for the DNS services rgwtls has no back end for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HookConfig:
    """[dns.hook]: a dehydrated-style hook, for DNS services rgwtls has no back end for."""

    command: str = ""
    timeout: float = 120.0
