"""[[acme.fallback]]: the CAs asked, in order, when acme.directory cannot issue in this run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rgwtls.config.values import Where


@dataclass(frozen=True)
class FallbackCa:
    """[[acme.fallback]]: a CA asked, in order, when acme.directory cannot issue in this run (each its own account)."""

    directory: str
    ca_bundle: str = ""
    eab_kid: str = ""
    eab_hmac_key_file: str = ""
    profile: str = ""
    preferred_chain: str = ""


def validate_fallbacks(primary: str, fallbacks: Sequence[FallbackCa], where: Where) -> None:
    """Each CA once, so that an outage never asks one CA twice; a binding whole, or none."""
    seen = {primary}
    for ca in fallbacks:
        if ca.directory in seen:
            raise where.error("acme.fallback", f"{ca.directory} is named twice (acme.directory or another fallback)")
        seen.add(ca.directory)
        if bool(ca.eab_kid) != bool(ca.eab_hmac_key_file):
            raise where.error(
                "acme.fallback", f"{ca.directory}: External Account Binding needs both eab_kid and eab_hmac_key_file"
            )
