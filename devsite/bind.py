"""A real authoritative BIND 9 for the test zones, updated through RFC 2136.

Each instance is one `named -g` in its own work directory, listening on one
loopback port for UDP and TCP, so that two instances of the same zone can run
side by side (one updated, one that never gets the record).

Update policy, and why it is this one
-------------------------------------
The TSIG key may change TXT records at `_acme-challenge.Z.` only, by a `name`
rule (an exact owner-name match, the tightest rule type BIND has):

    grant "KEY" name _acme-challenge.Z. TXT;

That is the one name the ACME DNS-01 challenges for both `Z` and `*.Z` use;
`_validation-persist.Z.`, the standing record of dns-persist-01 for both, is
granted the same way.
BIND's grammar cannot say `_acme-challenge.<any sub-name>.Z.`: `wildcard`
takes a wildcard only in the leftmost label (`*.Z.`), and so would let the key
write TXT records at *every* name in the zone; `subdomain`/`zonesub` are as
wide, and `self`/`selfsub`/`selfwild` tie the name to the key's own name. A
test that needs `_acme-challenge.<host>.Z.` names them in `acme_hosts`, and
each gets its own `name` rule. Everything else, A records included, is refused.

Delegated challenges
--------------------
A zone may have a key of its own (`zone_keys`), as a site gives the issuer
a key for a small challenge zone only: each key may then write in its own
zone only. `txt_names` are further exact names a key may write TXT records
at (the CNAME targets of a challenge zone), and `records` are zone-file lines
(the CNAMEs themselves), which no key may change.
"""

from __future__ import annotations

import base64
import functools
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.tsigkeyring
import dns.update

from devsite.ports import free_port
from devsite.proc import START_BOUND, Server, run

NEGATIVE_TTL = 5  # SOA minimum: how long a resolver may cache "no such TXT"
DEFAULT_TTL = 5  # $TTL of the zone's own records
QUERY_TIMEOUT = 2.0


@functools.cache
def _named_version() -> tuple[int, int]:
    """(major, minor) of this machine's named: `named -v` says `BIND 9.18.33-1~deb12u2-Debian (...)`."""
    major, minor = run(["named", "-v"]).split()[1].split(".")[:2]
    return int(major), int(minor)


def _lock_file(d: Path) -> str:
    """Each instance's own lock file (9.18's default one would clash); BIND 9.20 (the Tentacle root's) has none."""
    return f'lock-file "{d}/named.lock";' if _named_version() < (9, 20) else "// no lock-file: BIND 9.20 has none"


class UpdateFailed(RuntimeError):
    """BIND answered an RFC 2136 update with something other than NOERROR."""

    def __init__(self, zone: str, rcode: dns.rcode.Rcode, detail: str = "") -> None:
        self.zone = zone
        self.rcode = rcode
        super().__init__(
            f"update of zone {zone} failed: {dns.rcode.to_text(rcode)}" + (f" ({detail})" if detail else "")
        )


def _abs(name: str) -> dns.name.Name:
    return dns.name.from_text(name.rstrip(".") + ".")


def _txt_rdata(value: str) -> dns.rdtypes.ANY.TXT.TXT:
    """One TXT rdata holding `value`, cut into the 255-byte strings DNS needs."""
    raw = value.encode()
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)


