"""The configured DNS back end: above the back ends it chooses among, below what uses them."""

from __future__ import annotations

from rgwtls.config import Config
from rgwtls.dns import DnsProvider


def make_provider(cfg: Config) -> DnsProvider:
    """The configured back end; its secrets are read here, so only `issue` needs them."""
    kind = cfg.dns.provider
    if kind == "infoblox":
        from rgwtls.dns.infoblox import Infoblox

        return Infoblox(cfg.dns.infoblox, cfg.path)
    if kind == "uddi":
        from rgwtls.dns.uddi import Uddi

        return Uddi(cfg.dns.uddi, cfg.path)
    if kind == "rfc2136":
        from rgwtls.dns.rfc2136 import Rfc2136

        return Rfc2136(cfg.dns.rfc2136, cfg.path)
    from rgwtls.dns.hook import Hook

    return Hook(cfg.dns.hook, cfg.path)
