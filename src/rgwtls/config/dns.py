"""[dns]: which back end publishes the records, how names are validated, how long to wait for the servers.

Each back end's own table is a module of its own beside this one (infoblox,
uddi, rfc2136, hook), as each back end is in rgwtls/dns/.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rgwtls.config.hook import HookConfig
from rgwtls.config.infoblox import InfobloxConfig, validate_infoblox
from rgwtls.config.rfc2136 import Rfc2136Config
from rgwtls.config.uddi import UddiConfig
from rgwtls.config.values import Where

PERSIST = "dns-persist-01"
CHALLENGES = ("dns-01", PERSIST)
PROVIDERS = ("infoblox", "uddi", "rfc2136", "hook")


@dataclass(frozen=True)
class DnsConfig:
    """[dns]: which back end publishes the records, and how long to wait until every server has them."""

    provider: str = "infoblox"
    # Authoritative servers to check ("host" or "host:port"). Empty: discover
    # them from the zone's NS records. Set it for split-horizon views, where
    # the servers the CA asks are not the ones the NS records name.
    nameservers: tuple[str, ...] = ()
    # Resolvers used to discover zones and nameservers; empty: the system's.
    resolvers: tuple[str, ...] = ()
    # The port discovered nameservers are asked on.
    nameserver_port: int = 53
    propagation_timeout: float = 300.0
    propagation_interval: float = 5.0
    query_timeout: float = 3.0
    # How each certificate's names are validated, unless its [[certificate]]
    # says otherwise: "dns-01", a TXT record written and removed at every
    # order, or "dns-persist-01", one standing record that `rgwtls persist
    # --publish` writes once, after which orders need no DNS write at all.
    challenge: str = "dns-01"
    infoblox: InfobloxConfig = field(default_factory=InfobloxConfig)
    rfc2136: Rfc2136Config = field(default_factory=Rfc2136Config)
    hook: HookConfig = field(default_factory=HookConfig)
    uddi: UddiConfig = field(default_factory=UddiConfig)


def validate_dns(dns: DnsConfig, where: Where) -> None:
    """A back end and a challenge rgwtls has; the back ends' tables first, as they read in the file."""
    validate_infoblox(dns.infoblox, where)
    if dns.provider not in PROVIDERS:
        raise where.error("dns.provider", "must be infoblox, uddi, rfc2136 or hook")
    if dns.challenge not in CHALLENGES:
        raise where.error("dns.challenge", f"must be {' or '.join(CHALLENGES)}, not {dns.challenge!r}")