@dataclass
class Bind:
    port: int  # 127.0.0.1, UDP and TCP
    zones: tuple[str, ...]  # e.g. ("cog.example.org",)
    tsig_name: str  # e.g. "rgwtls-test"
    tsig_secret: str  # base64
    tsig_algorithm: str  # "hmac-sha256"
    workdir: Path = field(repr=False)
    server: Server | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    # zone -> (key name, base64 secret) of a zone with a key of its own
    zone_keys: dict[str, tuple[str, str]] = field(default_factory=dict)

    # -- queries -----------------------------------------------------------------

    def query(
        self, name: str, rdtype: str = "TXT", tcp: bool = False, timeout: float = QUERY_TIMEOUT
    ) -> dns.message.Message:
        """Ask this server directly (no recursion) and return its whole answer."""
        q = dns.message.make_query(_abs(name), rdtype)
        q.flags &= ~dns.flags.RD
        if tcp:
            return dns.query.tcp(q, self.host, timeout=timeout, port=self.port)
        return dns.query.udp(q, self.host, timeout=timeout, port=self.port)

    def txt(self, name: str) -> set[str]:
        """The TXT values this server answers for `name` (empty on NXDOMAIN or NODATA)."""
        resp = self.query(name, "TXT")
        rcode = resp.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            return set()
        if rcode != dns.rcode.NOERROR:
            raise RuntimeError(f"{name} TXT: {dns.rcode.to_text(rcode)} from {self.host}:{self.port}")
        owner = _abs(name)
        values: set[str] = set()
        for rrset in resp.answer:
            if rrset.name == owner and rrset.rdtype == dns.rdatatype.TXT:
                for rd in rrset:
                    values.add(b"".join(rd.strings).decode())
        return values

    def serial(self, zone: str | None = None) -> int:
        resp = self.query(zone or self.zones[0], "SOA")
        for rrset in resp.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                return int(rrset[0].serial)
        raise RuntimeError(f"no SOA for {zone or self.zones[0]} from {self.host}:{self.port}")

    def answers_soa(self) -> bool:
        """Ready: every zone is loaded and answered authoritatively."""
        for zone in self.zones:
            resp = self.query(zone, "SOA", timeout=0.1)
            if resp.rcode() != dns.rcode.NOERROR or not resp.flags & dns.flags.AA or not resp.answer:
                return False
        return True

    # -- updates -----------------------------------------------------------------

    def zone_of(self, name: str) -> str:
        """The served zone that `name` is in (the longest match), or KeyError."""
        owner = _abs(name)
        best: str | None = None
        for zone in self.zones:
            if owner.is_subdomain(_abs(zone)) and (best is None or len(zone) > len(best)):
                best = zone
        if best is None:
            raise KeyError(f"{name} is in none of the zones {', '.join(self.zones)}")
        return best

    def key_of(self, zone: str) -> tuple[str, str]:
        """(key name, secret) that may update `zone`."""
        return self.zone_keys.get(zone.rstrip("."), (self.tsig_name, self.tsig_secret))

    def keyring(self, zone: str | None = None) -> dict[dns.name.Name, dns.tsig.Key]:
        name, secret = self.key_of(zone) if zone else (self.tsig_name, self.tsig_secret)
        keyring: dict[dns.name.Name, dns.tsig.Key] = dns.tsigkeyring.from_text({name: (self.tsig_algorithm, secret)})
        return keyring

    def signed_update(self, zone: str) -> dns.update.UpdateMessage:
        """An empty update for `zone`, TSIG-signed with the zone's key when sent."""
        return dns.update.UpdateMessage(
            _abs(zone),
            keyring=self.keyring(zone),
            keyname=_abs(self.key_of(zone)[0]),
            keyalgorithm=self.tsig_algorithm,
        )

    def journal(self, zone: str | None = None) -> Path:
        """BIND's journal of `zone`: it exists once the zone took its first update."""
        return self.workdir / f"{(zone or self.zones[0]).rstrip('.')}.zone.jnl"

    def send_update(self, msg: dns.update.UpdateMessage) -> None:
        """Send an update over TCP; UpdateFailed unless BIND answers NOERROR."""
        resp = dns.query.tcp(msg, self.host, timeout=QUERY_TIMEOUT * 2, port=self.port)
        rcode = resp.rcode()
        if rcode != dns.rcode.NOERROR:
            raise UpdateFailed(str(msg.zone[0].name), rcode)

    def add_txt(self, name: str, value: str, ttl: int = 60) -> None:
        """RFC 2136: add one TXT value at `name` (other values there stay)."""
        upd = self.signed_update(self.zone_of(name))
        upd.add(_abs(name), ttl, _txt_rdata(value))
        self.send_update(upd)

    def delete_txt(self, name: str, value: str) -> None:
        """RFC 2136: delete exactly this TXT value at `name` (others stay)."""
        upd = self.signed_update(self.zone_of(name))
        upd.delete(_abs(name), _txt_rdata(value))
        self.send_update(upd)

    # -- life ----------------------------------------------------------------------

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def log_tail(self, lines: int = 30) -> str:
        return self.server.log_tail(lines) if self.server is not None else ""


