"""The TOML configuration, validated on load.

Every section is a frozen dataclass; the loader walks the dataclass fields, so
an unknown key, a wrong type or a missing value is reported with the key's
full name and the file, as one line. Secrets are never values in this file:
only paths to files readable by their owner (see `read_secret`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shlex
import stat
import string
import tomllib
import typing
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from rgwtls.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PATH = Path("/etc/rgwtls/rgwtls.toml")
LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
KEY_TYPES = ("rsa2048", "rsa3072", "rsa4096", "ec256", "ec384")
PERSIST = "dns-persist-01"
CHALLENGES = ("dns-01", PERSIST)


@dataclass(frozen=True)
class FallbackCa:
    """[[acme.fallback]]: a CA asked, in order, when acme.directory cannot issue in this run (each its own account)."""

    directory: str
    ca_bundle: str = ""
    eab_kid: str = ""
    eab_hmac_key_file: str = ""
    profile: str = ""
    preferred_chain: str = ""


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


@dataclass(frozen=True)
class InfobloxConfig:
    """[dns.infoblox]: the grid's WAPI; the password lives in a file readable only by its owner."""

    server: str = ""
    wapi_version: str = "2.11"
    username: str = ""
    password_file: str = ""
    view: str = "default"
    ttl: int = 60
    verify_tls: bool = True
    ca_bundle: str = ""
    timeout: float = 30.0
    retries: int = 3
    # WAPI through this proxy (http://host:port), or "direct"; empty: direct
    # when acme.proxy is set, else the environment decides (see `parse`).
    proxy: str = ""
    # The view of the zone delegated challenges (CNAME or challenge_alias) go to; empty: `view`.
    alias_view: str = ""


@dataclass(frozen=True)
class UddiConfig:
    """[dns.uddi]: Infoblox's cloud API; the API key lives in a file readable only by its owner."""

    # Infoblox Universal DDI (the Cloud Services Portal): https://PORTAL/api/ddi/v1/
    portal: str = "csp.infoblox.com"
    api_key_file: str = ""
    # The DNS view (by name) of the zones; empty: whichever view holds the zone, if only one does.
    view: str = ""
    # The view of the zone delegated challenges go to; empty: `view`.
    alias_view: str = ""
    ttl: int = 60
    ca_bundle: str = ""
    timeout: float = 30.0
    # Attempts per request on 429 (after its Retry-After), 5xx and network errors.
    retries: int = 4
    # Longest wait a 429's Retry-After may ask for; a longer one fails at once.
    max_retry_after: float = 60.0


@dataclass(frozen=True)
class Rfc2136Config:
    """[dns.rfc2136]: a primary taking TSIG-signed updates; the secret lives in a file."""

    server: str = ""
    port: int = 53
    zone: str = ""
    tsig_key_name: str = ""
    tsig_algorithm: str = "hmac-sha256"
    tsig_secret_file: str = ""
    ttl: int = 60
    timeout: float = 10.0
    # Delegated challenges (CNAME or challenge_alias) go to the target zone's
    # primary with its own key; each empty value: the one above.
    alias_server: str = ""
    alias_port: int = 53
    alias_zone: str = ""
    alias_tsig_key_name: str = ""
    alias_tsig_secret_file: str = ""


@dataclass(frozen=True)
class HookConfig:
    """[dns.hook]: a dehydrated-style hook, for DNS services rgwtls has no back end for."""

    command: str = ""
    timeout: float = 120.0


@dataclass(frozen=True)
class DnsConfig:
    """[dns]: which back end publishes the records, and how long to wait until every server has them."""

    provider: str = "infoblox"
    # Authoritative servers to check ("host" or "host:port"). Empty: discover
    # them from the zone's NS records. Set it for split-horizon views, where
    # the servers the CA asks are not the ones the NS records name.
    nameservers: tuple[str, ...] = ()
    # Resolvers used to discover zones and nameservers; empty: the system's.
    resolvers: tuple[str, ...] = ()
    # The port discovered nameservers are asked on.
    nameserver_port: int = 53
    propagation_timeout: float = 300.0
    propagation_interval: float = 5.0
    query_timeout: float = 3.0
    # How each certificate's names are validated, unless its [[certificate]]
    # says otherwise: "dns-01", a TXT record written and removed at every
    # order, or "dns-persist-01", one standing record that `rgwtls persist
    # --publish` writes once, after which orders need no DNS write at all.
    challenge: str = "dns-01"
    infoblox: InfobloxConfig = field(default_factory=InfobloxConfig)
    rfc2136: Rfc2136Config = field(default_factory=Rfc2136Config)
    hook: HookConfig = field(default_factory=HookConfig)
    uddi: UddiConfig = field(default_factory=UddiConfig)


