"""Which way each connection goes: through a configured proxy, direct, or as the environment says.

The precedence, for each kind of connection (to the CA; to the Infoblox appliance):

1. its own key (`acme.proxy`, `dns.infoblox.proxy`): a proxy URL, or "direct";
2. for a DNS back end without one: direct when `acme.proxy` is set (the config
   loader fills in "direct"): the internet through the proxy, the internal
   network direct;
3. otherwise the environment, as requests reads it: HTTPS_PROXY (or ALL_PROXY)
   and NO_PROXY.

requests lets environment proxies override a session's `proxies`; only a
per-request `proxies=` beats them, so every request carries `Route.proxies`.
The proxy's password only ever goes into the Proxy-Authorization header of the
CONNECT request, never into a URL, so that no error text or log line holds it.
Whichever adapter `Route.mount` gives a session, it is rgwtls.http's: proxied
requests have their total deadline too.
"""

from __future__ import annotations

import base64
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
from requests.utils import get_environ_proxies, select_proxy

from rgwtls import http
from rgwtls.config import PROXY_DIRECT
from rgwtls.errors import RgwtlsError

ACME_KEY = "acme.proxy"
_TUNNEL = re.compile(r"Tunnel connection failed: (\d{3})\s*([A-Za-z][A-Za-z -]*)?")


@dataclass(frozen=True)
class Route:
    """One kind of connection's way to its server, as decided by `key` or the environment."""

    key: str
    # http://host:port without credentials; empty when the way is direct.
    proxy: str
    from_env: bool = False
    user: str = ""
    password: str = field(default="", repr=False)

    @property
    def proxies(self) -> dict[str, Any] | None:
        """For every request's `proxies=`; None leaves the choice to requests and the environment.

        A None value (which requests takes, though its stubs say str) drops the
        environment's proxy for that scheme: that is how "direct" stays direct.
        """
        if self.from_env:
            return None
        value = self.proxy or None
        return {"http": value, "https": value, "all": value}

    def describe(self) -> str:
        """How the connections go, for a log line: never with the password."""
        if self.from_env:
            how = f"through proxy {self.proxy}" if self.proxy else "direct"
            return f"{how} (as the environment's HTTPS_PROXY and NO_PROXY say; {self.key} is not set)"
        if not self.proxy and self.key == ACME_KEY:
            return f"direct ({self.key}: {PROXY_DIRECT})"
        if not self.proxy:
            return f"direct ({self.key}: {PROXY_DIRECT}, or unset while {ACME_KEY} is set)"
        as_user = f", as user {self.user}" if self.user else ""
        return f"through proxy {self.proxy} ({self.key}{as_user})"

    @property
    def log_level(self) -> int:
        """INFO (shown by -v) when a proxy is in play or the config chose; else DEBUG: -v stays as it was."""
        return logging.INFO if self.proxy or not self.from_env else logging.DEBUG

    def mount(self, session: requests.Session) -> None:
        """Give the session total deadlines, and our proxy credentials, for CONNECT to our proxy only."""
        http.mount(session, _ProxyAuthAdapter(self) if self.proxy and self.user else http.Adapter())


def route(value: str, key: str, target_url: str, password: str = "") -> Route:
    """The way to `target_url` that `value` (the config key `key`, already validated) means."""
    if value == PROXY_DIRECT:
        return Route(key, "")
    if value:
        url = urlsplit(value)
        return Route(key, _bare(value), user=unquote(url.username or ""), password=password)
    # The environment decides; NO_PROXY is honoured here as requests will honour it.
    proxy = select_proxy(target_url, get_environ_proxies(target_url)) or ""
    return Route(key, _bare(proxy) if proxy else "", from_env=True)


