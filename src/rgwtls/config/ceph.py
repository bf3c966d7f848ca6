"""[ceph]: the cluster and the cephx user of the pool."""

from __future__ import annotations

from dataclasses import dataclass

from rgwtls.config.values import Where


@dataclass(frozen=True)
class CephConfig:
    """[ceph]: the cluster and the cephx user; issuer and gateways use different users of one pool."""

    conf: str = "/etc/ceph/ceph.conf"
    user: str = "client.rgwtls"
    keyring: str = ""
    pool: str = "rgwtls"
    # Bounds every librados wait (connect, mon and OSD operations): a dead
    # cluster otherwise hangs a cron job for 300 s or forever.
    timeout: float = 10.0
    # The issuer lock's lifetime. A live issuer renews it every third of it,
    # so it only bounds how long a dead issuer on another host blocks issuance
    # (a dead one on this host is taken over at once).
    lock_duration: float = 300.0


def validate_ceph(ceph: CephConfig, where: Where) -> None:
    """librados takes the user as an entity name: a bare 'rgwtls' would fail later, at the first connect."""
    if not ceph.user.startswith("client."):
        raise where.error("ceph.user", f"must be a cephx entity name such as client.rgwtls, not {ceph.user!r}")
