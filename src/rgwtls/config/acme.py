"""[acme]: which CA, as which account, through which proxy; its fallbacks are in config/fallback.py."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rgwtls.config.fallback import FallbackCa, validate_fallbacks
from rgwtls.config.values import Where, check_proxy, is_profile_name, proxy_user

LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
KEY_TYPES = ("rsa2048", "rsa3072", "rsa4096", "ec256", "ec384")


@dataclass(frozen=True)
class AcmeConfig:
    """[acme]: which CA, as which account, and how patiently to talk to it."""

    directory: str = LETSENCRYPT
    staging_directory: str = LETSENCRYPT_STAGING
    email: str = ""
    # A CA bundle for the ACME server's own HTTPS; empty means the system's.
    ca_bundle: str = ""
    key_type: str = "rsa2048"
    timeout: float = 30.0
    # Validation and finalization together may take this long before we give up.
    order_timeout: float = 300.0
    poll_interval: float = 1.0
    # badNonce is the CA's way of saying "try again"; Let's Encrypt asks clients to.
    nonce_retries: int = 10
    # 5xx and connection errors: retried with exponential backoff, this many times.
    retries: int = 4
    retry_backoff: float = 1.0
    # Every request to the CA goes through this proxy (http://[user@]host:port);
    # "direct": none, whatever the environment says; empty: the environment's
    # HTTPS_PROXY and NO_PROXY decide. The user's password is in the file.
    proxy: str = ""
    proxy_password_file: str = ""
    # The CA's certificate profile (draft-ietf-acme-profiles), one its directory
    # lists under meta.profiles, such as Let's Encrypt's classic, tlsserver or
    # shortlived; empty: the CA's default. [[certificate]] profile overrides it.
    profile: str = ""
    # The Common Name of the root the chain should end at (certbot's
    # --preferred-chain): of the chains the CA offers, the one whose topmost
    # certificate is issued by (or is) it; none matches, or empty: the default.
    preferred_chain: str = ""
    # External Account Binding, for CAs that bind an ACME account to an account
    # of theirs (Sectigo, HARICA, ZeroSSL, Google Trust Services): the key ID,
    # and a file holding the HMAC key, base64url as the CA hands it out. Used
    # only to register a new account. The staging_ pair is for `--staging`.
    eab_kid: str = ""
    eab_hmac_key_file: str = ""
    staging_eab_kid: str = ""
    staging_eab_hmac_key_file: str = ""
    # The issuer domain name of dns-persist-01 records, one of those the CA's
    # challenges list in issuer-domain-names; empty: the first of the CAA
    # identities its directory names (letsencrypt.org; Pebble: pebble.letsencrypt.org).
    persist_issuer: str = ""
    fallback: tuple[FallbackCa, ...] = ()
    # The system user `rgwtls issue` is meant to run as (the role's rgwtls_issuer_user);
    # run as root instead, it says so in one WARNING line. Empty: no check.
    run_as: str = ""

    def as_fallback(self, ca: FallbackCa) -> AcmeConfig:
        """This section as the fallback CA sees it: its directory, bundle, binding, profile and chain; the rest ours."""
        return dataclasses.replace(
            self,
            directory=ca.directory,
            ca_bundle=ca.ca_bundle,
            eab_kid=ca.eab_kid,
            eab_hmac_key_file=ca.eab_hmac_key_file,
            profile=ca.profile,
            preferred_chain=ca.preferred_chain,
            fallback=(),
        )

    def eab(self, staging: bool) -> tuple[str, str, str]:
        """(key ID, HMAC key file, the keys' prefix) for the production or the staging directory."""
        if staging:
            return self.staging_eab_kid, self.staging_eab_hmac_key_file, "acme.staging_eab_"
        return self.eab_kid, self.eab_hmac_key_file, "acme.eab_"


def validate_acme(acme: AcmeConfig, where: Where) -> None:
    """What the types cannot say: a key type and profile the CA knows, whole bindings, a proxy with its password."""
    if acme.key_type not in KEY_TYPES:
        raise where.error("acme.key_type", f"must be one of {', '.join(KEY_TYPES)}")
    if acme.timeout < 1:
        # The ACME client takes whole seconds, and 0 means no time at all to requests.
        raise where.error("acme.timeout", f"must be at least 1 (whole seconds), not {acme.timeout:g}")
    validate_fallbacks(acme.directory, acme.fallback, where)
    for staging in (False, True):
        kid, hmac_file, prefix = acme.eab(staging)
        if bool(kid) != bool(hmac_file):
            missing = f"{prefix}hmac_key_file" if kid else f"{prefix}kid"
            raise where.error(
                missing, f"required: External Account Binding needs both {prefix}kid and {prefix}hmac_key_file"
            )
    if acme.profile and not is_profile_name(acme.profile):
        raise where.error("acme.profile", f"{acme.profile!r} is not a profile name such as classic")
    check_proxy(acme.proxy, "acme.proxy", where, user_allowed=True)
    if proxy_user(acme.proxy) and not acme.proxy_password_file:
        raise where.error("acme.proxy_password_file", "required: acme.proxy names a user, whose password is in a file")
    if acme.proxy_password_file and not proxy_user(acme.proxy):
        raise where.error("acme.proxy_password_file", "acme.proxy names no user; write it as http://USER@host:port")


def validate_persist_issuer(acme: AcmeConfig, where: Where) -> None:
    """The issuer domain dns-persist-01 records name.

    Checked after [dns], which picks the challenge, so that a file with
    several faults reports the same one first as it always has.
    """
    issuer = acme.persist_issuer
    if issuer and (issuer != issuer.lower().rstrip(".") or "." not in issuer or any(c in issuer for c in " ;*=")):
        raise where.error("acme.persist_issuer", f"{issuer!r} is not a lower-case domain name such as letsencrypt.org")
