"""DNS back ends: one interface, one module each.

A back end publishes and removes exactly the TXT values it is given. It never
matches by name alone: a wildcard and its apex share `_acme-challenge.<zone>`
with two values at once, and the name may hold records of other tools.

A delegated challenge (`Challenge.target`) is written at its target, in the
target zone, with the back end's alias settings: never in the production zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Challenge:
    """One DNS-01 value to publish.

    `domain` is the identifier without its `*.`: the form dehydrated hooks
    receive. `token` is the ACME challenge token, the hooks' TOKEN_FILENAME.
    """

    domain: str
    token: str
    value: str
    # Where the value goes when the challenge is delegated: the end of the
    # _acme-challenge CNAME chain, or _acme-challenge.<challenge_alias>.
    target: str = ""

    @property
    def record_name(self) -> str:
        return self.target or f"_acme-challenge.{self.domain}"

    @property
    def delegated(self) -> bool:
        return bool(self.target)


class DnsProvider(Protocol):
    name: str

    def present(self, ch: Challenge) -> None:
        """Publish the value; raise DnsError (prefixed with the back end's name) if not."""

    def cleanup(self, ch: Challenge) -> None:
        """Remove exactly this value, published by this run or by a crashed earlier one."""