def _bare(url: str) -> str:
    """scheme://host:port: a URL without its userinfo, to name the proxy in logs and errors."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


class _ProxyAuthAdapter(http.Adapter):
    def __init__(self, route: Route) -> None:
        self._route = route
        token = base64.b64encode(f"{route.user}:{route.password}".encode()).decode()
        self._auth = f"Basic {token}"
        super().__init__()

    def proxy_headers(self, proxy: Any) -> dict[str, str]:
        headers: dict[str, str] = super().proxy_headers(proxy)
        if _bare(str(proxy)) == self._route.proxy:
            headers["Proxy-Authorization"] = self._auth
        return headers


@dataclass(frozen=True)
class ProxyFailure:
    text: str
    # The proxy refused: it will refuse the next try too.
    final: bool


def failure(rt: Route, e: BaseException, target_url: str) -> ProxyFailure | None:
    """What went wrong at the proxy, naming it and the server; None if the proxy is not to blame."""
    if not rt.proxy or not isinstance(e, requests.exceptions.ProxyError):
        return None
    # The request's own address where requests kept it: an ACME directory may point elsewhere.
    asked = getattr(getattr(e, "request", None), "url", None)
    target = _host_port(asked if isinstance(asked, str) and asked else target_url)
    found = _TUNNEL.search(" ".join(str(x) for x in _chain(e)))
    if found is None:
        return ProxyFailure(f"cannot connect to proxy {rt.proxy} ({rt.key}) for {target}: {root_cause(e)}", final=False)
    code = int(found.group(1))
    answer = f"answered {code} {(found.group(2) or '').strip()}".rstrip()
    if code in (401, 407) and rt.user:
        return ProxyFailure(
            f"proxy {rt.proxy} refused the password of user {rt.user} for CONNECT to {target} ({answer}); "
            f"check {rt.key} and {rt.key}_password_file",
            final=True,
        )
    if code in (401, 407):
        return ProxyFailure(
            f"proxy {rt.proxy} wants a user and password for CONNECT to {target} ({answer}); "
            f"set the user in {rt.key} and the password in {rt.key}_password_file",
            final=True,
        )
    if code == 403:
        return ProxyFailure(
            f"proxy {rt.proxy} refused CONNECT to {target} ({answer}); its rules must allow it", final=True
        )
    return ProxyFailure(f"proxy {rt.proxy} could not connect to {target} (CONNECT {answer})", final=False)


def _chain(e: BaseException) -> list[BaseException]:
    """The error and the ones it wraps, through requests' and urllib3's layers."""
    seen: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and cur not in seen and len(seen) < 20:
        seen.append(cur)
        reason = getattr(cur, "reason", None)
        inner = next((a for a in cur.args if isinstance(a, BaseException)), None)
        cur = reason if isinstance(reason, BaseException) else inner or cur.__cause__
    return seen


def root_cause(e: BaseException) -> str:
    """The innermost error, such as `[Errno 111] Connection refused`."""
    last = _chain(e)[-1]
    return str(last) or type(last).__name__


class NoAnswer(RgwtlsError):
    """A GET that got no answer; its text says why in the words of the caller's line, without the URL."""


def get(url: str, rt: Route, timeout: float, max_bytes: int, verify: str | bool = True) -> requests.Response:
    """One GET along `rt`, whole within `timeout` and its body cut at `max_bytes` (http.TooLarge).

    For what a CA points at (a CRL, a renewal window): the answer is hostile input, so it is
    bounded in time and size, and a redirect is an answer of its own, never followed to a host
    nobody configured. NoAnswer names the proxy that refused, the deadline, or the root cause.
    """
    with requests.Session() as session:
        rt.mount(session)
        for adapter in session.adapters.values():
            if isinstance(adapter, http.Adapter):
                adapter.max_bytes = max_bytes
        try:
            return session.get(url, timeout=timeout, proxies=rt.proxies, verify=verify, allow_redirects=False)
        except http.TooLarge:
            raise
        except requests.RequestException as e:
            refused = failure(rt, e, url)
            late = f"no complete answer within {timeout:.1f}s"
            why = refused.text if refused else (late if isinstance(e, http.TotalTimeout) else root_cause(e))
            raise NoAnswer(why) from None
