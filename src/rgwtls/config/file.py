"""The whole TOML file: read safely, each section built and validated in turn, into one frozen Config.

Every section is a frozen dataclass in a module named after it; the loader
walks the dataclass fields (config/values.py), so an unknown key, a wrong type
or a missing value is reported with the key's full name and the file, as one
line. Then each section's validator checks what the types cannot say.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rgwtls.config.acme import AcmeConfig, validate_acme, validate_persist_issuer
from rgwtls.config.ceph import CephConfig, validate_ceph
from rgwtls.config.certificate import CertificateConfig, validate_certificates
from rgwtls.config.check import CheckConfig, validate_check
from rgwtls.config.deploy import DeployConfig, validate_deploy
from rgwtls.config.dns import DnsConfig, validate_dns
from rgwtls.config.values import PROXY_DIRECT, Where, build
from rgwtls.errors import ConfigError

DEFAULT_PATH = Path("/etc/rgwtls/rgwtls.toml")
SECTIONS = ("acme", "ceph", "dns", "deploy", "check", "certificate")


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
    """Every section built first, so a wrong type anywhere is found before a value that does not fit another."""
    where = Where(path)
    for key in raw:
        if key not in SECTIONS:
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
    validate_acme(cfg.acme, where)
    validate_dns(cfg.dns, where)
    validate_persist_issuer(cfg.acme, where)
    validate_check(cfg.check, where)
    validate_ceph(cfg.ceph, where)
    validate_deploy(cfg.deploy, {c.name for c in cfg.certificates}, where)
    validate_certificates(cfg.certificates, cfg.dns, where)
    if cfg.acme.proxy and not cfg.dns.infoblox.proxy:
        # The site named its way to the internet; the appliance is internal.
        infoblox = dataclasses.replace(cfg.dns.infoblox, proxy=PROXY_DIRECT)
        cfg = dataclasses.replace(cfg, dns=dataclasses.replace(cfg.dns, infoblox=infoblox))
    return cfg
