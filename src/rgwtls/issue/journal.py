"""The challenge records of an order, and the journal that lists them for a run that was killed.

The journal is written before the first record exists and removed once
every record is, so that whatever stops a run, the next one knows what to
clean up.
"""

from __future__ import annotations

import json
import logging

from rgwtls.config import Config
from rgwtls.dns import Challenge, DnsProvider
from rgwtls.dns.backends import make_provider
from rgwtls.errors import Interrupted, RgwtlsError, StoreError
from rgwtls.log import notice
from rgwtls.store import NS_ISSUER, Pool

# The name the log format shows: a line of `issue` reads as it always has, whichever room wrote it.
log = logging.getLogger("rgwtls.issue")


JOURNAL = "challenges.journal"


class Records:
    """The challenge records of one order: journaled before they exist, removed when the order is done.

    Removal comes after the set is stored, and its failures are warnings:
    they never hide the error that got us here, nor cost a stored set. What
    they leave, the journal lists for the next run.
    """

    def __init__(self, cfg: Config, pool: Pool, name: str) -> None:
        self.cfg, self.pool, self.name = cfg, pool, name
        self.provider: DnsProvider | None = None
        self.attempted: list[Challenge] = []

    def present(self, challenges: list[Challenge]) -> None:
        self.provider = make_provider(self.cfg)
        # The journal is written before the first record exists, so a kill
        # at any point leaves a list of what to clean up: every record of this
        # order, those published for a CA asked before this one too.
        _write_journal(self.pool, [*self.attempted, *challenges])
        for ch in challenges:
            self.attempted.append(ch)
            self.provider.present(ch)
            log.info("%s: published TXT %s via %s", self.name, ch.record_name, self.provider.name)

    def __enter__(self) -> Records:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.provider is not None and _cleanup(self.provider, self.attempted):
            _remove_journal(self.pool)


def _cleanup(provider: DnsProvider, challenges: list[Challenge]) -> bool:
    """Remove every record; log failures without hiding the error that got us here."""
    clean = True
    for ch in challenges:
        try:
            provider.cleanup(ch)
        except Interrupted:
            raise
        except RgwtlsError as e:
            log.warning("cleanup: %s; remove it by hand", e)
            clean = False
    return clean


def _write_journal(pool: Pool, challenges: list[Challenge]) -> None:
    # The target too: a killed run's delegated records are in the target zone.
    doc = [{"domain": c.domain, "token": c.token, "value": c.value, "target": c.target} for c in challenges]
    pool.write(NS_ISSUER, JOURNAL, json.dumps(doc).encode())


def _remove_journal(pool: Pool) -> None:
    try:
        pool.remove(NS_ISSUER, JOURNAL)
    except Interrupted:
        raise
    except RgwtlsError as e:
        log.warning("%s; the next run removes the records it lists again", e)


def clean_journal(pool: Pool, cfg: Config) -> None:
    """Remove the records a killed run left: they are in the journal, which it wrote before making them."""
    try:
        raw = pool.read(NS_ISSUER, JOURNAL)
    except StoreError as e:
        log.warning("%s; records an earlier run left stay until the next run", e)
        return
    if not raw:
        return
    try:
        left = [Challenge(**c) for c in json.loads(raw)]
    except (ValueError, TypeError):
        log.warning("the challenge journal in pool %s is unreadable; removing it", cfg.ceph.pool)
        _remove_journal(pool)
        return
    notice(log, "removing %d challenge record(s) left by an earlier run", len(left))
    if _cleanup(make_provider(cfg), left):
        _remove_journal(pool)
