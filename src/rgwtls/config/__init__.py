"""The TOML configuration, validated on load: one module per section, and the whole file.

A newcomer finds each section's file by its name: config/acme.py is [acme]
(its [[acme.fallback]] CAs in fallback.py), dns.py is [dns] with one module
per back end's table (infoblox, uddi, rfc2136, hook), then ceph, deploy,
check and certificate. config/values.py is what they all stand on (types,
bounds, the one-line error); config/file.py reads the file and lists the
sections in order; config/secrets.py reads the files secrets live in: never
values in the config, only paths to files readable by their owner.

Everything the rest of rgwtls imports is named here, so `from rgwtls.config
import X` keeps working wherever X lives.
"""

from __future__ import annotations

from rgwtls.config.acme import KEY_TYPES, LETSENCRYPT, LETSENCRYPT_STAGING, AcmeConfig
from rgwtls.config.ceph import CephConfig
from rgwtls.config.certificate import MAX_NAME_BYTES, CertificateConfig, name_problem
from rgwtls.config.check import CheckConfig, Threshold
from rgwtls.config.deploy import DeployConfig
from rgwtls.config.dns import CHALLENGES, PERSIST, DnsConfig
from rgwtls.config.fallback import FallbackCa
from rgwtls.config.file import DEFAULT_PATH, Config, config_path, load, parse
from rgwtls.config.hook import HookConfig
from rgwtls.config.infoblox import InfobloxConfig
from rgwtls.config.rfc2136 import Rfc2136Config
from rgwtls.config.secrets import check_secrets, read_secret, secret_files
from rgwtls.config.uddi import UddiConfig
from rgwtls.config.values import INT_BOUNDS, MAX_SECONDS, POSITIVE, PROXY_DIRECT, proxy_user

__all__ = [
    "CHALLENGES",
    "DEFAULT_PATH",
    "INT_BOUNDS",
    "KEY_TYPES",
    "LETSENCRYPT",
    "LETSENCRYPT_STAGING",
    "MAX_NAME_BYTES",
    "MAX_SECONDS",
    "PERSIST",
    "POSITIVE",
    "PROXY_DIRECT",
    "AcmeConfig",
    "CephConfig",
    "CertificateConfig",
    "CheckConfig",
    "Config",
    "DeployConfig",
    "DnsConfig",
    "FallbackCa",
    "HookConfig",
    "InfobloxConfig",
    "Rfc2136Config",
    "Threshold",
    "UddiConfig",
    "check_secrets",
    "config_path",
    "load",
    "name_problem",
    "parse",
    "proxy_user",
    "read_secret",
    "secret_files",
]
