"""Where every certificate stands: in the pool, on this host, and on the wire.

`gather` collects the facts once; `status` prints them, `check` judges them,
and the metrics export them. A dead cluster is a fact too (`error`), found
within `ceph.timeout`, so that a monitoring check answers UNKNOWN in seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography import x509

from rgwtls.certs import dns_names, first_cert
from rgwtls.config import Config
from rgwtls.errors import RgwtlsError, StoreError
from rgwtls.probe import fingerprint, served_certificate, server_name
from rgwtls.revoked import RevokedList
from rgwtls.scrub import LINE, clean
from rgwtls.store import CertSet, Pool
from rgwtls.targets import make_target

SCHEMA_VERSION = 1


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _days_left(not_after: dt.datetime, now: dt.datetime) -> float:
    # Six decimals (a tenth of a second): a lifetime of minutes (a test CA) is judged as exactly as one of months.
    return round((not_after - now).total_seconds() / 86400, 6)


@dataclass
class CertFacts:
    fingerprint: str
    serial: str
    names: list[str]
    not_before: str
    not_after: str
    days_left: float
    lifetime_days: float

    @classmethod
    def of(cls, cert: x509.Certificate, now: dt.datetime) -> CertFacts:
        names = sorted(dns_names(cert))
        nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
        return cls(
            fingerprint(cert),
            f"{cert.serial_number:x}",
            names,
            _iso(nb),
            _iso(na),
            _days_left(na, now),
            round((na - nb).total_seconds() / 86400, 6),
        )

    @property
    def expires(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.not_after)

    @property
    def fraction_left(self) -> float:
        return self.days_left / self.lifetime_days if self.lifetime_days > 0 else 0.0


@dataclass
class PoolFacts(CertFacts):
    generation: int = 0
    issued_at: str = ""
    issued_by: str = ""
    profile: str = ""  # the CA's certificate profile; empty: none recorded
    ca: str = ""  # the directory of the CA that issued it: acme.directory, or a fallback


@dataclass
class HostFacts(CertFacts):
    where: str = ""
    matches_pool: bool | None = None  # None: the pool could not be read, so nothing to compare with


@dataclass
class PersistFacts:
    """A standing dns-persist-01 record and what the authoritative servers answer for it."""

    record: str
    value: str
    problems: list[str] = field(default_factory=list)  # "at SERVER: missing ...", empty when every server answers it


@dataclass
class Status:
    name: str
    pool: PoolFacts | None = None
    staging: PoolFacts | None = None
    last_issue: dict[str, Any] | None = None
    deployed: HostFacts | None = None
    served: HostFacts | None = None
    served_error: str | None = None
    problems: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # what could not be read: pool, staging, last_issue, deployed
    # dns-persist-01 certificates only: the standing records, and what is wrong with them (check's WARNINGs).
    persist: list[PersistFacts] = field(default_factory=list)
    persist_warnings: list[str] = field(default_factory=list)
    # The served certificate (else the pool's): why it must not be served ("" if nothing says so), whether
    # the pool's record of revocations was read, the CA's renewal window begun, and what could not be asked.
    revoked: str = ""
    revocation_known: bool = False
    renew_now: str = ""
    revocation_warnings: list[str] = field(default_factory=list)
    revocation_notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    host: str
    certificates: list[Status]
    error: str | None = None
    # How this host's server takes a new certificate (deploy.activate), and the activations it counted.
    activate: str = ""
    activations: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"version": SCHEMA_VERSION, **asdict(self)}, indent=2)


def _pool_facts(s: CertSet | None, now: dt.datetime) -> PoolFacts | None:
    if s is None:
        return None
    cert = x509.load_pem_x509_certificate(s.cert_pem.encode())
    base = CertFacts.of(cert, now)
    return PoolFacts(
        **asdict(base),
        generation=s.generation,
        issued_at=s.issued_at,
        issued_by=s.issued_by,
        profile=s.profile,
        ca=s.directory,
    )


def gather(
    cfg: Config,
    served: bool = True,
    staging: bool = False,
    deployed: bool = True,
    persist: bool = True,
    revocation: bool = True,
) -> Report:
    """All the facts; a cluster that cannot be reached is reported, not raised.

    One deadline for the whole gathering: the first cluster operation that
    fails or times out ends the reading of the pool, and every fact not yet
    read is reported unknown. Each librados wait is bounded by `ceph.timeout`,
    so a dead cluster costs one timeout (connect, or the first read), not one
    per object and certificate.
    """
    now = dt.datetime.now(dt.UTC)
    report = Report(socket.gethostname(), [Status(c.name) for c in cfg.certificates])
    d = cfg.deploy
    if deployed:
        from rgwtls import activate

        report.activate, report.activations = activate.describe(d), activate.recorded(d)
    mine = d.certificate or cfg.certificates[0].name
    pool: Pool | None = None
    read: list[set[str]] = [set() for _ in report.certificates]
    standing: dict[str, bytes | None] = {}
    sets: dict[str, CertSet] = {}
    record: RevokedList | str | None = None
    certs_seen: dict[str, list[x509.Certificate]] = {}
    try:
        pool = Pool(cfg.ceph).connect()
        for st, done in zip(report.certificates, read, strict=True):
            _read_pool_side(pool, st, done, staging, now, sets)
        if revocation:
            record = _revoked_record(pool, staging)
        for conf in cfg.certificates:
            if persist and conf.persistent(cfg.dns):
                standing[conf.name] = pool.read(pool.set_namespace(staging), f"{conf.name}/persist")
    except RgwtlsError as e:
        report.error = str(e)
        for st, done in zip(report.certificates, read, strict=True):
            st.unknown += [side for side in ("pool", "staging", "last_issue") if side not in done]
    try:
        for st in report.certificates:
            if st.name != mine or not deployed:
                continue
            if d.layout == "config-key" and (pool is None or report.error):
                st.unknown.append("deployed")
                continue
            try:
                blob = make_target(d, pool, st.name).installed()  # type: ignore[arg-type]
                installed = first_cert(blob)
            except (RgwtlsError, OSError, ValueError) as e:
                st.unknown.append("deployed")
                st.problems.append(f"cannot read the deployed certificate: {e}")
                continue
            if installed is not None:
                st.deployed = HostFacts(**asdict(CertFacts.of(installed, now)), where=_where(cfg))
                certs_seen[st.name] = _all_certs(blob)
    finally:
        if pool is not None:
            pool.close()
    for st in report.certificates:
        if st.name != mine or not served:
            continue
        names = d.names or cfg.certificate(st.name)[0].domains
        sni = server_name(d, names)
        try:
            cert = served_certificate(d.verify_endpoint, sni, min(5.0, d.verify_timeout))
            st.served = HostFacts(**asdict(CertFacts.of(cert, now)), where=f"{d.verify_endpoint} ({sni})")
            certs_seen[st.name] = [cert, *certs_seen.get(st.name, [])]
        except (OSError, ValueError) as e:
            st.served_error = f"{d.verify_endpoint} ({sni}): {e}"
    for st in report.certificates:
        if st.name in standing:
            _check_persist(cfg, st, standing[st.name], staging)
    for st in report.certificates:
        # Compared only with a pool that was read: an unknown pool is no difference.
        for facts in (st.deployed, st.served):
            if facts is not None and "pool" not in st.unknown:
                facts.matches_pool = st.pool is not None and facts.fingerprint == st.pool.fingerprint
    if revocation and not report.error:
        for st in report.certificates:
            _look(cfg, st, sets.get(st.name), certs_seen.get(st.name, []), record, now, asks=st.name == mine)
    return report


def _revoked_record(pool: Pool, staging: bool) -> RevokedList | str:
    """The pool's record of revoked certificates, or why it is unreadable (a corrupt one is no unreadable pool)."""
    from rgwtls.revoked import REVOKED_OBJECT

    where = f"{pool.set_namespace(staging) or 'the default namespace'}/{REVOKED_OBJECT} in pool {pool.cfg.pool}"
    try:
        return RevokedList.from_bytes(pool.read(pool.set_namespace(staging), REVOKED_OBJECT), where)
    except StoreError as e:
        return str(e)


