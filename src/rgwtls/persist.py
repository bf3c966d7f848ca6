"""dns-persist-01 (draft-ietf-acme-dns-persist): one standing TXT record per name, written once.

The record is `_validation-persist.NAME`, and its value names the CA and the
account: `<issuer-domain-name>; accounturi=<account URL>`, with `;
policy=wildcard` when a certificate has `*.NAME`. Once it is in DNS, every
order validates with no DNS write at all, so `issue` needs no DNS back end
credentials. `rgwtls persist --publish` writes it through the back end, and
`issue`, `status` and `check` ask every authoritative server whether it
still answers it.

A value is judged as the CA judges it (issuer name case-insensitive, without
a trailing dot; parameter names case-insensitive; accounturi exact; policy
`wildcard` for a wildcard; persistUntil not passed), so a record an operator
typed by hand counts as ours, and publishing never adds a second one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.exception

from rgwtls.config import CertificateConfig, Config
from rgwtls.dns import Challenge
from rgwtls.dns.backends import make_provider
from rgwtls.errors import DnsError, RgwtlsError
from rgwtls.log import notice

log = logging.getLogger(__name__)

PREFIX = "_validation-persist"


@dataclass(frozen=True)
class Record:
    """One standing record: its name is `_validation-persist.<domain>`."""

    domain: str  # without its *.
    issuer: str
    account: str
    wildcard: bool

    @property
    def name(self) -> str:
        return f"{PREFIX}.{self.domain}"

    @property
    def value(self) -> str:
        return f"{self.issuer}; accounturi={self.account}" + ("; policy=wildcard" if self.wildcard else "")

    def zone_line(self, ttl: int) -> str:
        """The record as a zone file line, to paste where no back end may write."""
        return f'{self.name}. {ttl} IN TXT "{self.value}"'

    def challenge(self) -> Challenge:
        # The back ends write a Challenge's target name as it is.
        return Challenge(self.domain, "", self.value, target=self.name)


def records(cert: CertificateConfig, issuer: str, account: str) -> list[Record]:
    """The records a certificate's names need: one per name, policy=wildcard where it has *.NAME."""
    bases: dict[str, bool] = {}
    for domain in cert.domains:
        base = domain.removeprefix("*.")
        bases[base] = bases.get(base, False) or domain.startswith("*.")
    return [Record(base, issuer, account, wildcard) for base, wildcard in bases.items()]


def merged(recs: Iterable[Record]) -> list[Record]:
    """One record per name, across certificates: a wildcard's record also serves the bare name."""
    by_name: dict[str, Record] = {}
    for rec in recs:
        seen = by_name.get(rec.name)
        by_name[rec.name] = rec if seen is None else dataclasses.replace(seen, wildcard=seen.wildcard or rec.wildcard)
    return list(by_name.values())


# -- what the servers answer, judged as the CA judges it --------------------------


@dataclass(frozen=True)
class Parsed:
    issuer: str
    params: dict[str, str]


def parse(text: str) -> Parsed | None:
    """An issue-value: `issuer; key=value; ...`; None if it is not one."""
    issuer, *rest = text.split(";")
    issuer = issuer.strip().lower().rstrip(".")
    if not issuer:
        return None
    params: dict[str, str] = {}
    for part in rest:
        key, eq, value = part.strip().partition("=")
        if not part.strip():
            continue
        if not eq or not key.strip():
            return None
        params[key.strip().lower()] = value.strip()
    return Parsed(issuer, params)


def judge(rec: Record, values: Iterable[str], now: dt.datetime | None = None) -> str | None:
    """None if one of `values` authorizes this account for the record's names; else what is wrong, in words."""
    now = now or dt.datetime.now(dt.UTC)
    why: list[str] = []
    for text in values:
        parsed = parse(text)
        if parsed is None or parsed.issuer != rec.issuer.lower().rstrip("."):
            continue
        account = parsed.params.get("accounturi", "")
        if account != rec.account:
            why.append(f"accounturi={account or '(none)'} is not this account ({rec.account})")
            continue
        if rec.wildcard and parsed.params.get("policy", "").lower() != "wildcard":
            why.append(f"it has no policy=wildcard, which *.{rec.domain} needs")
            continue
        until = parsed.params.get("persistuntil")
        if until is not None:
            try:
                when = dt.datetime.fromtimestamp(int(until), dt.UTC)
            except (ValueError, OverflowError, OSError):
                why.append(f"persistUntil={until} is not a Unix time")
                continue
            if when <= now:
                why.append(f"its persistUntil passed at {when:%Y-%m-%d %H:%M} UTC")
                continue
        return None
    if why:
        return "mismatched: " + "; ".join(dict.fromkeys(why))
    return f"missing (no value for issuer {rec.issuer})"


