"""What every section's validator stands on: typed values out of TOML, bounded numbers, one-line errors.

The loader walks the dataclass fields, so an unknown key, a wrong type or a
missing value is reported with the key's full name and the file, as one line,
for every section alike, and for keys added later without a line of their own.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from rgwtls.errors import ConfigError


class Where:
    """The file being read, so that every error names it beside the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"config {self.path}: {key}: {problem}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str, where: Where) -> Any:
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
        return build(tp, value, where, key)
    raise where.error(key, f"must be {_type_name(tp)}, got {type(value).__name__}")


T = typing.TypeVar("T")


def build(cls: type[T], raw: Any, where: Where, prefix: str) -> T:
    """A section's dataclass from its TOML table: every key known, typed and bounded, every required one there.

    The field types are resolved in the section's own module, so a section
    holding tables of its own (dns.infoblox) imports their classes there.
    """
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


def _check_number(name: str, value: Any, key: str, where: Where) -> None:
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


def is_profile_name(name: str) -> bool:
    """A CA's certificate profile name, as acme.profile and a [[certificate]]'s profile take it."""
    return bool(name) and all(c.isalnum() or c in "-_." for c in name)


PROXY_DIRECT = "direct"


def proxy_user(value: str) -> str:
    """The user of a proxy URL, unquoted; empty if it has none (or is not a URL)."""
    if value == PROXY_DIRECT:
        return ""
    return unquote(urlsplit(value).username or "")


def check_proxy(value: str, key: str, where: Where, user_allowed: bool) -> None:
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