def _all_certs(blob: bytes | None) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(blob) if blob else []
    except ValueError:
        return []


def _look(
    cfg: Config,
    st: Status,
    current: CertSet | None,
    seen: list[x509.Certificate],
    record: RevokedList | str | None,
    now: dt.datetime,
    asks: bool,
) -> None:
    """Whether what clients see (the served certificate, else the pool's) is revoked or due now.

    Only this host's own certificate (`asks`) costs network calls, its CRL
    and its CA's window; every other one is judged by the pool's record alone.
    """
    from rgwtls import revocation

    pool_chain = _all_certs(f"{current.cert_pem}\n{current.chain_pem}".encode()) if current else []
    cert = seen[0] if st.served and seen else (pool_chain[0] if pool_chain else None)
    if cert is None:
        return
    if isinstance(record, str):
        st.revocation_warnings.append(record)
        record = None
    st.revocation_known = record is not None
    if not asks:
        st.revoked = revocation.in_record(cert, record) if record is not None else ""
        return
    # The CA that issued it is known when it is the pool's certificate; its window is asked only then.
    directory = current.directory if current and pool_chain and pool_chain[0] == cert else ""
    found = revocation.look(cfg, cert, [*pool_chain[1:], *seen[1:]], record, directory, now)
    st.revoked, st.renew_now = found.revoked, found.renew_now
    st.revocation_warnings += found.warnings
    st.revocation_notes += found.notes


