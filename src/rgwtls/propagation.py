"""Wait until every authoritative nameserver answers every challenge value.

The CA asks whichever authoritative server it likes, so one server that
lags is a failed validation. We ask each server directly (no resolver cache
in between), on an interval, until a deadline: no fixed sleeps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.nameserver
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from rgwtls.config import DnsConfig
from rgwtls.errors import DnsError, PropagationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Server:
    """One address of an authoritative nameserver; `name` is the nameserver as the zone or config names it."""

    host: str
    port: int
    name: str = ""

    def __str__(self) -> str:
        return self.host if self.port == 53 else f"{self.host}:{self.port}"

    def named(self) -> str:
        """The nameserver and this address of it, for a line that must say which server answered what."""
        return f"{self.name} ({self})" if self.name and self.name != self.host else str(self)


class BadRcode(dns.exception.DNSException):
    """A server answered, but with SERVFAIL, REFUSED or another error: not "the values are missing".

    A DNSException, so that every caller that handles a server giving no
    answer (persist's check too) handles this one.
    """

    def __init__(self, rcode: dns.rcode.Rcode) -> None:
        # dnspython's DNSException.__init__ has no annotations.
        super().__init__(f"answered {dns.rcode.to_text(rcode)}")  # type: ignore[no-untyped-call]


def parse_server(text: str, default_port: int = 53) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 address."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default_port


def _resolver(cfg: DnsConfig) -> dns.resolver.Resolver:
    if not cfg.resolvers:
        res = dns.resolver.Resolver()
    else:
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = [dns.nameserver.Do53Nameserver(*parse_server(r)) for r in cfg.resolvers]
    res.lifetime = cfg.query_timeout * 2
    res.timeout = cfg.query_timeout
    return res


def _addresses(res: dns.resolver.Resolver, host: str) -> list[str]:
    if dns.inet.is_address(host):
        return [host]
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            found += [r.to_text() for r in res.resolve(host, rdtype)]
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            continue
    if not found:
        raise PropagationError(f"nameserver {host} has no address")
    return found


def authoritative_servers(record_name: str, cfg: DnsConfig) -> list[Server]:
    """The configured list (split horizon), else the zone's NS records."""
    res = _resolver(cfg)
    try:
        if cfg.nameservers:
            servers = []
            for entry in cfg.nameservers:
                host, port = parse_server(entry, 53)
                servers += [Server(a, port, host) for a in _addresses(res, host)]
            return servers
        zone = dns.resolver.zone_for_name(record_name, resolver=res)
        targets = sorted(r.target.to_text() for r in res.resolve(zone, "NS"))
        return [Server(a, cfg.nameserver_port, t.rstrip(".")) for t in targets for a in _addresses(res, t)]
    except dns.exception.DNSException as e:
        raise PropagationError(
            f"cannot find the authoritative nameservers of {record_name}: {e}; set dns.nameservers to list them"
        ) from None


MAX_CNAME_CHAIN = 8


def cname_target(record_name: str, cfg: DnsConfig) -> str:
    """Where the CA ends up when it asks for `record_name`: the end of its CNAME chain; empty if it is no CNAME.

    Asked through dns.resolvers, as the CA asks its own. A loop, a chain
    longer than MAX_CNAME_CHAIN, or a target in no zone the resolvers know
    (a dangling CNAME) is a DnsError, raised before anything is published.
    """
    res = _resolver(cfg)
    chain = [record_name.rstrip(".")]
    while True:
        name = chain[-1]
        try:
            answer = res.resolve(dns.name.from_text(name), "CNAME")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            break
        except dns.exception.DNSException as e:
            if len(chain) > 1:
                break  # a target nobody answers for: whether it dangles, its zone tells
            raise DnsError(
                f"cannot tell whether {name} is a CNAME (delegated challenge): {e}; "
                "check dns.resolvers, or set challenge_alias"
            ) from None
        target = str(answer[0].target).rstrip(".").lower()
        if target in chain:
            raise DnsError(f"the CNAME chain of {record_name} loops: {' -> '.join([*chain, target])}; fix the CNAMEs")
        chain.append(target)
        if len(chain) > MAX_CNAME_CHAIN + 1:
            raise DnsError(f"the CNAME chain of {record_name} is longer than {MAX_CNAME_CHAIN}: {' -> '.join(chain)}")
    if len(chain) == 1:
        return ""
    target = chain[-1]
    shown = " -> ".join(chain)
    try:
        zone = dns.resolver.zone_for_name(target, resolver=res)
    except dns.exception.DNSException as e:
        zone, why = None, str(e) or type(e).__name__
    else:
        why = "only the root zone holds it"
    if zone is None or zone == dns.name.root:
        raise DnsError(
            f"{record_name} is a dangling CNAME: {shown}, and {target} is in no zone the resolvers know ({why}); "
            "fix the CNAME, or set challenge_alias"
        )
    log.info("%s is delegated: %s", record_name, shown)
    return target


def txt_values(server: Server, name: str, timeout: float) -> set[str]:
    """What this server itself answers, asked without recursion.

    Any bytes are a TXT value, and other tools put non-UTF-8 ones beside
    ours: they are decoded with replacement, so they never equal a challenge
    value (always ASCII) and never stop the wait. An error rcode (SERVFAIL,
    REFUSED: the server does not serve the zone, or cannot) is BadRcode, so
    the line names that server and what it said, not "values missing".
    """
    q = dns.message.make_query(name, dns.rdatatype.TXT)
    q.flags &= ~dns.flags.RD
    resp = dns.query.udp(q, server.host, port=server.port, timeout=timeout)
    if resp.flags & dns.flags.TC:
        resp = dns.query.tcp(q, server.host, port=server.port, timeout=timeout)
    rcode = resp.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise BadRcode(rcode)
    values: set[str] = set()
    for rrset in resp.answer:
        if rrset.rdtype == dns.rdatatype.TXT:
            values |= {b"".join(r.strings).decode(errors="replace") for r in rrset}
    return values


def wait_for_values(
    expected: Mapping[str, set[str]],
    cfg: DnsConfig,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Return once every server of every name answers all its values; the seconds it took."""
    started = time.monotonic()
    deadline = started + cfg.propagation_timeout
    pending: dict[tuple[Server, str], str] = {}
    for name in expected:
        for server in authoritative_servers(name, cfg):
            pending[(server, name)] = "not asked yet"
    log.info(
        "waiting for %d TXT value(s) at %d authoritative server(s)",
        sum(len(v) for v in expected.values()),
        len({s for s, _ in pending}),
    )
    while True:
        for server, name in list(pending):
            try:
                have = txt_values(server, name, cfg.query_timeout)
            except BadRcode as e:
                pending[(server, name)] = str(e)
                continue
            except (OSError, dns.exception.DNSException) as e:
                pending[(server, name)] = f"no answer ({e or type(e).__name__})"
                continue
            missing = expected[name] - have
            if missing:
                pending[(server, name)] = f"{len(missing)} of {len(expected[name])} value(s) missing"
            else:
                del pending[(server, name)]
        if not pending:
            took = time.monotonic() - started
            log.info("all authoritative servers answer the challenge values (%.1fs)", took)
            return took
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            worst = "; ".join(
                f"{s.named()} for {n}: {why}"
                for (s, n), why in sorted(pending.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))
            )
            raise PropagationError(
                f"DNS did not propagate within {cfg.propagation_timeout:g}s: {worst}; "
                "check that the DNS back end publishes to these servers (dns.nameservers for split horizon)"
            )
        sleep(min(cfg.propagation_interval, remaining))
