"""One exception hierarchy, turned into a one-line message at the CLI edge.

Every message is written for the operator reading cron mail: what failed,
where, and what to do. The layer is in the class, so callers can catch a
layer without parsing text.
"""

from __future__ import annotations

from rgwtls.scrub import LINE, clean, codec_errors


class RgwtlsError(Exception):
    """Anything rgwtls reports to the operator as one line and exit status 1."""


class ConfigError(RgwtlsError):
    """The configuration file is missing, malformed or inconsistent."""


class AcmeError(RgwtlsError):
    """The ACME server refused, failed or could not be reached."""


class CaUnavailable(AcmeError):
    """The CA could not issue in this run: unreachable, 5xx after the retries, rate limited, or its own order failed.

    Not a validation that failed on our side, nor a bad configuration: only
    this makes `issue` go on to the next [[acme.fallback]] CA.
    """


class DnsError(RgwtlsError):
    """A DNS back end could not publish or remove a challenge record."""


class PropagationError(DnsError):
    """The authoritative nameservers did not answer the challenge values in time."""


class StoreError(RgwtlsError):
    """The Ceph cluster or the pool could not be read or written."""


class LockHeld(StoreError):
    """Another issuer holds the cluster-wide lock."""


class IssuerBusy(LockHeld):
    """A live issuer holds the lock: for a standby's cron run, nothing to do."""


class Fenced(LockHeld):
    """A write under the issuer lock found it lost, or the object changed since the run decided: nothing written."""


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


def scrub(text: str) -> str:
    """The text with every codec error's bytes and position taken out, for what is printed or stored.

    A rule of the error path, not of one message: whatever failed to decode
    (a secret file, an answer) may be a secret, and the pool's last-issue
    record is read by every gateway's deploy user.
    """
    return codec_errors(text)


def describe(e: BaseException) -> str:
    """The one line for any failure: an RgwtlsError's own text, else its type and text; cleaned either way.

    An error's text may carry what an outside party said (a socket's answer, a CA's detail): see rgwtls.scrub.
    """
    if isinstance(e, RgwtlsError):
        return clean(str(e), LINE)
    return clean(f"unexpected {type(e).__name__}: {e}", LINE)
