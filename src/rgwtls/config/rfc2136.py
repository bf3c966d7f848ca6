"""[dns.rfc2136]: a primary name server taking TSIG-signed dynamic updates."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rfc2136Config:
    """[dns.rfc2136]: a primary taking TSIG-signed updates; the secret lives in a file."""

    server: str = ""
    port: int = 53
    zone: str = ""
    tsig_key_name: str = ""
    tsig_algorithm: str = "hmac-sha256"
    tsig_secret_file: str = ""
    ttl: int = 60
    timeout: float = 10.0
    # Delegated challenges (CNAME or challenge_alias) go to the target zone's
    # primary with its own key; each empty value: the one above.
    alias_server: str = ""
    alias_port: int = 53
    alias_zone: str = ""
    alias_tsig_key_name: str = ""
    alias_tsig_secret_file: str = ""
