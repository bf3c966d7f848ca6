"""Infoblox WAPI back end: TXT records created and deleted by their `_ref`.

Each record carries a comment marking it as ours, so that records left by a
crashed run can be told from records a person or another tool made at the
same name. Lookups always match name, text and view together: the
`infoblox-client` package matched by name and view only, and so handed back
the apex's record for the wildcard's value.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests

from rgwtls import deadline, http
from rgwtls.config import InfobloxConfig, read_secret
from rgwtls.dns import Challenge
from rgwtls.errors import DnsError
from rgwtls.proxy import failure, route
from rgwtls.scrub import clean

log = logging.getLogger(__name__)
# What the API said, as it reaches a line: cleaned (rgwtls.scrub), and this long at most.
SAID = 300

MARKER = "rgwtls acme-challenge"
_RETRY_STATUS = {502, 503, 504}


class Infoblox:
    name = "infoblox"

    def __init__(self, cfg: InfobloxConfig, cfg_path: Path) -> None:
        if not cfg.server:
            raise DnsError(f"config {cfg_path}: dns.infoblox.server: required (the grid master's host name)")
        if not cfg.username:
            raise DnsError(f"config {cfg_path}: dns.infoblox.username: required")
        self.cfg = cfg
        self.base = f"https://{cfg.server}/wapi/v{cfg.wapi_version}/"
        self._password = read_secret(cfg.password_file, "dns.infoblox.password_file", cfg_path)
        # dns.infoblox.timeout bounds each request whole, not only each read (rgwtls.http).
        self._session = http.session()
        # Passed with every request: requests lets $REQUESTS_CA_BUNDLE override
        # a session-wide `verify`, which would silently drop our CA bundle.
        self._verify: str | bool = (cfg.ca_bundle or True) if cfg.verify_tls else False
        self._session.headers["Accept"] = "application/json"
        # Internal: direct unless dns.infoblox.proxy says otherwise (see rgwtls.proxy).
        self._route = route(cfg.proxy, "dns.infoblox.proxy", self.base)
        log.log(self._route.log_level, "infoblox: WAPI requests to %s go %s", cfg.server, self._route.describe())
        self._refs: dict[tuple[str, str], str] = {}
        self.comment = f"{MARKER} by {socket.gethostname().split('.')[0]}"

    # -- the interface ---------------------------------------------------------

    def present(self, ch: Challenge) -> None:
        view = self._view(ch)
        body = {
            "name": ch.record_name,
            "text": ch.value,
            "view": view,
            "ttl": self.cfg.ttl,
            "use_ttl": True,
            "comment": self.comment,
        }
        what = f"could not create TXT record {ch.record_name} in view {view}"
        resp = self._call("POST", "record:txt", what, json=body, ok=(201, 400))
        if resp.status_code == 201:
            ref = _parsed(resp, what)
            if not isinstance(ref, str) or not ref.startswith("record:txt/"):
                # The record may exist all the same: cleanup finds it by name and value.
                raise DnsError(f"infoblox: {what}: {_request(resp)} with {_sample(resp)}, not a record:txt reference")
            self._refs[(ch.record_name, ch.value)] = ref
            return
        err = _wapi_error(resp)
        # The appliance answers "A parent was not found" (no such zone in the
        # view) with the same code as a duplicate; only the text tells them apart.
        if err.get("code") != "Client.Ibap.Data.Conflict" or "already exists" not in str(err.get("text")):
            raise DnsError(f"infoblox: {what}: {_describe(resp)}")
        # The same value exists: a crashed run of ours left it (the CA handed
        # back the same pending authorization), or someone else made it.
        ours = self._find(ch, ours_only=True)
        if not ours:
            raise DnsError(f"infoblox: {what}: a record with this value exists and was not made by rgwtls")
        self._refs[(ch.record_name, ch.value)] = ours[0]

    def cleanup(self, ch: Challenge) -> None:
        ref = self._refs.pop((ch.record_name, ch.value), None)
        refs = [ref] if ref else self._find(ch, ours_only=True)
        for r in refs:
            what = f"could not delete TXT record {ch.record_name}"
            resp = self._call("DELETE", r, what, ok=(200, 404))
            if resp.status_code == 404:
                log.debug("infoblox: %s was already gone", r)

    def _view(self, ch: Challenge) -> str:
        """A delegated challenge goes to the view of the target zone."""
        return (self.cfg.alias_view or self.cfg.view) if ch.delegated else self.cfg.view

    # -- WAPI ------------------------------------------------------------------

    def _find(self, ch: Challenge, ours_only: bool) -> list[str]:
        params = {
            "name": ch.record_name,
            "text": ch.value,
            "view": self._view(ch),
            "_return_fields": "name,text,view,comment",
        }
        what = f"could not search TXT records at {ch.record_name}"
        resp = self._call("GET", "record:txt", what, params=params)
        found = _parsed(resp, what)
        if not isinstance(found, list) or not all(
            isinstance(r, dict) and isinstance(r.get("_ref"), str) for r in found
        ):
            raise DnsError(f"infoblox: {what}: {_request(resp)} with {_sample(resp)}, not a list of records")
        return [
            str(r["_ref"])
            for r in found
            if r.get("name") == ch.record_name
            and r.get("text") == ch.value
            and (not ours_only or str(r.get("comment", "")).startswith(MARKER))
        ]

    def _call(self, method: str, path: str, what: str, ok: tuple[int, ...] = (200,), **kw: Any) -> requests.Response:
        """One WAPI request, with the session cookie, retried on 5xx and network errors."""
        url = self.base + path
        attempts = max(1, self.cfg.retries)
        for attempt in range(1, attempts + 1):
            # Basic auth only until the appliance handed us its ibapauth cookie:
            # every Basic login costs the grid master a password check.
            auth = None if "ibapauth" in self._session.cookies else (self.cfg.username, self._password)
            try:
                resp = self._session.request(
                    method,
                    url,
                    auth=auth,
                    timeout=self.cfg.timeout,
                    verify=self._verify,
                    proxies=self._route.proxies,
                    **kw,
                )
            except requests.exceptions.SSLError as e:
                raise DnsError(
                    f"infoblox: {what}: TLS verification of {self.cfg.server} failed "
                    f"({_root_cause(e)}); set dns.infoblox.ca_bundle to the CA of its certificate"
                ) from None
            except http.TotalTimeout as e:
                problem = str(e)
            except requests.Timeout:
                problem = f"no answer from {url} within {self.cfg.timeout:g}s"
            except requests.ConnectionError as e:
                refused = failure(self._route, e, url)
                if refused is not None and refused.final:
                    raise DnsError(f"infoblox: {what}: {refused.text}") from None
                problem = f"cannot connect to {url}: {_root_cause(e)}" if refused is None else refused.text
            except requests.RequestException as e:
                # A broken answer (bad chunking, bad encoding, redirect loop): worth another try.
                problem = f"{method} {path} failed: {type(e).__name__}: {_root_cause(e)}"
            else:
                if resp.status_code == 401 and auth is None:
                    # The cookie expired: log in again, at once.
                    self._session.cookies.clear()
                    continue
                if resp.status_code == 401:
                    raise DnsError(
                        f"infoblox: {what}: authentication failed for user {self.cfg.username} "
                        f"at {self.cfg.server} (HTTP 401); check dns.infoblox.username and password_file"
                    )
                if resp.status_code in ok:
                    return resp
                if resp.status_code not in _RETRY_STATUS:
                    raise DnsError(f"infoblox: {what}: {_describe(resp)}")
                problem = _describe(resp)
            if deadline.stopping():
                raise DnsError(f"infoblox: {what}: {problem} (not retried: the run is stopping)")
            if attempt < attempts:
                log.info("infoblox: %s (attempt %d of %d), retrying", problem, attempt, attempts)
                time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
        raise DnsError(f"infoblox: {what}: {problem} (after {attempts} attempts)")


def _parsed(resp: requests.Response, what: str) -> Any:
    """The answer's JSON; a DnsError naming the request and status if it is not JSON (an HTML page, a cut-off body)."""
    try:
        return resp.json()
    except ValueError:
        raise DnsError(
            f"infoblox: {what}: {_request(resp)} with something that is not JSON ({_sample(resp)})"
        ) from None


