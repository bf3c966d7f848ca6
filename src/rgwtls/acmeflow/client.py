"""One CA directory as one account: the connection, the one-line errors, the account, what the directory offers.

Every step goes through `_guard`, which turns the library's exceptions into
one `AcmeError` line (a `CaUnavailable` when the CA itself failed). Renewal
information (ARI), the profiles and the CAA identity are read from here.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests
from acme import client, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.errors import DeserializationError
from josepy.jwa import ES256, ES384, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from rgwtls.acmeflow.network import CA_SAID, Network, retry_after
from rgwtls.acmeflow.objects import problem_type
from rgwtls.certs import ari_cert_id
from rgwtls.config import AcmeConfig, config_path, read_secret
from rgwtls.errors import AcmeError, CaUnavailable, ConfigError
from rgwtls.http import TotalTimeout
from rgwtls.proxy import failure, root_cause, route
from rgwtls.scrub import clean

# The name the log format shows: a line of the ACME flow reads as it always has, whichever module wrote it.
log = logging.getLogger("rgwtls.acmeflow")
T = TypeVar("T")


def new_account_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class Client:
    """One session with one CA directory, as one account: what every step stands on."""

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
                after = retry_after(self.net.last_response)
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
            if problem_type(e) == "accountDoesNotExist":
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
                if problem_type(e) == "alreadyRevoked":
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


def _jwk(key: Any) -> tuple[JWK, JWASignature]:
    """The JWK and JWS algorithm of a private key: RS256 for RSA, ES256 or ES384 by the curve."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return JWKEC(key=key), ES384 if key.curve.name == "secp384r1" else ES256
    return JWKRSA(key=key), RS256