@dataclass(frozen=True)
class Finding:
    """A record that an authoritative server does not answer as needed."""

    record: Record
    server: str
    problem: str

    def __str__(self) -> str:
        return f"{self.record.name} at {self.server}: {self.problem}"


def check(recs: Sequence[Record], cfg: Config) -> list[Finding]:
    """Ask every authoritative server of every record, once; what each lacks."""
    from rgwtls.propagation import authoritative_servers, txt_values

    found: list[Finding] = []
    for rec in recs:
        try:
            servers = authoritative_servers(rec.name, cfg.dns)
        except RgwtlsError as e:
            found.append(Finding(rec, "its zone", str(e)))
            continue
        for server in servers:
            try:
                values = txt_values(server, rec.name, cfg.dns.query_timeout)
            except (OSError, dns.exception.DNSException) as e:
                found.append(Finding(rec, str(server), f"no answer ({e or type(e).__name__})"))
                continue
            problem = judge(rec, values)
            if problem is not None:
                found.append(Finding(rec, str(server), problem))
    return found


def fix_command(cert: str | None, staging: bool) -> str:
    return "rgwtls persist --publish" + (f" --cert {cert}" if cert else "") + (" --staging" if staging else "")


def require(recs: Sequence[Record], cfg: Config, cert: str, staging: bool) -> None:
    """Every authoritative server answers every record; else one line: which record, where, and the fix."""
    findings = check(recs, cfg)
    if findings:
        raise DnsError(
            f"dns-persist-01: {'; '.join(str(f) for f in findings)}; expected "
            + "; ".join(f'{r.name} TXT "{r.value}"' for r in dict.fromkeys(f.record for f in findings))
            + f"; run: {fix_command(cert, staging)} (or publish it by hand)"
        )


# -- publish and remove through the back end ------------------------------------------


def _production(cfg: Config) -> Config:
    """The back end's settings for the names' own zones: a standing record is no delegated challenge."""
    d = cfg.dns
    rfc = dataclasses.replace(
        d.rfc2136, alias_server="", alias_zone="", alias_tsig_key_name="", alias_tsig_secret_file=""
    )
    home = dataclasses.replace(
        d,
        infoblox=dataclasses.replace(d.infoblox, alias_view=""),
        uddi=dataclasses.replace(d.uddi, alias_view=""),
        rfc2136=rfc,
    )
    return dataclasses.replace(cfg, dns=home)


def _no_hook(cfg: Config, verb: str) -> None:
    if cfg.dns.provider == "hook":
        raise DnsError(
            f"hook: cannot {verb} dns-persist-01 records (a dehydrated hook writes _acme-challenge names only); "
            "put the records 'rgwtls persist' prints into the zone by hand"
        )


def publish(cfg: Config, recs: Sequence[Record]) -> int:
    """Create each record some authoritative server does not answer; the number created.

    A record every server already answers (ours, or one typed by hand) is
    left alone, so running this twice never adds a second one. The back end
    (and its secrets) is only opened when something is missing.
    """
    from rgwtls.propagation import wait_for_values

    missing = list(dict.fromkeys(f.record for f in check(recs, cfg)))
    for rec in recs:
        if rec not in missing:
            log.info("%s: every authoritative server answers it already", rec.name)
    if not missing:
        return 0
    _no_hook(cfg, "publish")
    provider = make_provider(_production(cfg))
    for rec in missing:
        provider.present(rec.challenge())
        notice(log, "published TXT %s %r via %s", rec.name, rec.value, provider.name)
    wait_for_values({rec.name: {rec.value} for rec in missing}, cfg.dns)
    return len(missing)


def remove(cfg: Config, recs: Sequence[Record]) -> None:
    """Remove exactly these values, where rgwtls made them; other values at the names stay."""
    _no_hook(cfg, "remove")
    provider = make_provider(_production(cfg))
    for rec in recs:
        provider.cleanup(rec.challenge())
        notice(log, "removed TXT %s %r via %s", rec.name, rec.value, provider.name)


# -- what status reads: the records the issuer last computed --------------------------


def to_bytes(recs: Sequence[Record]) -> bytes:
    return json.dumps([dataclasses.asdict(r) for r in recs]).encode()


def from_bytes(raw: bytes) -> list[Record]:
    """The records in a pool object; ValueError if it holds something else."""
    doc = json.loads(raw)
    if not isinstance(doc, list):
        raise ValueError("not a list of records")
    try:
        return [Record(str(r["domain"]), str(r["issuer"]), str(r["account"]), bool(r["wildcard"])) for r in doc]
    except (KeyError, TypeError):
        raise ValueError("not a list of records") from None
