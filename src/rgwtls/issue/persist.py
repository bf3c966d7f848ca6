"""dns-persist-01's standing records: what `issue` checks before it orders, and `rgwtls persist`.

Each record names the account, so both look it up (or register it) as a
run's session does; the records are written to the pool, where `status` and
`check` on every gateway read them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rgwtls.config import CertificateConfig, Config, check_secrets
from rgwtls.errors import ConfigError, Interrupted, RgwtlsError
from rgwtls.issue.session import Session
from rgwtls.store import Pool

if TYPE_CHECKING:
    from rgwtls.acmeflow import Acme
    from rgwtls.persist import Record

# The name the log format shows: a line of `issue` reads as it always has, whichever room wrote it.
log = logging.getLogger("rgwtls.issue")


def check_persistent(cfg: Config, session: Session, acme: Acme, cert: CertificateConfig) -> None:
    """Record the dns-persist-01 records this certificate needs (for status), then ask every server for them."""
    from rgwtls import persist

    records = persist.records(cert, acme.persist_issuer, acme.account_uri)
    write_persist(session.pool, cert.name, session.staging, records)
    persist.require(records, cfg, cert.name if len(cfg.certificates) > 1 else "", session.staging)
    log.info("%s: every authoritative server answers its %d dns-persist-01 record(s)", cert.name, len(records))


def write_persist(pool: Pool, name: str, staging: bool, records: list[Record]) -> None:
    """The records as the issuer computed them, where `status` and `check` on every gateway read them."""
    from rgwtls import persist

    try:
        pool.write(pool.set_namespace(staging), f"{name}/persist", persist.to_bytes(records))
    except Interrupted:
        raise
    except RgwtlsError as e:
        log.warning("could not record the dns-persist-01 records in the pool: %s", e)


def persist_records(
    cfg: Config, staging: bool = False, publish: bool = False, remove: bool = False, only: str | None = None
) -> list[str]:
    """`rgwtls persist`: the dns-persist-01 records of the configured certificates, as zone file lines.

    The account (its URL is in every record) is looked up, or registered,
    under the issuer lock, as `issue` does. With `publish`, each record some
    authoritative server does not answer is created through the DNS back
    end; with `remove`, exactly these values are removed.
    """
    from rgwtls import persist as standing

    wanted = [c for c in cfg.certificate(only) if c.persistent(cfg.dns)]
    if not wanted:
        which = f"certificate {only!r} uses" if only else "no configured certificate uses"
        raise ConfigError(
            f"config {cfg.path}: {which} dns-01, which needs no standing record; "
            "set dns.challenge or its [[certificate]] challenge to dns-persist-01"
        )
    directory = cfg.acme.staging_directory if staging else cfg.acme.directory
    check_secrets(cfg, staging, dns=publish or remove)
    every: list[standing.Record] = []
    with Pool(cfg.ceph) as pool, pool.issuer_lock():
        acme = Session(cfg, pool, directory, staging).registered()
        issuer, account = acme.persist_issuer, acme.account_uri
        for cert in wanted:
            records = standing.records(cert, issuer, account)
            write_persist(pool, cert.name, staging, records)
            every += records
    records = standing.merged(every)
    if publish:
        standing.publish(cfg, records)
    elif remove:
        standing.remove(cfg, records)
    ttl = _ttl(cfg)
    return [r.zone_line(ttl) for r in records]


def _ttl(cfg: Config) -> int:
    """The TTL the back end writes with; a hook's records are written by hand."""
    d = cfg.dns
    return {"infoblox": d.infoblox.ttl, "uddi": d.uddi.ttl, "rfc2136": d.rfc2136.ttl}.get(d.provider, 3600)
