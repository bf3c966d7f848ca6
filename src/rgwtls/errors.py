"""One exception hierarchy, turned into a one-line message at the CLI edge.

Every message is written for the operator reading cron mail: what failed,
where, and what to do. The layer is in the class, so callers can catch a
layer without parsing text.
"""

from __future__ import annotations


class RgwtlsError(Exception):
    """Anything rgwtls reports to the operator as one line and exit status 1."""


class ConfigError(RgwtlsError):
    """The configuration file is missing, malformed or inconsistent."""


class AcmeError(RgwtlsError):
    """The ACME server refused, failed or could not be reached."""


class DnsError(RgwtlsError):
    """A DNS back end could not publish or remove a challenge record."""


class PropagationError(DnsError):
    """The authoritative nameservers did not answer the challenge values in time."""


class StoreError(RgwtlsError):
    """The Ceph cluster or the pool could not be read or written."""


class LockHeld(StoreError):
    """Another issuer holds the cluster-wide lock."""


class DeployError(RgwtlsError):
    """A set could not be deployed; the gateway keeps (or got back) what it served."""


class DeployDeferred(DeployError):
    """A set that failed on this host waits out its backoff: still failing, so a WARNING line and exit 1."""


class Interrupted(RgwtlsError):
    """A signal (SIGTERM, SIGINT, SIGHUP) stopped the run; raised where the run was, so it unwinds like any failure.

    Layers that go on after an error of one item (issue's loop over
    certificates) must re-raise this one: the operator asked the run to stop.
    """

    def __init__(self, signame: str) -> None:
        super().__init__(f"interrupted by {signame}")
        self.signame = signame