@dataclass(frozen=True)
class DeployConfig:
    """[deploy]: what this gateway installs, where, and how radosgw is restarted and checked."""

    # Which [[certificate]] this gateway serves; empty: the first one.
    certificate: str = ""
    # The names this gateway must be covered for; empty: the certificate's domains.
    names: tuple[str, ...] = ()
    # pem: key, cert and chain in one file (civetweb's and beast's ssl_certificate);
    # split: a key file and a cert+chain file (beast's ssl_private_key);
    # config-key: the mon config-key store, for ssl_certificate=config://KEY.
    layout: str = "pem"
    path: str = "/etc/ceph/rgw.pem"
    key_path: str = "/etc/ceph/rgw.key"
    cert_path: str = "/etc/ceph/rgw.crt"
    config_key: str = ""
    # Owner, group and mode (octal) of new files (existing files keep theirs);
    # empty owner or group: the caller's.
    owner: str = ""
    group: str = ""
    mode: str = "0640"
    # This host's own state: deploy's host lock, per-host records, and the
    # issuer's set kept when the pool could not store it.
    state_dir: str = "/var/lib/rgwtls"
    # A PEM bundle of roots trusted besides the system's store: a set whose
    # chain does not end at one of them is neither stored nor installed.
    # Set it for a private ACME CA (step-ca, Pebble); empty: the system's alone.
    trusted_roots: str = ""
    # Split like a shell would, then {host} (the short host name) is put into each word.
    restart_command: str = "systemctl restart ceph-radosgw@rgw.{host}"
    restart_timeout: float = 120.0
    # At most this many gateways of the fleet restart at the same moment.
    max_parallel_restarts: int = 1
    # How long to wait for a restart slot while other gateways restart.
    restart_wait: float = 900.0
    # Wait a random 0..splay seconds before installing, to spread the fleet.
    splay: float = 0.0
    verify_endpoint: str = "127.0.0.1:443"
    # SNI and name checked in the handshake; empty: the first non-wildcard name.
    verify_server_name: str = ""
    verify_timeout: float = 30.0
    # `deploy --watch`: besides every notify from the issuer, look at the pool this often.
    interval: float = 300.0
    # How the server takes a new certificate: restart (restart_command, under
    # a slot), haproxy (HAProxy's runtime API, no restart) or self (the server
    # re-reads its file, as radosgw's ssl_reload does; restarted if not served
    # within self_reload_wait seconds).
    activate: str = "restart"
    haproxy_socket: str = "/run/haproxy/admin.sock"
    self_reload_wait: float = 30.0
    # Pools a starting radosgw must reach (zone root, control pool): probed before
    # every restart, which waits while they do not answer; empty: no probe (health.py).
    rgw_pools: tuple[str, ...] = (".rgw.root", "default.rgw.control")

    def restart_argv(self, host: str) -> list[str]:
        """The restart command for this host; validated at load, so it cannot fail here.

        The command is split first and each word formatted after, so a host
        name can never add, remove or join words.
        """
        return [word.format(host=host) for word in _restart_words(self.restart_command)]

    @property
    def slot_hold(self) -> float:
        """How long a restart slot is held: a restart and its check, twice over (a rollback), and a margin.

        A slot outlives a gateway that died holding it by at most this long,
        and rollout takes a holder record older than this for a lapsed one.
        """
        return self.restart_timeout + 2 * self.verify_timeout + 60

    @property
    def file_mode(self) -> int:
        return int(self.mode, 8)


def _restart_words(command: str) -> list[str]:
    """The words of deploy.restart_command; ValueError says what is wrong with it, for the loader."""
    try:
        words = shlex.split(command)
    except ValueError as e:
        raise ValueError(f"cannot be split like a shell would ({e})") from None
    if not words:
        raise ValueError("must name a command")
    for word in words:
        try:
            fields = list(string.Formatter().parse(word))
        except ValueError as e:
            raise ValueError(f"{word!r}: {e}; write a literal brace as {{{{ or }}}}") from None
        for _, name, spec, conversion in fields:
            if name is None:
                continue
            if name != "host" or spec or conversion:
                shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
                raise ValueError(
                    f"{word!r}: {shown} is not allowed; the only placeholder is {{host}} "
                    "(write a literal brace as {{ or }})"
                )
    return words