def _request(resp: requests.Response) -> str:
    """`POST record:txt answered 201`: what was asked, and the status that came back."""
    method = resp.request.method if resp.request is not None else "?"
    path = urlsplit(resp.url).path.split("/wapi/", 1)[-1].split("/", 1)[-1] or resp.url
    return f"{method} {unquote(path)} answered {resp.status_code}"


def _sample(resp: requests.Response) -> str:
    """The start of the answer, on one line, to tell an HTML error page from a cut-off body."""
    kind = resp.headers.get("Content-Type", "no content type").split(";")[0]
    text = " ".join(resp.text[:80].split())
    return clean(f"{kind}, {len(resp.content)} bytes: {text!r}" if text else f"{kind}, empty", SAID)


def _wapi_error(resp: requests.Response) -> dict[str, Any]:
    try:
        doc = resp.json()
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _describe(resp: requests.Response) -> str:
    """WAPI's own words: its `text` and `code`, else the HTTP status line."""
    err = _wapi_error(resp)
    if err.get("text") or err.get("code"):
        said = f"{str(err.get('text', '')).strip()} ({err.get('code', 'no code')}, HTTP {resp.status_code})"
        return clean(said, SAID)
    return clean(f"HTTP {resp.status_code} {resp.reason}", SAID)


def _root_cause(e: BaseException) -> str:
    """The innermost network error under requests' and urllib3's wrappers.

    Only the network layers are walked: past them lies whatever error was
    being handled when this one happened, such as the one a cleanup follows.
    """
    while isinstance(e.__context__, OSError | ValueError) and not isinstance(e.__context__, DnsError):
        e = e.__context__
    return str(e) or type(e).__name__
