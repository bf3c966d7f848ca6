"""The certificate sets, the ACME account and the issuer lock, in the RADOS pool.

Layout of the pool (default `rgwtls`), by RADOS namespace:

- `""` (default): production sets, readable by every gateway.
  `<name>/current` and `<name>/previous` hold a whole set (key, cert, chain
  and metadata) as one JSON object, each written by one RADOS operation so
  that no reader ever sees the key of one generation with the cert of another
  (`rgwtls.store.sets`). Beside them, `<name>/last-issue` (what the last run
  of `issue` did, for `status`) and `<name>/persist` (the standing
  dns-persist-01 records). The first configured certificate is also written
  as the legacy objects `privkey.pem`, `cert.pem` and `chain.pem`, for
  `rados get` and old scripts. `revoked` is the record of revoked
  certificates that no gateway may serve again (`rgwtls.revoked`): only the
  issuer writes it, every deploy and check reads it.
- `staging`: the same for `--staging` runs, so that a staging certificate can
  never reach the gateways by accident.
- `acme`: issuer-only: the ACME account keys (`account.<host>.<digest>`, one
  per CA), the issuer lock (`rgwtls.store.locks`) and the journal of
  challenge records in flight. Deploy-only users get no caps here.
- `deploy`: the restart slots, RADOS locks that keep the gateways from
  restarting all at once (`rgwtls.store.slots`); `announce`, the object
  `issue` notifies after storing and `deploy --watch` watches
  (`rgwtls.store.announce`); and each gateway's record for `rollout`,
  `host.<host>.<endpoint>` (`rgwtls.fleet`).

The package's modules follow the same data: `connection` (the cluster, raw
objects, the mon), `sets` (certificate sets and their fenced writes),
`holder` (who holds a lock, and whether it still runs), `locks` (the issuer
lock and the leases under it), `slots` (the restart slots) and `announce`
(notify and watch); `rgwtls.store.Pool` is all of them on one connection.
"""

from __future__ import annotations

NS_PRODUCTION = ""
NS_STAGING = "staging"
NS_ISSUER = "acme"
NS_DEPLOY = "deploy"
LEGACY_OBJECTS = ("privkey.pem", "cert.pem", "chain.pem")
# Namespace deploy: the object `issue` notifies after storing and `deploy --watch` watches.
ANNOUNCE = "announce"
ISSUER_LOCK = "issuer.lock"
ISSUER_LOCK_NAME = "rgwtls-issuer"
HOLDER_XATTR = "holder"
SLOT_LOCK = "rgwtls-restart"
# The omap key of every set object that holds its generation: the fence of `fenced_write`.
FENCE_KEY = "generation"


def object_name(ns: str, obj: str) -> str:
    """An object as a line names it: `ns/obj`, or `obj` in the default namespace."""
    return f"{ns}/{obj}" if ns else obj