class _Lifetime(Protocol):
    """What a threshold is judged against (status's CertFacts), without importing it: config is the lowest layer."""

    @property
    def lifetime_days(self) -> float: ...

    @property
    def days_left(self) -> float: ...


@dataclass(frozen=True)
class Threshold:
    """Days left ("14") or a share of the lifetime left ("20%"), for check.warning and check.critical."""

    value: float
    fraction: bool

    @classmethod
    def parse(cls, text: str, what: str) -> Threshold:
        raw = text.strip()
        try:
            fraction = raw.endswith("%")
            number = float(raw[:-1] if fraction else raw)
        except ValueError:
            raise ConfigError(f"{what}: {text!r} is neither days (14) nor a share of the lifetime (20%)") from None
        if fraction and not 0 <= number <= 100:
            raise ConfigError(f"{what}: {text!r} is not a share of the lifetime between 0% and 100%")
        if not fraction and not (math.isfinite(number) and number >= 0):
            raise ConfigError(f"{what}: {text!r} is not a number of days of 0 or more")
        return cls(number / 100 if fraction else number, fraction)

    def days(self, facts: _Lifetime) -> float:
        return self.value * facts.lifetime_days if self.fraction else self.value

    def reached(self, facts: _Lifetime) -> bool:
        return facts.days_left <= self.days(facts)


@dataclass(frozen=True)
class CheckConfig:
    """[check]: the monitoring plugin's defaults; the command line overrides them."""

    # Days left ("14") or a share of the lifetime left ("20%"): renewal is
    # due at a third left, so a warning at a fifth means renewal is overdue.
    warning: str = "20%"
    critical: str = "10%"
    # How long the served certificate may differ from the pool's before
    # CRITICAL: the time every gateway's cron needs to deploy it.
    grace: float = 3600.0


@dataclass(frozen=True)
class CertificateConfig:
    """One [[certificate]]: a set of names issued, stored and deployed together."""

    name: str
    domains: tuple[str, ...]
    key_type: str = ""
    # Publish at _acme-challenge.<challenge_alias> instead of following the
    # _acme-challenge CNAMEs (acme.sh's --challenge-alias); empty: follow them.
    challenge_alias: str = ""
    # This certificate's profile; empty: acme.profile.
    profile: str = ""
    # "dns-01" or "dns-persist-01"; empty: dns.challenge.
    challenge: str = ""

    def wanted_profile(self, acme: AcmeConfig) -> str:
        return self.profile or acme.profile

    def wanted_challenge(self, dns: DnsConfig) -> str:
        return self.challenge or dns.challenge

    def persistent(self, dns: DnsConfig) -> bool:
        """Whether its names are validated by standing dns-persist-01 records."""
        return self.wanted_challenge(dns) == PERSIST


@dataclass(frozen=True)
class Config:
    """The whole file, validated: every command reads this and nothing else."""

    path: Path
    acme: AcmeConfig
    ceph: CephConfig
    dns: DnsConfig
    certificates: tuple[CertificateConfig, ...]
    deploy: DeployConfig = field(default_factory=DeployConfig)
    check: CheckConfig = field(default_factory=CheckConfig)

    def certificate(self, name: str | None) -> tuple[CertificateConfig, ...]:
        if name is None:
            return self.certificates
        for cert in self.certificates:
            if cert.name == name:
                return (cert,)
        known = ", ".join(c.name for c in self.certificates)
        raise ConfigError(f"no certificate named {name!r} in {self.path} (configured: {known})")


def config_path(cli_value: str | None) -> Path:
    """--config, else $RGWTLS_CONFIG, else the system file."""
    return Path(cli_value or os.environ.get("RGWTLS_CONFIG") or DEFAULT_PATH)


def load(path: Path) -> Config:
    """Read, check and parse the file.

    A file others may write is refused, as sshd refuses one: its
    restart_command and hook.command run as root. The mode is taken from the
    opened file, so it is the one whose text is read.
    """
    try:
        with path.open("rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; pass --config or set RGWTLS_CONFIG") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"config {path} is writable by group or others (mode {mode:04o}): its restart_command and "
            f"hook.command run as root; run: chmod go-w {path}"
        )
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return parse(raw, path)


