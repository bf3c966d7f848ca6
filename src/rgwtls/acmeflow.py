"""The ACME protocol, through certbot's `acme` library, made to survive real CAs.

The library retries a badNonce once; Let's Encrypt asks clients to retry it
as often as it comes, and at a 50% rejection rate certbot and dehydrated fail
every run. `Network` retries badNonce, 5xx and connection errors itself, and
keeps the last response so that a rate limit can be reported with its
Retry-After. `Acme` is the protocol steps `issue` needs, each turning the
library's exceptions into one `AcmeError` line.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests
from acme import challenges, client, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.b64 import b64encode
from josepy.errors import DeserializationError
from josepy.json_util import field
from josepy.jwa import ES256, ES384, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from rgwtls import __version__
from rgwtls.certs import ari_cert_id
from rgwtls.config import AcmeConfig, config_path, read_secret
from rgwtls.dns import Challenge
from rgwtls.errors import AcmeError, CaUnavailable, ConfigError
from rgwtls.http import TotalTimeout
from rgwtls.proxy import Route, failure, root_cause, route
from rgwtls.scrub import clean

log = logging.getLogger(__name__)
T = TypeVar("T")
USER_AGENT = f"rgwtls/{__version__}"
# A CA's own words (its problem documents' detail) as they reach a line: cleaned, and this long at most.
CA_SAID = 500


def new_account_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _retry_after(resp: requests.Response | None) -> float | None:
    """Seconds from a Retry-After header (delta or HTTP date), if any."""
    value = resp.headers.get("Retry-After") if resp is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class Network(client.ClientNetwork):
    def __init__(self, key: JWK, cfg: AcmeConfig, rt: Route, directory_url: str, alg: JWASignature = ES256) -> None:
        super().__init__(
            key,
            alg=alg,
            # A CA bundle path is passed on to requests as it is.
            verify_ssl=cfg.ca_bundle or True,  # type: ignore[arg-type]
            user_agent=USER_AGENT,
            timeout=int(cfg.timeout),
        )
        self.cfg = cfg
        # Every request goes the one way, whatever its URL: the CA is one place;
        # and each has acme.timeout as its total deadline (rgwtls.http), not only per read.
        self.route, self.directory_url = rt, directory_url
        rt.mount(self.session)
        self.last_response: requests.Response | None = None

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        self.last_response = None
        # Per request: the one setting requests lets no environment variable override.
        kwargs["proxies"] = self.route.proxies
        response: requests.Response = super()._send_request(method, url, *args, **kwargs)
        self.last_response = response
        return response

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        nonces = tries = 0
        while True:
            try:
                return call()
            except messages.Error as e:
                if e.code == "badNonce" and nonces < self.cfg.nonce_retries:
                    nonces += 1
                    log.debug("badNonce from the CA, retry %d", nonces)
                    continue
                status = self.last_response.status_code if self.last_response is not None else 0
                if status < 500 or tries >= self.cfg.retries:
                    raise
                problem = clean(f"{e.typ}: {e.detail}", CA_SAID)
            except errors.ClientError as e:
                status = self.last_response.status_code if self.last_response is not None else 0
                if status < 500 or tries >= self.cfg.retries:
                    raise
                problem = f"HTTP {status}: {e}"
            except (requests.ConnectionError, requests.Timeout) as e:
                refused = failure(self.route, e, self.directory_url)
                if tries >= self.cfg.retries or (refused is not None and refused.final):
                    raise
                problem = refused.text if refused is not None else type(e).__name__
            tries += 1
            wait = _retry_after(self.last_response) or self.cfg.retry_backoff * 2 ** (tries - 1)
            log.info("ACME %s failed (%s); retry %d of %d in %.1fs", what, problem, tries, self.cfg.retries, wait)
            time.sleep(min(wait, 60.0))

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        # _post_once takes a fresh nonce on every call: each retry is a new JWS.
        return self._retrying("POST", lambda: self._post_once(*args, **kwargs))

    def get(self, *args: Any, **kwargs: Any) -> requests.Response:
        return self._retrying("GET", lambda: super(Network, self).get(*args, **kwargs))

    def head(self, *args: Any, **kwargs: Any) -> requests.Response:
        return self._retrying("HEAD", lambda: super(Network, self).head(*args, **kwargs))


class _NewOrder(messages.NewOrder):
    """newOrder with RFC 9773's `replaces`, which acme 5.9 does not send (its `profile` it does)."""

    replaces: str | None = field("replaces", omitempty=True)


