"""RFC 2136 back end: TSIG-signed dynamic updates, for BIND or Infoblox's own support.

Updates add and delete one (name, TXT value) pair each, so a record someone
else put at the same name is never touched.

A delegated challenge goes to the target zone's primary with its own key
(the `alias_*` settings), so the production zone's key is never needed for it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.tsig
import dns.tsigkeyring
import dns.update

from rgwtls.config import Rfc2136Config, read_secret
from rgwtls.dns import Challenge
from rgwtls.errors import DnsError


@dataclass
class _Primary:
    """One primary nameserver, the key it takes, and the zone (if configured) updates go to."""

    server: str
    port: int
    zone: str
    key_name: str
    secret_file: str
    secret_key: str  # the config key naming secret_file, for errors
    keyring: dict[dns.name.Name, dns.tsig.Key] = field(default_factory=dict)
    zones: dict[str, dns.name.Name] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.server}:{self.port}"


class Rfc2136:
    name = "rfc2136"

    def __init__(self, cfg: Rfc2136Config, cfg_path: Path) -> None:
        if not cfg.server:
            raise DnsError(f"config {cfg_path}: dns.rfc2136.server: required (the primary nameserver)")
        if not cfg.tsig_key_name:
            raise DnsError(f"config {cfg_path}: dns.rfc2136.tsig_key_name: required")
        self.cfg = cfg
        self._cfg_path = cfg_path
        self._algorithm = dns.name.from_text(cfg.tsig_algorithm)
        self._home = self._keyed(
            _Primary(
                cfg.server, cfg.port, cfg.zone, cfg.tsig_key_name, cfg.tsig_secret_file, "dns.rfc2136.tsig_secret_file"
            )
        )
        self._alias: _Primary | None = None

    def _keyed(self, primary: _Primary) -> _Primary:
        secret = read_secret(primary.secret_file, primary.secret_key, self._cfg_path)
        try:
            base64.b64decode(secret, validate=True)
            primary.keyring = dns.tsigkeyring.from_text({primary.key_name: secret})
        except (binascii.Error, ValueError):
            raise DnsError(
                f"config {self._cfg_path}: {primary.secret_key}: {primary.secret_file} "
                "does not hold a base64 TSIG secret"
            ) from None
        return primary

    def _primary(self, ch: Challenge) -> _Primary:
        """The production zone's primary, or for a delegated challenge the target zone's (read when first needed)."""
        if not ch.delegated:
            return self._home
        if self._alias is None:
            c = self.cfg
            if not (c.alias_server or c.alias_zone or c.alias_tsig_key_name or c.alias_tsig_secret_file):
                self._alias = _Primary(c.server, c.port, "", c.tsig_key_name, "", "", self._home.keyring)
            else:
                self._alias = self._keyed(
                    _Primary(
                        c.alias_server or c.server,
                        c.alias_port if c.alias_server else c.port,
                        c.alias_zone,
                        c.alias_tsig_key_name or c.tsig_key_name,
                        c.alias_tsig_secret_file or c.tsig_secret_file,
                        "dns.rfc2136.alias_tsig_secret_file"
                        if c.alias_tsig_secret_file
                        else "dns.rfc2136.tsig_secret_file",
                    )
                )
        return self._alias

    def present(self, ch: Challenge) -> None:
        self._update(ch, add=True)

    def cleanup(self, ch: Challenge) -> None:
        self._update(ch, add=False)

    def _update(self, ch: Challenge, add: bool) -> None:
        verb = "add" if add else "delete"
        primary = self._primary(ch)
        where = primary.where
        zone = self._zone(primary, ch.record_name)
        try:
            upd = dns.update.UpdateMessage(
                zone,
                keyring=primary.keyring,
                keyname=dns.name.from_text(primary.key_name),
                keyalgorithm=self._algorithm,
            )
            name = dns.name.from_text(ch.record_name)
            if add:
                upd.add(name, self.cfg.ttl, "TXT", _quoted(ch.value))
            else:
                upd.delete(name, "TXT", _quoted(ch.value))
            resp = dns.query.tcp(upd, primary.server, port=primary.port, timeout=self.cfg.timeout)
        except dns.exception.Timeout:
            raise DnsError(
                f"rfc2136: could not {verb} TXT record {ch.record_name}: no answer from {where} "
                f"within {self.cfg.timeout:g}s"
            ) from None
        except _FAILURES as e:
            raise DnsError(f"rfc2136: could not {verb} TXT record {ch.record_name} at {where}: {_said(e)}") from None
        rcode = resp.rcode()
        if rcode != dns.rcode.NOERROR:
            hint = (
                "; check the TSIG key and the server's update-policy"
                if rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH)
                else ""
            )
            raise DnsError(
                f"rfc2136: could not {verb} TXT record {ch.record_name}: {where} answered "
                f"{dns.rcode.to_text(rcode)}{hint}"
            )

    def _zone(self, primary: _Primary, record_name: str) -> dns.name.Name:
        """The configured zone, else the closest enclosing zone the server itself has an SOA for."""
        setting = "dns.rfc2136.alias_zone" if primary is self._alias else "dns.rfc2136.zone"
        if record_name in primary.zones:
            return primary.zones[record_name]
        try:
            if primary.zone:
                return dns.name.from_text(primary.zone)
            candidate = dns.name.from_text(record_name)
        except _FAILURES as e:
            raise DnsError(f"rfc2136: {primary.zone or record_name} is not a domain name: {_said(e)}") from None
        while candidate != dns.name.root:
            q = dns.message.make_query(candidate, dns.rdatatype.SOA)
            try:
                resp = dns.query.udp(q, primary.server, port=primary.port, timeout=self.cfg.timeout)
            except _FAILURES as e:
                raise DnsError(
                    f"rfc2136: cannot find the zone of {record_name} at {primary.where}: {_said(e)}; set {setting}"
                ) from None
            if any(rr.rdtype == dns.rdatatype.SOA and rr.name == candidate for rr in resp.answer):
                primary.zones[record_name] = candidate
                return candidate
            candidate = candidate.parent()
        raise DnsError(f"rfc2136: {primary.where} is authoritative for no zone above {record_name}; set {setting}")


# What a query or an update may raise besides DNSException: socket errors, and
# EOFError when the server closes a TCP connection before its answer.
_FAILURES = (OSError, EOFError, ValueError, dns.exception.DNSException)


def _said(e: Exception) -> str:
    return str(e) or type(e).__name__


def _quoted(value: str) -> str:
    # ACME values are base64url, so no quoting issues; the quotes keep it one string.
    return f'"{value}"'