def parse(raw: Mapping[str, Any], path: Path) -> Config:
    where = _Where(path)
    known = {"acme", "ceph", "dns", "deploy", "check", "certificate"}
    for key in raw:
        if key not in known:
            raise where.error(key, "unknown section or key")
    certs_raw = raw.get("certificate", [])
    if not isinstance(certs_raw, list) or not certs_raw:
        raise where.error("certificate", "at least one [[certificate]] table is required")
    cfg = Config(
        path=path,
        acme=_build(AcmeConfig, raw.get("acme", {}), where, "acme"),
        ceph=_build(CephConfig, raw.get("ceph", {}), where, "ceph"),
        dns=_build(DnsConfig, raw.get("dns", {}), where, "dns"),
        deploy=_build(DeployConfig, raw.get("deploy", {}), where, "deploy"),
        check=_build(CheckConfig, raw.get("check", {}), where, "check"),
        certificates=tuple(_build(CertificateConfig, c, where, f"certificate[{i}]") for i, c in enumerate(certs_raw)),
    )
    _check(cfg, where)
    if cfg.acme.proxy and not cfg.dns.infoblox.proxy:
        # The site named its way to the internet; the appliance is internal.
        infoblox = dataclasses.replace(cfg.dns.infoblox, proxy=PROXY_DIRECT)
        cfg = dataclasses.replace(cfg, dns=dataclasses.replace(cfg.dns, infoblox=infoblox))
    return cfg