PERSIST = "dns-persist-01"


class _Ready(challenges.ChallengeResponse):
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


class Acme:
    """One session with one CA directory, as one account."""

    def __init__(self, cfg: AcmeConfig, directory_url: str, account_key_pem: str, cfg_path: Path | None = None) -> None:
        self.cfg = cfg
        self.cfg_path = cfg_path or config_path(None)
        self.directory_url = directory_url
        key = serialization.load_pem_private_key(account_key_pem.encode(), password=None)
        # The account's key is P-256; `revoke` signs with a certificate's own key, which may be RSA or P-384.
        self.key, alg = _jwk(key)
        password = ""
        if cfg.proxy_password_file:
            password = read_secret(cfg.proxy_password_file, "acme.proxy_password_file", self.cfg_path)
        self.route = route(cfg.proxy, "acme.proxy", directory_url, password)
        log.log(self.route.log_level, "ACME: requests to %s go %s", directory_url, self.route.describe())
        self.net = Network(self.key, cfg, self.route, directory_url, alg)
        self.client: client.ClientV2 = self._guard(
            f"fetch the directory {directory_url}",
            lambda: client.ClientV2(client.ClientV2.get_directory(directory_url, self.net), self.net),
        )

    def _guard(self, what: str, call: Callable[[], T]) -> T:
        """Run one protocol step; any failure becomes one AcmeError line."""
        try:
            return call()
        except messages.Error as e:
            if e.code == "rateLimited":
                after = _retry_after(self.net.last_response)
                when = f"; retry after {after:.0f}s" if after is not None else ""
                said = clean(e.detail, CA_SAID)
                raise CaUnavailable(f"ACME: rate limited while trying to {what}: {said}{when}") from None
            kind = CaUnavailable if self._server_failed() else AcmeError
            said = clean(f"{e.detail or e.description} ({e.typ})", CA_SAID)
            raise kind(f"ACME: could not {what}: {said}") from None
        except errors.ClientError as e:
            resp = self.net.last_response
            status = f"HTTP {resp.status_code}" if resp is not None else str(e)
            kind = CaUnavailable if self._server_failed() else AcmeError
            raise kind(f"ACME: could not {what}: {status} from {self.directory_url}") from None
        except requests.RequestException as e:
            raise CaUnavailable(f"ACME: could not {what}: {self._unreachable(e)}") from None
        except errors.Error as e:
            raise AcmeError(f"ACME: could not {what}: {e}") from None

    def _server_failed(self) -> bool:
        """Whether the CA's last answer was its own failure (5xx or 429, after the retries), not a refusal of ours."""
        resp = self.net.last_response
        return resp is not None and (resp.status_code >= 500 or resp.status_code == 429)

    def _unreachable(self, e: requests.RequestException) -> str:
        """Which of the two failed, the proxy or the CA, naming both."""
        refused = failure(self.route, e, self.directory_url)
        if refused is not None:
            return refused.text
        way = f"through proxy {self.route.proxy}" if self.route.proxy else "directly"
        if isinstance(e, TotalTimeout):
            return f"{e} ({way}; acme.timeout bounds each request)"
        return f"cannot reach {self.directory_url} {way}: {type(e).__name__}: {root_cause(e)}"

    @property
    def has_ari(self) -> bool:
        """Whether the CA offers renewal information (RFC 9773)."""
        try:
            self.client.directory["renewalInfo"]
        except KeyError:
            return False
        return True

    def _nonce_url(self) -> str:
        return str(self.client.directory["newNonce"])

    def _post(self, url: str, obj: Any, **kw: Any) -> requests.Response:
        return self.net.post(url, obj, new_nonce_url=self._nonce_url(), **kw)

    # -- steps -------------------------------------------------------------------

    def register(self, email: str, eab_kid: str = "", eab_hmac_key_file: str = "", eab_keys: str = "acme.eab_") -> None:
        """Log in as the account of our key, registering it the first time.

        newAccount with a known key answers with the existing account's URL,
        so this also recovers an account the CA forgot nothing about. With
        External Account Binding, an existing account is looked up first
        (onlyReturnExisting), and the binding is sent only to register a new
        one: some CAs take each key ID once.
        """
        meta = self.client.directory.meta
        if not eab_kid:
            if meta is not None and meta.external_account_required:
                raise AcmeError(
                    f"ACME: {self.directory_url} requires External Account Binding: set {eab_keys}kid and "
                    f"{eab_keys}hmac_key_file to the key ID and HMAC key the CA gives with your account there"
                )
            self._guard("register the ACME account", lambda: self._new_account(email, None))
            return
        if self._guard("look up the ACME account", self._existing_account):
            return
        binding = self._binding(eab_kid, eab_hmac_key_file, eab_keys)
        try:
            self._guard("register the ACME account", lambda: self._new_account(email, binding))
        except AcmeError as e:
            check = f"check {eab_keys}kid and {eab_keys}hmac_key_file"
            raise AcmeError(f"{e} (with External Account Binding key ID {eab_kid!r}; {check})") from None
        log.info("ACME: registered a new account at %s, bound to key ID %s", self.directory_url, eab_kid)

    def _new_account(self, email: str, binding: dict[str, Any] | None) -> None:
        reg = messages.NewRegistration.from_data(
            email=email or None, terms_of_service_agreed=True, external_account_binding=binding
        )
        try:
            self.client.new_account(reg)
        except errors.ConflictError as e:
            self.net.account = messages.RegistrationResource(uri=e.location, body=messages.Registration())

    def _existing_account(self) -> bool:
        """Whether the CA knows an account for our key; if so, it is the one we act as."""
        try:
            self.client.new_account(messages.NewRegistration(only_return_existing=True))
        except errors.ConflictError as e:
            self.net.account = messages.RegistrationResource(uri=e.location, body=messages.Registration())
            return True
        except messages.Error as e:
            if _problem_type(e) == "accountDoesNotExist":
                return False
            raise
        return True

    def _binding(self, kid: str, hmac_key_file: str, keys: str) -> dict[str, Any]:
        """The EAB JWS (RFC 8555 7.3.4); the HMAC key is read from its file and goes nowhere else."""
        key = read_secret(hmac_key_file, f"{keys}hmac_key_file", self.cfg_path)
        if not re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", key):
            raise ConfigError(
                f"config {self.cfg_path}: {keys}hmac_key_file: {hmac_key_file} does not hold a base64url key, "
                "as the CA hands it out"
            )
        binding: dict[str, Any] = messages.ExternalAccountBinding.from_data(
            account_public_key=self.key.public_key(), kid=kid, hmac_key=key, directory=self.client.directory
        )
        return binding

    @property
    def account_uri(self) -> str:
        """The account's URL, the accounturi of dns-persist-01 records; known once registered."""
        account = self.net.account
        return str(account.uri) if account is not None and account.uri else ""

    @property
    def persist_issuer(self) -> str:
        """The issuer domain name for dns-persist-01 records: acme.persist_issuer, else the CA's first CAA identity."""
        if self.cfg.persist_issuer:
            return self.cfg.persist_issuer
        meta = self.client.directory.meta
        caa = meta.caa_identities if meta is not None else None
        if not caa:
            raise AcmeError(
                f"ACME: {self.directory_url} names no CAA identity in its directory; set acme.persist_issuer to "
                "the issuer domain name its dns-persist-01 challenges list (issuer-domain-names)"
            )
        return str(caa[0]).lower().rstrip(".")

    def renewal_time(self, cert_pem: str) -> dt.datetime | None:
        """When ARI says to renew, or None if the CA has no ARI; ARI failures fall back to None.

        The start of the CA's suggested window. RFC 9773 suggests a random
        moment in it, to spread a CA's millions of clients; a fleet has one
        issuer, and `check` warns from the window's start ("the CA asks for
        renewal now"), so the issuer renews from there too and the two agree.
        """
        if not self.has_ari:
            return None
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC):
            return cert.not_valid_after_utc  # RFC 9773: no renewal info for an expired certificate
        cert_id = ari_cert_id(cert)
        if cert_id is None:
            return None
        try:
            url = f"{str(self.client.directory['renewalInfo']).rstrip('/')}/{cert_id}"
            info = messages.RenewalInfo.from_json(self.net.get(url, content_type="application/json").json())
            start: dt.datetime = info.suggested_window.start
        except (errors.Error, requests.RequestException, messages.Error, ValueError, DeserializationError) as e:
            why = self._unreachable(e) if isinstance(e, requests.RequestException) else str(e)
            log.warning("ACME renewal info (ARI) unavailable (%s); using the lifetime rule", why)
            return None
        return start if start.tzinfo else start.replace(tzinfo=dt.UTC)

    @property
    def profiles(self) -> dict[str, str] | None:
        """The profiles the CA offers (name: description), or None if its directory lists none."""
        meta = self.client.directory.meta
        offered = meta.profiles if meta is not None else None
        return dict(offered) if offered else None

    def revoke(self, cert_pem: str, reason: int) -> bool:
        """Revoke the certificate, signed by this session's key (the account's, or the certificate's own).

        False if the CA says it is revoked already (alreadyRevoked): a run
        resumed after the CA answered, or the CA revoked it itself.
        """
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(cert_pem.encode())

        def call() -> bool:
            try:
                self.client.revoke(cert, reason)
            except messages.Error as e:
                if _problem_type(e) == "alreadyRevoked":
                    return False
                raise
            return True

        return self._guard(f"revoke certificate {cert.serial_number:x}", call)

    def check_profile(self, profile: str, key: str) -> None:
        """One line if the CA does not offer `profile`, naming what it does offer."""
        if not profile:
            return
        offered = self.profiles
        if offered is None:
            raise AcmeError(f"ACME: {key} is {profile!r}, but {self.directory_url} offers no profiles; remove it")
        if profile not in offered:
            raise AcmeError(
                f"ACME: {key} is {profile!r}, which {self.directory_url} does not offer "
                f"(it offers: {', '.join(sorted(offered))})"
            )

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
                refused = _replacement_refused(problem) if problem is not None else None
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
        order = _NewOrder(identifiers=idents, replaces=replaces, profile=profile or None)
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
            pending.append(PendingChallenge(authzr, challb, Challenge(ident, "", value, target), _Ready()))
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
                failures.append(f"{p.identifier}: {_challenge_error(authz)}")
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
        after = _retry_after(resp)
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
            top = _chain_top_names(str(resp.text))
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


