"""[dns.uddi]: Infoblox Universal DDI, the cloud API."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UddiConfig:
    """[dns.uddi]: Infoblox's cloud API; the API key lives in a file readable only by its owner."""

    # Infoblox Universal DDI (the Cloud Services Portal): https://PORTAL/api/ddi/v1/
    portal: str = "csp.infoblox.com"
    api_key_file: str = ""
    # The DNS view (by name) of the zones; empty: whichever view holds the zone, if only one does.
    view: str = ""
    # The view of the zone delegated challenges go to; empty: `view`.
    alias_view: str = ""
    ttl: int = 60
    ca_bundle: str = ""
    timeout: float = 30.0
    # Attempts per request on 429 (after its Retry-After), 5xx and network errors.
    retries: int = 4
    # Longest wait a 429's Retry-After may ask for; a longer one fails at once.
    max_retry_after: float = 60.0
