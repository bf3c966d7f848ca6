"""[dns.infoblox]: the Infoblox grid's WAPI."""

from __future__ import annotations

from dataclasses import dataclass

from rgwtls.config.values import Where, check_proxy


@dataclass(frozen=True)
class InfobloxConfig:
    """[dns.infoblox]: the grid's WAPI; the password lives in a file readable only by its owner."""

    server: str = ""
    wapi_version: str = "2.11"
    username: str = ""
    password_file: str = ""
    view: str = "default"
    ttl: int = 60
    verify_tls: bool = True
    ca_bundle: str = ""
    timeout: float = 30.0
    retries: int = 3
    # WAPI through this proxy (http://host:port), or "direct"; empty: direct
    # when acme.proxy is set, else the environment decides (see `parse`).
    proxy: str = ""
    # The view of the zone delegated challenges (CNAME or challenge_alias) go to; empty: `view`.
    alias_view: str = ""


def validate_infoblox(infoblox: InfobloxConfig, where: Where) -> None:
    """The WAPI's proxy is plain: its password would have no key of its own to live in."""
    check_proxy(infoblox.proxy, "dns.infoblox.proxy", where, user_allowed=False)
