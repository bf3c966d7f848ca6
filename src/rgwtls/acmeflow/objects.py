"""What goes to a CA beyond the library's own messages, and what a CA's problem documents say, read for a person."""

from __future__ import annotations

from dataclasses import dataclass

from acme import challenges, messages
from josepy.json_util import field

from rgwtls.acmeflow.network import CA_SAID
from rgwtls.dns import Challenge
from rgwtls.scrub import clean


class NewOrder(messages.NewOrder):
    """newOrder with RFC 9773's `replaces`, which acme 5.9 does not send (its `profile` it does)."""

    replaces: str | None = field("replaces", omitempty=True)


PERSIST = "dns-persist-01"


class Ready(challenges.ChallengeResponse):
    """The empty object, RFC 8555's "ready", for a challenge type the library does not know.

    The library posts a falsy payload as POST-as-GET (an empty body), and a
    response without fields is falsy: the CA would only show the challenge.
    """

    def __bool__(self) -> bool:
        return True


@dataclass
class PendingChallenge:
    authzr: messages.AuthorizationResource
    challb: messages.ChallengeBody
    challenge: Challenge
    # What to post to the challenge URL; None: the library's response (dns-01's key authorization).
    response: challenges.ChallengeResponse | None = None

    @property
    def identifier(self) -> str:
        ident = self.authzr.body.identifier.value
        return f"*.{ident}" if self.authzr.body.wildcard else str(ident)


def problem_type(e: messages.Error) -> str:
    """The problem's type without urn:ietf:params:acme:error:, also for types the library does not know."""
    return str(e.typ).rsplit(":", 1)[-1]


def replacement_refused(e: messages.Error) -> str | None:
    """The CA's words if it refused `replaces` itself (RFC 9773), not the order; else None.

    A CA that still fails the order with an internal error after the
    retries may have tripped over `replaces` (Pebble 2.10 cannot find
    certificates whose serial's DER bytes start with 0x00, letsencrypt/pebble#550):
    asking once without it costs one request, and a CA that is down fails
    that one too.
    """
    typ, detail = problem_type(e), e.detail or e.description or ""
    if typ in ("alreadyReplaced", "serverInternal") or (typ == "unauthorized" and "replace" in detail.lower()):
        return clean(f"{typ}: {detail}", CA_SAID)
    return None


def challenge_error(authz: messages.Authorization) -> str:
    for challb in authz.challenges:
        if challb.error is not None:
            err: messages.Error = challb.error
            return clean(f"{err.detail or err.description} ({err.typ})", CA_SAID)
    return f"authorization {authz.status}"
