"""RFC 2136 back end: TSIG-signed dynamic updates, for BIND or Infoblox's own support.

Updates add and delete one (name, TXT value) pair each, so a record someone
else put at the same name is never touched.
"""

from __future__ import annotations

import base64
import binascii
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


class Rfc2136:
    name = "rfc2136"

    def __init__(self, cfg: Rfc2136Config, cfg_path: Path) -> None:
        if not cfg.server:
            raise DnsError(f"config {cfg_path}: dns.rfc2136.server: required (the primary nameserver)")
        if not cfg.tsig_key_name:
            raise DnsError(f"config {cfg_path}: dns.rfc2136.tsig_key_name: required")
        secret = read_secret(cfg.tsig_secret_file, "dns.rfc2136.tsig_secret_file", cfg_path)
        try:
            base64.b64decode(secret, validate=True)
            self._keyring = dns.tsigkeyring.from_text({cfg.tsig_key_name: secret})
        except (binascii.Error, ValueError):
            raise DnsError(
                f"config {cfg_path}: dns.rfc2136.tsig_secret_file: {cfg.tsig_secret_file} "
                "does not hold a base64 TSIG secret"
            ) from None
        self.cfg = cfg
        self._algorithm = dns.name.from_text(cfg.tsig_algorithm)
        self._zones: dict[str, dns.name.Name] = {}

    def present(self, ch: Challenge) -> None:
        self._update(ch, add=True)

    def cleanup(self, ch: Challenge) -> None:
        self._update(ch, add=False)

    def _update(self, ch: Challenge, add: bool) -> None:
        verb = "add" if add else "delete"
        where = f"{self.cfg.server}:{self.cfg.port}"
        zone = self._zone(ch.record_name)
        try:
            upd = dns.update.UpdateMessage(zone, keyring=self._keyring, keyalgorithm=self._algorithm)
            name = dns.name.from_text(ch.record_name)
            if add:
                upd.add(name, self.cfg.ttl, "TXT", _quoted(ch.value))
            else:
                upd.delete(name, "TXT", _quoted(ch.value))
            resp = dns.query.tcp(upd, self.cfg.server, port=self.cfg.port, timeout=self.cfg.timeout)
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

    def _zone(self, record_name: str) -> dns.name.Name:
        """The configured zone, else the closest enclosing zone the server itself has an SOA for."""
        if record_name in self._zones:
            return self._zones[record_name]
        try:
            if self.cfg.zone:
                return dns.name.from_text(self.cfg.zone)
            candidate = dns.name.from_text(record_name)
        except _FAILURES as e:
            raise DnsError(f"rfc2136: {self.cfg.zone or record_name} is not a domain name: {_said(e)}") from None
        while candidate != dns.name.root:
            q = dns.message.make_query(candidate, dns.rdatatype.SOA)
            try:
                resp = dns.query.udp(q, self.cfg.server, port=self.cfg.port, timeout=self.cfg.timeout)
            except _FAILURES as e:
                raise DnsError(
                    f"rfc2136: cannot find the zone of {record_name} at "
                    f"{self.cfg.server}:{self.cfg.port}: {_said(e)}; set dns.rfc2136.zone"
                ) from None
            if any(rr.rdtype == dns.rdatatype.SOA and rr.name == candidate for rr in resp.answer):
                self._zones[record_name] = candidate
                return candidate
            candidate = candidate.parent()
        raise DnsError(
            f"rfc2136: {self.cfg.server}:{self.cfg.port} is authoritative for no zone above "
            f"{record_name}; set dns.rfc2136.zone"
        )


# What a query or an update may raise besides DNSException: socket errors, and
# EOFError when the server closes a TCP connection before its answer.
_FAILURES = (OSError, EOFError, ValueError, dns.exception.DNSException)


def _said(e: Exception) -> str:
    return str(e) or type(e).__name__


def _quoted(value: str) -> str:
    # ACME values are base64url, so no quoting issues; the quotes keep it one string.
    return f'"{value}"'
