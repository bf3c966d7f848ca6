"""The TOML configuration, validated on load.

Every section is a frozen dataclass; the loader walks the dataclass fields, so
an unknown key, a wrong type or a missing value is reported with the key's
full name and the file, as one line. Secrets are never values in this file:
only paths to files readable by their owner (see `read_secret`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rgwtls.config.acme import KEY_TYPES as KEY_TYPES
from rgwtls.config.acme import LETSENCRYPT as LETSENCRYPT
from rgwtls.config.acme import LETSENCRYPT_STAGING as LETSENCRYPT_STAGING
from rgwtls.config.acme import AcmeConfig as AcmeConfig
from rgwtls.config.acme import validate_acme
from rgwtls.config.ceph import CephConfig as CephConfig
from rgwtls.config.ceph import validate_ceph
from rgwtls.config.certificate import MAX_NAME_BYTES as MAX_NAME_BYTES
from rgwtls.config.certificate import CertificateConfig as CertificateConfig
from rgwtls.config.certificate import name_problem as name_problem
from rgwtls.config.certificate import validate_certificates
from rgwtls.config.check import CheckConfig as CheckConfig
from rgwtls.config.check import Threshold as Threshold
from rgwtls.config.check import validate_check
from rgwtls.config.deploy import DeployConfig as DeployConfig
from rgwtls.config.deploy import validate_deploy
from rgwtls.config.dns import CHALLENGES as CHALLENGES
from rgwtls.config.dns import PERSIST as PERSIST
from rgwtls.config.dns import DnsConfig as DnsConfig
from rgwtls.config.dns import validate_dns
from rgwtls.config.fallback import FallbackCa as FallbackCa
from rgwtls.config.hook import HookConfig as HookConfig
from rgwtls.config.infoblox import InfobloxConfig as InfobloxConfig
from rgwtls.config.rfc2136 import Rfc2136Config as Rfc2136Config
from rgwtls.config.uddi import UddiConfig as UddiConfig
from rgwtls.config.values import PROXY_DIRECT as PROXY_DIRECT
from rgwtls.config.values import Where, build
from rgwtls.config.values import proxy_user as proxy_user
from rgwtls.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PATH = Path("/etc/rgwtls/rgwtls.toml")


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
    where = Where(path)
    known = {"acme", "ceph", "dns", "deploy", "check", "certificate"}
    for key in raw:
        if key not in known:
            raise where.error(key, "unknown section or key")
    certs_raw = raw.get("certificate", [])
    if not isinstance(certs_raw, list) or not certs_raw:
        raise where.error("certificate", "at least one [[certificate]] table is required")
    cfg = Config(
        path=path,
        acme=build(AcmeConfig, raw.get("acme", {}), where, "acme"),
        ceph=build(CephConfig, raw.get("ceph", {}), where, "ceph"),
        dns=build(DnsConfig, raw.get("dns", {}), where, "dns"),
        deploy=build(DeployConfig, raw.get("deploy", {}), where, "deploy"),
        check=build(CheckConfig, raw.get("check", {}), where, "check"),
        certificates=tuple(build(CertificateConfig, c, where, f"certificate[{i}]") for i, c in enumerate(certs_raw)),
    )
    _check(cfg, where)
    if cfg.acme.proxy and not cfg.dns.infoblox.proxy:
        # The site named its way to the internet; the appliance is internal.
        infoblox = dataclasses.replace(cfg.dns.infoblox, proxy=PROXY_DIRECT)
        cfg = dataclasses.replace(cfg, dns=dataclasses.replace(cfg.dns, infoblox=infoblox))
    return cfg


def _check(cfg: Config, where: Where) -> None:
    """Cross-field checks the types cannot express."""
    validate_acme(cfg.acme, where)
    validate_dns(cfg.dns, where)
    validate_check(cfg.check, where)
    validate_ceph(cfg.ceph, where)
    validate_deploy(cfg.deploy, {c.name for c in cfg.certificates}, where)
    validate_certificates(cfg.certificates, cfg.dns, where)


def read_secret(path_value: str, key: str, cfg_path: Path) -> str:
    """Read a secret from a file, warning (as certbot does) if others can read it.

    Secrets live in files, never in the config or argv, so that neither `ps`
    nor a world-readable config nor a log line can show them. Every failure
    names the key and the file, and never quotes the file's bytes: a codec
    error would say which byte of the secret failed, and where.
    """
    where = Where(cfg_path)
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
