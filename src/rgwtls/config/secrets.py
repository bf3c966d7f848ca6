"""The secrets a run reads (passwords, keys, the CA's binding): always from a file, never from the config itself.

Secrets live in files readable by their owner, never in the config or argv,
so that neither `ps` nor a world-readable config nor a log line can show them.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from rgwtls.config.file import Config
from rgwtls.config.values import Where

# The name the log format shows: a warning about a secret reads as it always has.
log = logging.getLogger("rgwtls.config")


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