def _read_pool_side(
    pool: Pool, st: Status, done: set[str], staging: bool, now: dt.datetime, sets: dict[str, CertSet] | None = None
) -> None:
    """The set, the staging set and the last attempt, each added to `done` once read.

    A cluster failure raises (and ends the gathering); a bad object is a problem of its certificate.
    """
    for side, ns, obj in (
        ("pool", pool.set_namespace(staging), f"{st.name}/current"),
        ("staging", pool.set_namespace(True), f"{st.name}/current"),
        ("last_issue", pool.set_namespace(staging), f"{st.name}/last-issue"),
    ):
        raw = pool.read(ns, obj)
        done.add(side)
        if raw is None:
            continue
        try:
            if side == "last_issue":
                doc = json.loads(raw)
                st.last_issue = doc if isinstance(doc, dict) else None
            else:
                cs = CertSet.from_bytes(raw, f"{ns}/{obj} in pool {pool.cfg.pool}")
                setattr(st, side, _pool_facts(cs, now))
                if side == "pool" and sets is not None:
                    sets[st.name] = cs
        except (RgwtlsError, ValueError) as e:
            st.problems.append(f"{ns}/{obj}: {e}" if not isinstance(e, RgwtlsError) else str(e))


def _check_persist(cfg: Config, st: Status, raw: bytes | None, staging: bool) -> None:
    """Ask the authoritative servers for the records the issuer last computed; each shortfall is a warning."""
    from rgwtls import persist

    fix = persist.fix_command(st.name if len(cfg.certificates) > 1 else "", staging)
    if raw is None:
        st.persist_warnings.append(
            f"{st.name}: its dns-persist-01 records are not known yet; run 'rgwtls persist' on the issuer"
        )
        return
    try:
        records = persist.from_bytes(raw)
    except ValueError as e:
        st.persist_warnings.append(f"{st.name}: its dns-persist-01 records in the pool are unreadable ({e}); {fix}")
        return
    st.persist = [PersistFacts(r.name, r.value) for r in records]
    by_name = {facts.record: facts for facts in st.persist}
    for finding in persist.check(records, cfg):
        by_name[finding.record.name].problems.append(f"at {finding.server}: {finding.problem}")
        st.persist_warnings.append(f"{st.name}: dns-persist-01 record {finding}; run '{fix}' on the issuer")