def _jwk(key: Any) -> tuple[JWK, JWASignature]:
    """The JWK and JWS algorithm of a private key: RS256 for RSA, ES256 or ES384 by the curve."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return JWKEC(key=key), ES384 if key.curve.name == "secp384r1" else ES256
    return JWKRSA(key=key), RS256


def _chain_top_names(fullchain: str) -> list[str]:
    """The issuer's and the subject's Common Name of a chain's topmost certificate (as certbot matches it)."""
    from cryptography import x509
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


def _problem_type(e: messages.Error) -> str:
    """The problem's type without urn:ietf:params:acme:error:, also for types the library does not know."""
    return str(e.typ).rsplit(":", 1)[-1]


def _replacement_refused(e: messages.Error) -> str | None:
    """The CA's words if it refused `replaces` itself (RFC 9773), not the order; else None.

    A CA that still fails the order with an internal error after the
    retries may have tripped over `replaces` (Pebble 2.10 cannot find
    certificates whose serial's DER bytes start with 0x00, letsencrypt/pebble#550):
    asking once without it costs one request, and a CA that is down fails
    that one too.
    """
    typ, detail = _problem_type(e), e.detail or e.description or ""
    if typ in ("alreadyReplaced", "serverInternal") or (typ == "unauthorized" and "replace" in detail.lower()):
        return clean(f"{typ}: {detail}", CA_SAID)
    return None


def _challenge_error(authz: messages.Authorization) -> str:
    for challb in authz.challenges:
        if challb.error is not None:
            err: messages.Error = challb.error
            return clean(f"{err.detail or err.description} ({err.typ})", CA_SAID)
    return f"authorization {authz.status}"