def _zone_file(zone: str, records: tuple[str, ...] = ()) -> str:
    z = zone.rstrip(".") + "."
    extra = "".join(f"{line}\n" for line in records)
    return f"""$TTL {DEFAULT_TTL}
@           IN SOA  ns1.{z} hostmaster.{z} (
                    1           ; serial
                    60          ; refresh
                    30          ; retry
                    600         ; expire
                    {NEGATIVE_TTL} )        ; negative TTL
@           IN NS   ns1.{z}
ns1.{z}     IN A    127.0.0.1
@           IN A    127.0.0.1
*           IN A    127.0.0.1
{extra}"""


def _config(
    workdir: Path,
    port: int,
    zones: tuple[str, ...],
    key: str,
    algorithm: str,
    secret: str,
    acme_hosts: tuple[str, ...],
    zone_keys: dict[str, tuple[str, str]] | None = None,
    txt_names: tuple[str, ...] = (),
) -> str:
    d = workdir
    zone_blocks = []
    keys = {key: secret, **{name: s for name, s in (zone_keys or {}).values()}}
    for zone in zones:
        z = zone.rstrip(".")
        owners = [f"_acme-challenge.{z}.", f"_validation-persist.{z}."]
        owners += [
            f"_acme-challenge.{h.rstrip('.')}."
            for h in acme_hosts
            if _abs(h).is_subdomain(_abs(z)) and _abs(h) != _abs(z)
        ]
        owners += [f"{n.rstrip('.')}." for n in txt_names if _abs(n).is_subdomain(_abs(z))]
        zone_key = (zone_keys or {}).get(z, (key, secret))[0]
        grants = "\n".join(f'        grant "{zone_key}" name {o} TXT;' for o in owners)
        zone_blocks.append(f"""
zone "{z}" {{
    type primary;
    file "{d}/{z}.zone";
    journal "{d}/{z}.zone.jnl";
    notify no;
    allow-transfer {{ none; }};
    update-policy {{
{grants}
    }};
}};
""")
    key_blocks = "".join(
        f'key "{name}" {{\n    algorithm {algorithm};\n    secret "{s}";\n}};\n' for name, s in keys.items()
    )
    return f"""// rgwtls test stack: one authoritative BIND, all of its files in {d}
{key_blocks}
controls {{ }};

options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    {_lock_file(d)}
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    dump-file "{d}/named_dump.db";
    statistics-file "{d}/named.stats";
    memstatistics-file "{d}/named.memstats";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    allow-query {{ any; }};
    dnssec-validation no;
    notify no;
    minimal-responses yes;
}};
{"".join(zone_blocks)}"""