def _where(cfg: Config) -> str:
    d = cfg.deploy
    return {"pem": d.path, "split": d.cert_path, "config-key": f"config-key {d.config_key}"}[d.layout]


def render(report: Report) -> str:
    """The readable table; each line cleaned (rgwtls.scrub): it quotes a CA's, a WAPI's and a TLS peer's words."""

    def when(iso: str) -> str:
        try:
            return f"{dt.datetime.fromisoformat(iso.replace('Z', '+00:00')).astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"
        except ValueError:
            return iso or "?"

    def cert_line(f: CertFacts) -> str:
        return f"expires {when(f.not_after)} ({f.days_left:.1f} days left), serial {f.serial[:16]}"

    lines = [f"host {report.host}"]
    if report.activate:
        counted = ", ".join(f"{n} {method}" for method, n in sorted(report.activations.items())) or "none yet"
        lines.append(f"  activates {report.activate}; activations: {counted}")
    if report.error:
        lines.append(f"  pool: UNREACHABLE: {report.error}")
    for st in report.certificates:
        lines.append(f"certificate {st.name}")
        if st.pool:
            p = st.pool
            lines.append(f"  pool      generation {p.generation}, {cert_line(p)}")
            profile = f", profile {p.profile}" if p.profile else ""
            lines.append(f"            issued {when(p.issued_at)} by {p.issued_by}{profile}, CA {p.ca}")
            lines.append(f"  names     {', '.join(p.names)}")
        elif "pool" in st.unknown:
            lines.append("  pool      UNKNOWN: could not be read")
        else:
            lines.append("  pool      none: run 'rgwtls issue' on the issuer")
        if st.staging:
            lines.append(f"  staging   generation {st.staging.generation}, {cert_line(st.staging)}")
        if st.last_issue:
            li = st.last_issue
            result = "ok" if li.get("ok") else f"FAILED: {li.get('error')}"
            lines.append(f"  issue     last attempt {when(str(li.get('at', '')))} on {li.get('host')}: {result}")
            if not li.get("ok") and li.get("next_attempt"):
                retry = when(str(li["next_attempt"]))
                lines.append(f"            {li.get('failures')} failure(s) in a row; next attempt {retry}")
            if li.get("warning"):
                lines.append(f"            worked around: {li.get('warning')}")
        elif "last_issue" in st.unknown:
            lines.append("  issue     last attempt UNKNOWN: could not be read")
        for label, facts in (("deployed", st.deployed), ("served", st.served)):
            if facts is None:
                if label in st.unknown:
                    lines.append(f"  {label:<9} UNKNOWN: could not be read")
                continue
            match = {True: "matches the pool", False: "DIFFERS from the pool", None: "pool unknown"}[facts.matches_pool]
            lines.append(f"  {label:<9} {facts.where}: {match}, {cert_line(facts)}")
        if st.served_error:
            lines.append(f"  served    NO HANDSHAKE: {st.served_error}")
        for rec in st.persist:
            state = "; ".join(rec.problems) or "answered by every authoritative server"
            lines.append(f'  persist   {rec.record} TXT "{rec.value}": {state}')
        if st.revoked:
            lines.append(f"  REVOKED   {st.revoked}")
        if st.renew_now:
            lines.append(f"  renew     the CA asks for renewal now: {st.renew_now}")
        lines += [f"  WARNING   {w}" for w in st.revocation_warnings]
        lines += [f"  note      {n}" for n in st.revocation_notes]
        lines += [f"  problem   {p}" for p in st.problems]
        lines += [f"  WARNING   {w}" for w in st.persist_warnings if not st.persist]
    return "\n".join(clean(line, LINE) for line in lines)
