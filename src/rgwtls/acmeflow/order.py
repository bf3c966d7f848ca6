"""The order flow on top of the account: new order, challenges, their answers, finalize, the chain.

`Acme` is the protocol steps `issue` needs, each turning the library's
exceptions into one `AcmeError` line, with every poll bounded by the order's
deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import requests
from acme import challenges, errors, messages
from cryptography import x509
from josepy.b64 import b64encode
from josepy.errors import DeserializationError

from rgwtls.acmeflow.client import Client
from rgwtls.acmeflow.network import CA_SAID, retry_after
from rgwtls.acmeflow.objects import PERSIST, NewOrder, PendingChallenge, Ready, challenge_error, replacement_refused
from rgwtls.dns import Challenge
from rgwtls.errors import AcmeError, CaUnavailable
from rgwtls.scrub import clean

# The name the log format shows: a line of the ACME flow reads as it always has, whichever module wrote it.
log = logging.getLogger("rgwtls.acmeflow")


class Acme(Client):
    """One session with one CA directory, as one account: the steps `issue` takes."""

    def new_order(
        self, domains: Sequence[str], replaces: str | None, profile: str = ""
    ) -> tuple[messages.OrderResource, str | None]:
        """The order and its authorizations; the CSR comes only with `finalize`.

        A CA that will not take the order as the replacement of `replaces`
        (RFC 9773: alreadyReplaced after an earlier replacement whose
        certificate we never stored; unauthorized after an account change) is
        asked once more without it: ARI only tells the CA which certificate
        goes, and must never stall a renewal. The second value says why, when
        that happened.
        """
        what = f"create an order for {', '.join(domains)}"

        def call() -> tuple[messages.OrderResource, str | None]:
            try:
                return self._new_order(domains, replaces, profile), None
            except (messages.Error, errors.ConflictError) as e:
                problem = e if isinstance(e, messages.Error) else self._conflict_problem()
                refused = replacement_refused(problem) if problem is not None else None
                if replaces is None or refused is None:
                    if problem is not None and problem is not e:
                        raise problem from None
                    raise
            why = f"the CA refused the order as the replacement of {replaces} ({refused}); ordered it without replaces"
            return self._new_order(domains, None, profile), why

        return self._guard(what, call)

    def _conflict_problem(self) -> messages.Error | None:
        """The problem document of a 409, which the library raises as a bare ConflictError."""
        resp = self.net.last_response
        try:
            problem: messages.Error = messages.Error.from_json(resp.json() if resp is not None else None)
        except (ValueError, TypeError, DeserializationError):
            return None
        return problem

    def _new_order(self, domains: Sequence[str], replaces: str | None, profile: str) -> messages.OrderResource:
        idents = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=d) for d in domains]
        order = NewOrder(identifiers=idents, replaces=replaces, profile=profile or None)
        resp = self._post(self.client.directory["newOrder"], order)
        body = messages.Order.from_json(resp.json())
        authzrs = []
        for url in body.authorizations:
            a = self._post(url, None)
            authzrs.append(messages.AuthorizationResource(body=messages.Authorization.from_json(a.json()), uri=url))
        return messages.OrderResource(body=body, uri=resp.headers.get("Location"), authorizations=authzrs)

    def dns_challenges(self, orderr: messages.OrderResource) -> list[PendingChallenge]:
        """The DNS-01 challenges still to solve; authorizations the CA reuses need none."""
        pending = []
        for authzr in orderr.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue
            ident = str(authzr.body.identifier.value)
            for challb in authzr.body.challenges:
                if isinstance(challb.chall, challenges.DNS01):
                    value = challb.chall.validation(self.key)
                    token = b64encode(challb.chall.token).decode()
                    pending.append(PendingChallenge(authzr, challb, Challenge(ident, token, value)))
                    break
            else:
                raise AcmeError(f"ACME: the CA offers no dns-01 challenge for {ident}")
        return pending

    def persist_challenges(self, orderr: messages.OrderResource, issuer: str) -> list[PendingChallenge]:
        """The dns-persist-01 challenges still to answer, checked against the records we expect.

        The library parses this type as UnrecognizedChallenge and keeps its
        JSON. Its answer is the empty object, RFC 8555's "ready": the CA then
        looks the standing record up itself.
        """
        pending = []
        account = self.account_uri
        for authzr in orderr.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue
            ident = str(authzr.body.identifier.value)
            shown = f"*.{ident}" if authzr.body.wildcard else ident
            for challb in authzr.body.challenges:
                chall = challb.chall
                if isinstance(chall, challenges.UnrecognizedChallenge) and chall.jobj.get("type") == PERSIST:
                    break
            else:
                raise AcmeError(f"ACME: the CA offers no {PERSIST} challenge for {shown}; use dns-01 for it")
            names = [str(n).lower().rstrip(".") for n in chall.jobj.get("issuer-domain-names") or []]
            if names and issuer not in names:
                raise AcmeError(
                    f"ACME: the {PERSIST} challenge for {shown} accepts the issuer domain names "
                    f"{', '.join(names)}, not {issuer}; set acme.persist_issuer to one of them and run "
                    "rgwtls persist --publish"
                )
            # Only newer CAs (Pebble 2.10.1, the later drafts) say which account they expect.
            expected = chall.jobj.get("accounturi")
            if expected and expected != account:
                raise AcmeError(
                    f"ACME: the {PERSIST} challenge for {shown} expects accounturi={expected}, "
                    f"but this account is {account}"
                )
            value = f"{issuer}; accounturi={account}" + ("; policy=wildcard" if authzr.body.wildcard else "")
            target = f"_validation-persist.{ident}"
            pending.append(PendingChallenge(authzr, challb, Challenge(ident, "", value, target), Ready()))
        return pending

    def answer_and_wait(self, pending: list[PendingChallenge], deadline: float) -> None:
        """Answer every challenge, then poll each authorization until it is decided."""
        for p in pending:
            response = p.response if p.response is not None else p.challb.response(self.key)
            self._guard(
                f"answer the challenge for {p.identifier}",
                lambda: self.client.answer_challenge(p.challb, response),  # noqa: B023 - called at once
            )
        failures = []
        for p in pending:
            authz = self._poll_authz(p, deadline)
            if authz.status != messages.STATUS_VALID:
                failures.append(f"{p.identifier}: {challenge_error(authz)}")
        if failures:
            if any(p.response is not None for p in pending):
                raise AcmeError(
                    f"ACME: the CA rejected the {PERSIST} validation: " + "; ".join(failures) + "; "
                    "the records it must see are the ones 'rgwtls persist' prints"
                )
            raise AcmeError("ACME: the CA rejected the DNS challenge: " + "; ".join(failures))

    def _poll_authz(self, p: PendingChallenge, deadline: float) -> messages.Authorization:
        while True:
            authzr, resp = self._guard(f"poll the authorization of {p.identifier}", lambda: self.client.poll(p.authzr))
            if authzr.body.status not in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                return authzr.body
            self._sleep_until_next_poll(resp, deadline, f"validation of {p.identifier}")

    def _sleep_until_next_poll(self, resp: requests.Response, deadline: float, what: str) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CaUnavailable(
                f"ACME: {what} not done within {self.cfg.order_timeout:g}s; "
                "the CA may be slow, try again later or raise acme.order_timeout"
            )
        after = retry_after(resp)
        time.sleep(min(after if after is not None else self.cfg.poll_interval, remaining, 10.0))

    def finalize(self, orderr: messages.OrderResource, csr_pem: bytes, deadline: float) -> str:
        """Send the CSR, wait until the CA has issued, download the full chain."""
        orderr = orderr.update(csr_pem=csr_pem)
        orderr = self._guard("finalize the order", lambda: self.client.begin_finalization(orderr))
        body = self._decided(orderr.uri, orderr.body, self.net.last_response, deadline)
        if body.status != messages.STATUS_VALID or not body.certificate:
            # The challenges were valid: what failed now is the CA's own issuance.
            why = f": {clean(body.error.detail, CA_SAID)}" if body.error else ""
            raise CaUnavailable(f"ACME: the order ended {body.status}{why}")
        return self._fullchain(body.certificate)

    def collect(self, order_url: str, deadline: float) -> str | None:
        """The full chain of an order an earlier run finalized; None if that order never gives one.

        A CA that no longer knows the order, or not for this account, answers
        with a problem document: the order is dead, the CA is not, and the
        caller orders anew. A CA that cannot be reached is an AcmeError.
        """

        def fetch() -> tuple[messages.Order, requests.Response] | None:
            try:
                resp = self._post(order_url, None)
            except messages.Error as e:
                log.info("ACME: the CA no longer gives the order %s (%s)", order_url, e.detail or e.typ)
                return None
            except errors.ClientError:
                gone = self.net.last_response
                if gone is None or gone.status_code not in (403, 404, 410):
                    raise
                log.info("ACME: the CA no longer gives the order %s (HTTP %d)", order_url, gone.status_code)
                return None
            return messages.Order.from_json(resp.json()), resp

        found = self._guard(f"fetch the order {order_url}", fetch)
        if found is None:
            return None
        if found[0].status in (messages.STATUS_PENDING, messages.STATUS_READY):
            # Stopped before its CSR reached the CA: nothing was issued.
            log.info("ACME: the order %s was never finalized", order_url)
            return None
        body = self._decided(order_url, *found, deadline)
        if body.status != messages.STATUS_VALID or not body.certificate:
            log.info("ACME: the order %s ended %s", order_url, body.status)
            return None
        return self._fullchain(body.certificate)

    def _decided(
        self, url: str, body: messages.Order, resp: requests.Response | None, deadline: float
    ) -> messages.Order:
        """The order once the CA has decided it: polled after Retry-After or acme.poll_interval, as RFC 8555 asks.

        A CA that finalizes in the background (Pebble, and Let's Encrypt for
        some orders) answers "processing" first; the acme library's own
        client sleeps before its first poll too.
        """
        while body.status in (messages.STATUS_PENDING, messages.STATUS_PROCESSING, messages.STATUS_READY):
            log.info("ACME: the order is %s; asking again for the certificate", body.status)
            if resp is not None:
                self._sleep_until_next_poll(resp, deadline, "finalization")
            resp = self._guard("poll the order", lambda: self._post(url, None))
            body = messages.Order.from_json(resp.json())
            if body.status not in (messages.STATUS_PROCESSING, messages.STATUS_READY):
                break
        return body

    def _fullchain(self, url: str) -> str:
        resp = self._download(url, "download the certificate")
        return self._preferred(resp) if self.cfg.preferred_chain else str(resp.text)

    def _download(self, url: str, what: str) -> requests.Response:
        return self._guard(
            what,
            lambda: self._post(
                url,
                None,
                headers={"Content-Type": "application/jose+json", "Accept": "application/pem-certificate-chain"},
            ),
        )

    def _preferred(self, default: requests.Response) -> str:
        """The chain that ends at acme.preferred_chain, among the default and its Link rel="alternate"s.

        As certbot's --preferred-chain: a chain matches when its topmost
        certificate is issued by (or is) a certificate of that Common Name.
        New certificates pick their intermediate at random, so the choice
        goes by the root, never by an intermediate. No match: the default.
        """
        wanted = self.cfg.preferred_chain
        offered: list[str] = []
        alternates = [
            link["url"]
            for link in requests.utils.parse_header_links(default.headers.get("Link", ""))
            if link.get("rel") == "alternate" and link.get("url")
        ]
        for i, url in enumerate([None, *alternates]):
            resp = default if url is None else self._download(url, f"download alternate chain {i}")
            top = chain_top_names(str(resp.text))
            if wanted in top:
                if url is not None:
                    log.info("ACME: using the alternate chain that ends at %s (acme.preferred_chain)", wanted)
                return str(resp.text)
            offered.append(" / ".join(top) or "?")
        log.info(
            "ACME: no chain the CA offers ends at %s (acme.preferred_chain); using the default; offered: %s",
            wanted,
            "; ".join(offered),
        )
        return str(default.text)


def chain_top_names(fullchain: str) -> list[str]:
    """The issuer's and the subject's Common Name of a chain's topmost certificate (as certbot matches it)."""
    from cryptography.x509.oid import NameOID

    try:
        top = x509.load_pem_x509_certificates(fullchain.encode())[-1]
    except (ValueError, IndexError):
        return []
    names = []
    for name in (top.issuer, top.subject):
        for attr in name.get_attributes_for_oid(NameOID.COMMON_NAME):
            value = attr.value if isinstance(attr.value, str) else attr.value.decode()
            if value not in names:
                names.append(value)
    return names