class _Where:
    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"config {self.path}: {key}: {problem}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str, where: _Where) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, list):
            raise where.error(key, f"must be {_type_name(tp)}, got {type(value).__name__}")
        item = typing.get_args(tp)[0]
        return tuple(_coerce(v, item, key, where) for v in value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (str, int, bool, float) and type(value) is tp:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise where.error(key, "must be a table")
        return _build(tp, value, where, key)
    raise where.error(key, f"must be {_type_name(tp)}, got {type(value).__name__}")


T = typing.TypeVar("T")


def _build(cls: type[T], raw: Any, where: _Where, prefix: str) -> T:
    if not isinstance(raw, dict):
        raise where.error(prefix, "must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if key not in fields:
            raise where.error(f"{prefix}.{key}", "unknown key")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}"
        if name in raw:
            values[name] = _coerce(raw[name], hints[name], key, where)
            _check_number(name, values[name], key, where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise where.error(key, "required")
    return cls(**values)


# No wait, timeout or lifetime needs more, and a sane bound keeps every later
# sum, sleep and socket timeout clear of OverflowError.
MAX_SECONDS = 365 * 24 * 3600.0
# Names of number keys that 0 would break: a zero timeout fails at once, a zero interval spins.
POSITIVE = ("timeout", "interval", "duration")
# Integer keys with bounds of their own; every other integer must be 0 or more.
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "port": (1, 65535),
    "alias_port": (1, 65535),
    "nameserver_port": (1, 65535),
    "ttl": (0, 2**31 - 1),  # RFC 2181
    "retries": (0, 100),
    "nonce_retries": (0, 100),
    "max_parallel_restarts": (1, 10_000),
}


def _check_number(name: str, value: Any, key: str, where: _Where) -> None:
    """Bounds by type and name, so that every number is checked, including ones added later."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise where.error(key, f"must be a finite number, not {value}")
        if any(word in name for word in POSITIVE):
            if not 0 < value <= MAX_SECONDS:
                raise where.error(key, f"must be more than 0 and at most {MAX_SECONDS:g} (seconds), not {value:g}")
        elif not 0 <= value <= MAX_SECONDS:
            raise where.error(key, f"must be 0 or more and at most {MAX_SECONDS:g} (seconds), not {value:g}")
    elif isinstance(value, int) and not isinstance(value, bool):
        low, high = INT_BOUNDS.get(name, (0, 2**31 - 1))
        if not low <= value <= high:
            raise where.error(key, f"must be between {low} and {high}, not {value}")


def _check(cfg: Config, where: _Where) -> None:
    """Cross-field checks the types cannot express."""
    if cfg.acme.key_type not in KEY_TYPES:
        raise where.error("acme.key_type", f"must be one of {', '.join(KEY_TYPES)}")
    if cfg.acme.timeout < 1:
        # The ACME client takes whole seconds, and 0 means no time at all to requests.
        raise where.error("acme.timeout", f"must be at least 1 (whole seconds), not {cfg.acme.timeout:g}")
    seen = {cfg.acme.directory}
    for ca in cfg.acme.fallback:
        if ca.directory in seen:
            raise where.error("acme.fallback", f"{ca.directory} is named twice (acme.directory or another fallback)")
        seen.add(ca.directory)
        if bool(ca.eab_kid) != bool(ca.eab_hmac_key_file):
            raise where.error(
                "acme.fallback", f"{ca.directory}: External Account Binding needs both eab_kid and eab_hmac_key_file"
            )
    for staging in (False, True):
        kid, hmac_file, prefix = cfg.acme.eab(staging)
        if bool(kid) != bool(hmac_file):
            missing = f"{prefix}hmac_key_file" if kid else f"{prefix}kid"
            raise where.error(
                missing, f"required: External Account Binding needs both {prefix}kid and {prefix}hmac_key_file"
            )
    if cfg.acme.profile and not _is_profile_name(cfg.acme.profile):
        raise where.error("acme.profile", f"{cfg.acme.profile!r} is not a profile name such as classic")
    _check_proxy(cfg.acme.proxy, "acme.proxy", where, user_allowed=True)
    if proxy_user(cfg.acme.proxy) and not cfg.acme.proxy_password_file:
        raise where.error("acme.proxy_password_file", "required: acme.proxy names a user, whose password is in a file")
    if cfg.acme.proxy_password_file and not proxy_user(cfg.acme.proxy):
        raise where.error("acme.proxy_password_file", "acme.proxy names no user; write it as http://USER@host:port")
    _check_proxy(cfg.dns.infoblox.proxy, "dns.infoblox.proxy", where, user_allowed=False)
    if cfg.dns.provider not in ("infoblox", "uddi", "rfc2136", "hook"):
        raise where.error("dns.provider", "must be infoblox, uddi, rfc2136 or hook")
    if cfg.dns.challenge not in CHALLENGES:
        raise where.error("dns.challenge", f"must be {' or '.join(CHALLENGES)}, not {cfg.dns.challenge!r}")
    issuer = cfg.acme.persist_issuer
    if issuer and (issuer != issuer.lower().rstrip(".") or "." not in issuer or any(c in issuer for c in " ;*=")):
        raise where.error("acme.persist_issuer", f"{issuer!r} is not a lower-case domain name such as letsencrypt.org")
    Threshold.parse(cfg.check.warning, f"config {where.path}: check.warning")
    Threshold.parse(cfg.check.critical, f"config {where.path}: check.critical")
    if not cfg.ceph.user.startswith("client."):
        raise where.error("ceph.user", f"must be a cephx entity name such as client.rgwtls, not {cfg.ceph.user!r}")
    d = cfg.deploy
    if d.layout not in ("pem", "split", "config-key"):
        raise where.error("deploy.layout", "must be pem, split or config-key")
    if d.layout == "config-key" and not d.config_key.startswith("rgw/cert/"):
        raise where.error("deploy.config_key", "must start with rgw/cert/ for the config-key layout")
    if d.certificate and d.certificate not in {c.name for c in cfg.certificates}:
        raise where.error("deploy.certificate", f"no [[certificate]] is named {d.certificate!r}")
    try:
        _restart_words(d.restart_command)
    except ValueError as e:
        raise where.error("deploy.restart_command", str(e)) from None
    _check_mode(d.mode, where)
    _check_activate(d, where)
    names: set[str] = set()
    for i, cert in enumerate(cfg.certificates):
        key = f"certificate[{i}]"
        problem = name_problem(cert.name)
        if problem:
            raise where.error(f"{key}.name", problem)
        if cert.name in names:
            raise where.error(f"{key}.name", f"{cert.name!r} is configured twice")
        names.add(cert.name)
        if not cert.domains:
            raise where.error(f"{key}.domains", "must list at least one domain")
        if cert.key_type and cert.key_type not in KEY_TYPES:
            raise where.error(f"{key}.key_type", f"must be one of {', '.join(KEY_TYPES)}")
        for domain in cert.domains:
            if domain != domain.lower().rstrip(".") or " " in domain or "*" in domain[1:]:
                raise where.error(f"{key}.domains", f"{domain!r} is not a lower-case domain name")
        if cert.profile and not _is_profile_name(cert.profile):
            raise where.error(f"{key}.profile", f"{cert.profile!r} is not a profile name such as classic")
        if cert.challenge and cert.challenge not in CHALLENGES:
            raise where.error(f"{key}.challenge", f"must be {' or '.join(CHALLENGES)}, not {cert.challenge!r}")
        if cert.challenge_alias and cert.persistent(cfg.dns):
            raise where.error(
                f"{key}.challenge_alias",
                "is for dns-01 only: a dns-persist-01 record is always _validation-persist.NAME; remove it",
            )
        alias = cert.challenge_alias
        if alias and (alias != alias.lower().rstrip(".") or "*" in alias or " " in alias or "." not in alias):
            raise where.error(f"{key}.challenge_alias", f"{alias!r} is not a lower-case domain name")


# The longest file name the code makes from a name is the temporary file of a
# kept staging set, ".NAME.staging.json.rgwtls-PID" (about 35 bytes besides
# NAME), and 255 bytes is what Linux file systems hold; RADOS object names
# (NAME/last-deploy) hold far more. 64 leaves room for new files, and keeps
# log lines and metric labels readable.
MAX_NAME_BYTES = 64


def name_problem(name: str) -> str | None:
    """Why a certificate name is unsafe as a RADOS object name and as a file name, or None.

    librados cuts object names at a NUL, so two names that differ after it
    would share every object; '/' and a leading '.' would reach other files
    of the state directory; control characters break log lines and files.
    """
    if not name:
        return "must not be empty"
    if "\0" in name:
        return "holds a NUL byte; use letters, digits, '.', '-' and '_'"
    bad = next((c for c in name if unicodedata.category(c).startswith("C")), None)
    if bad is not None:
        return f"holds the control character U+{ord(bad):04X}; use letters, digits, '.', '-' and '_'"
    if "/" in name:
        return "must not hold '/': it names a RADOS object and a file; use '.', '-' or '_' instead"
    if name.startswith("."):
        return f"{name!r} must not start with '.'"
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        return f"is {size} bytes long; at most {MAX_NAME_BYTES} are allowed (it names files in deploy.state_dir)"
    return None


def _is_profile_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "-_." for c in name)


PROXY_DIRECT = "direct"


def proxy_user(value: str) -> str:
    """The user of a proxy URL, unquoted; empty if it has none (or is not a URL)."""
    if value == PROXY_DIRECT:
        return ""
    return unquote(urlsplit(value).username or "")


def _check_proxy(value: str, key: str, where: _Where, user_allowed: bool) -> None:
    """A proxy key: empty, "direct", or http://[user@]host:port; errors never repeat the URL's userinfo."""
    if not value or value == PROXY_DIRECT:
        return
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError as e:
        raise where.error(key, f"is not a URL such as http://proxy.example.org:3128 ({e})") from None
    shown = f"{url.scheme}://{url.hostname}:{port}" if url.hostname else "it"
    if url.scheme != "http":
        raise where.error(key, f"must be http://host:port (a proxy spoken to in plain HTTP) or {PROXY_DIRECT!r}")
    if not url.hostname or port is None:
        raise where.error(key, f"{shown} must name a host and a port, such as http://proxy.example.org:3128")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise where.error(key, f"{shown} must be just http://host:port, without a path")
    if url.password is not None:
        raise where.error(key, f"{shown}: the password goes in acme.proxy_password_file, never in the URL")
    if url.username is not None and not user_allowed:
        raise where.error(key, f"{shown}: a proxy that wants a password is supported for acme.proxy only")


def _check_activate(d: DeployConfig, where: _Where) -> None:
    """deploy.activate: HAProxy loads one PEM per crt (key, cert, chain), so haproxy wants the pem layout."""
    if d.activate not in ("restart", "haproxy", "self"):
        raise where.error("deploy.activate", f"must be restart, haproxy or self, not {d.activate!r}")
    if d.activate == "haproxy" and d.layout != "pem":
        raise where.error("deploy.activate", 'haproxy needs layout = "pem": HAProxy\'s crt loads one file')
    if d.activate == "haproxy" and not d.haproxy_socket.startswith("/"):
        raise where.error("deploy.haproxy_socket", f"must be an absolute path, not {d.haproxy_socket!r}")
    if d.activate == "self" and d.layout == "config-key":
        raise where.error("deploy.activate", "self needs a file layout (pem or split): radosgw re-reads files")


def _check_mode(mode: str, where: _Where) -> None:
    """deploy.mode: the file holds the private key, so others get no access at all."""
    if not mode or any(c not in "01234567" for c in mode):
        raise where.error("deploy.mode", f"{mode!r} is not an octal mode such as 0640")
    bits = int(mode, 8)
    if bits > 0o777:
        raise where.error("deploy.mode", f"{mode} sets more than the permission bits (0777); use 0640 or 0600")
    if bits & 0o004:
        raise where.error("deploy.mode", f"{mode} lets every user read the private key; use 0640 or 0600")
    if bits & 0o007:
        raise where.error("deploy.mode", f"{mode} gives every user access to the private key; use 0640 or 0600")


def read_secret(path_value: str, key: str, cfg_path: Path) -> str:
    """Read a secret from a file, warning (as certbot does) if others can read it.

    Secrets live in files, never in the config or argv, so that neither `ps`
    nor a world-readable config nor a log line can show them. Every failure
    names the key and the file, and never quotes the file's bytes: a codec
    error would say which byte of the secret failed, and where.
    """
    where = _Where(cfg_path)
    if not path_value:
        raise where.error(key, "required: the path of a file holding the secret")
    p = Path(path_value)
    try:
        st = p.stat()
        data = p.read_bytes()
    except FileNotFoundError:
        raise where.error(key, f"secret file {p} does not exist") from None
    except OSError as e:
        raise where.error(key, f"cannot read secret file {p}: {e.strerror}") from None
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise where.error(key, f"secret file {p} is not UTF-8 text; save it as UTF-8") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and (p, st.st_mode) not in _WARNED:
        _WARNED.add((p, st.st_mode))
        log.warning(
            "secret file %s is accessible by group or others (mode %04o); run: chmod 600 %s",
            p,
            stat.S_IMODE(st.st_mode),
            p,
        )
    if not text:
        raise where.error(key, f"secret file {p} is empty")
    if any(c < " " or c == "\x7f" for c in text):
        # A line break inside would reach an HTTP header or a TSIG key, and the library's
        # error would quote the whole value: refused here, before anything is ordered.
        raise where.error(key, f"secret file {p} holds a line break or another control character; keep it on one line")
    return text


# Secret files already warned about in this run: check_secrets reads each
# before the back end reads it again, and cron mail needs the warning once.
_WARNED: set[tuple[Path, int]] = set()


def secret_files(cfg: Config, staging: bool, dns: bool | None = None) -> list[tuple[str, str]]:
    """(config key, path) of every secret this run will read: the proxy's, the CA's binding, the DNS back end's.

    `dns`: whether the back end is needed; None: if any certificate is
    validated by dns-01 (dns-persist-01 needs no DNS write to issue).
    """
    a = cfg.acme
    found: list[tuple[str, str]] = []
    if a.proxy_password_file:
        found.append(("acme.proxy_password_file", a.proxy_password_file))
    kid, hmac_file, prefix = a.eab(staging)
    if kid:
        found.append((f"{prefix}hmac_key_file", hmac_file))
    if not staging:
        # A fallback CA's binding is read before its CA is asked: a bad one must not wait for an outage to show.
        found += [("acme.fallback.eab_hmac_key_file", f.eab_hmac_key_file) for f in a.fallback if f.eab_kid]
    if dns is None:
        dns = any(not c.persistent(cfg.dns) for c in cfg.certificates)
    if dns:
        d = cfg.dns
        if d.provider == "infoblox":
            found.append(("dns.infoblox.password_file", d.infoblox.password_file))
        elif d.provider == "uddi":
            found.append(("dns.uddi.api_key_file", d.uddi.api_key_file))
        elif d.provider == "rfc2136":
            found.append(("dns.rfc2136.tsig_secret_file", d.rfc2136.tsig_secret_file))
            if d.rfc2136.alias_tsig_secret_file:
                found.append(("dns.rfc2136.alias_tsig_secret_file", d.rfc2136.alias_tsig_secret_file))
    return found


def check_secrets(cfg: Config, staging: bool, dns: bool | None = None) -> None:
    """Read every secret this run will need, before anything is ordered or locked.

    A missing, unreadable, empty or non-UTF-8 secret is then one line naming
    its key and file, instead of a failure halfway through an order (after
    the CA made it, with records published).
    """
    for key, path in secret_files(cfg, staging, dns):
        read_secret(path, key, cfg.path)