@contextmanager
def bind_server(
    workdir: Path,
    zones: tuple[str, ...] = ("cog.example.org",),
    tsig_secret: str | None = None,
    *,
    tsig_name: str = "rgwtls-test",
    acme_hosts: tuple[str, ...] = (),
    own_keys: tuple[str, ...] = (),
    txt_names: tuple[str, ...] = (),
    records: dict[str, tuple[str, ...]] | None = None,
    start_timeout: float = START_BOUND,
) -> Iterator[Bind]:
    """Start a BIND serving `zones` on a free loopback port; stop it on exit.

    `tsig_secret` shares a key between instances; without it one is made.
    `acme_hosts` are further names H (inside a zone) whose `_acme-challenge.H.`
    the key may also write TXT records at. The zones in `own_keys` get a key
    of their own (`Bind.zone_keys`); `txt_names` are further exact names
    that a zone's key may write TXT records at; `records` are zone-file lines
    per zone.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    algorithm = "hmac-sha256"
    secret = tsig_secret or base64.b64encode(secrets.token_bytes(32)).decode()
    port = free_port()
    zone_keys = {
        z.rstrip("."): (f"{tsig_name}-{z.rstrip('.')}", base64.b64encode(secrets.token_bytes(32)).decode())
        for z in own_keys
    }
    for zone in zones:
        z = zone.rstrip(".")
        (workdir / f"{z}.zone").write_text(_zone_file(z, (records or {}).get(z, ())))
        (workdir / f"{z}.zone.jnl").unlink(missing_ok=True)
    conf = workdir / "named.conf"
    conf.write_text(_config(workdir, port, zones, tsig_name, algorithm, secret, acme_hosts, zone_keys, txt_names))
    conf.chmod(0o600)  # it holds the TSIG secret

    # We run as root; without -u named keeps root (it only drops to -u's user),
    # which is what a throwaway test server in a private directory wants.
    server = Server(
        "named",
        ["named", "-g", "-c", conf, "-n", "1"],
        log=workdir / "named.log",
        cwd=workdir,
    )
    bind = Bind(
        port=port,
        zones=tuple(z.rstrip(".") for z in zones),
        tsig_name=tsig_name,
        tsig_secret=secret,
        tsig_algorithm=algorithm,
        workdir=workdir,
        server=server,
        zone_keys=zone_keys,
    )
    server.start()
    try:
        server.wait_until(bind.answers_soa, timeout=start_timeout, what="answering SOA queries")
        yield bind
    finally:
        server.stop()


@dataclass
class Resolver:
    """A caching-free recursive BIND in front of an authoritative one: what a CA asks.

    An authoritative server with recursion off answers a CNAME into another
    zone with the CNAME alone; a resolver follows it, as the CA's does. It
    forwards every question to the authoritative server and caches nothing,
    so that a value removed by one test is never answered to the next.
    """

    port: int
    upstream: Bind = field(repr=False)
    server: Server | None = field(default=None, repr=False)
    host: str = "127.0.0.1"

    def txt(self, name: str) -> set[str]:
        q = dns.message.make_query(_abs(name), "TXT")
        resp = dns.query.udp(q, self.host, timeout=QUERY_TIMEOUT, port=self.port)
        return {
            b"".join(rd.strings).decode() for rrset in resp.answer if rrset.rdtype == dns.rdatatype.TXT for rd in rrset
        }

    def answers(self) -> bool:
        q = dns.message.make_query(_abs(self.upstream.zones[0]), "SOA")
        try:
            resp = dns.query.udp(q, self.host, timeout=0.2, port=self.port)
        except (OSError, dns.exception.Timeout):
            return False
        return resp.rcode() == dns.rcode.NOERROR and bool(resp.answer)


@contextmanager
def resolver_server(workdir: Path, upstream: Bind, start_timeout: float = START_BOUND) -> Iterator[Resolver]:
    """Start a recursive BIND that forwards everything to `upstream` and caches nothing."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    d = workdir
    conf = workdir / "named.conf"
    conf.write_text(f"""// rgwtls test stack: a resolver in front of 127.0.0.1:{upstream.port}
controls {{ }};

options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    {_lock_file(d)}
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion yes;
    allow-query {{ 127.0.0.1; }};
    allow-recursion {{ 127.0.0.1; }};
    forward only;
    forwarders {{ 127.0.0.1 port {upstream.port}; }};
    dnssec-validation no;
    max-cache-ttl 0;
    max-ncache-ttl 0;
    notify no;
}};
""")
    server = Server("named-resolver", ["named", "-g", "-c", conf, "-n", "1"], log=workdir / "named.log", cwd=workdir)
    res = Resolver(port=port, upstream=upstream, server=server)
    server.start()
    try:
        server.wait_until(res.answers, timeout=start_timeout, what="answering through its upstream")
        yield res
    finally:
        server.stop()
