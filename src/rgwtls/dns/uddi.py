"""Infoblox Universal DDI back end: the Cloud Services Portal's DDI API, not WAPI.

`https://PORTAL/api/ddi/v1/`, authenticated by `Authorization: Token KEY`.
The zone is the closest `dns/auth_zone` above the record's name (in the
configured view); a record is `POST dns/record` with `type` TXT, its
`name_in_zone`, the zone's id and `rdata.text`, and is deleted by its id.

Each record carries the tag `rgwtls: acme-challenge` (and a comment naming
the host), so that records a crashed run left can be told from records a
person or another tool made at the same name. Lookups match zone, name, type
and text together, never the name alone.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from rgwtls import deadline, http
from rgwtls.config import UddiConfig, read_secret
from rgwtls.dns import Challenge
from rgwtls.errors import DnsError
from rgwtls.scrub import clean

log = logging.getLogger(__name__)
# What the API said, as it reaches a line: cleaned (rgwtls.scrub), and this long at most.
SAID = 300

MARKER = "rgwtls acme-challenge"
TAG = ("rgwtls", "acme-challenge")
_RETRY_STATUS = {429, 500, 502, 503, 504}


class Uddi:
    name = "uddi"

    def __init__(self, cfg: UddiConfig, cfg_path: Path) -> None:
        if not cfg.portal:
            raise DnsError(f"config {cfg_path}: dns.uddi.portal: required (csp.infoblox.com, or your region's)")
        self.cfg = cfg
        self.base = f"https://{cfg.portal}/api/ddi/v1/"
        key = read_secret(cfg.api_key_file, "dns.uddi.api_key_file", cfg_path)
        # dns.uddi.timeout bounds each request whole, not only each read (rgwtls.http).
        self._session = http.session()
        # The key only ever travels in this header: never in a URL, an argument or a log line.
        self._session.headers.update({"Authorization": f"Token {key}", "Accept": "application/json"})
        self._verify: str | bool = cfg.ca_bundle or True
        self._zones: dict[tuple[str, str], tuple[str, str]] = {}  # (record name, view) -> (zone id, zone fqdn)
        self._views: dict[str, str] = {}  # view name -> id
        self._ids: dict[tuple[str, str], str] = {}
        self.comment = f"{MARKER} by {socket.gethostname().split('.')[0]}"

    # -- the interface ---------------------------------------------------------

    def present(self, ch: Challenge) -> None:
        zone_id, fqdn = self._zone(ch)
        body = {
            "type": "TXT",
            "name_in_zone": _name_in_zone(ch.record_name, fqdn),
            "zone": zone_id,
            "rdata": {"text": ch.value},
            "ttl": self.cfg.ttl,
            "inheritance_sources": {"ttl": {"action": "override"}},
            "comment": self.comment,
            "tags": {TAG[0]: TAG[1]},
        }
        what = f"could not create TXT record {ch.record_name} in zone {fqdn}"
        resp = self._call("POST", "dns/record", what, json=body, ok=(200, 201, 409))
        if resp.status_code == 409:
            # The same value exists: a crashed run of ours left it (the CA
            # handed back the same pending authorization), or someone else made it.
            ours = self._find(ch, zone_id, fqdn, ours_only=True)
            if not ours:
                raise DnsError(f"uddi: {what}: a record with this value exists and was not made by rgwtls")
            self._ids[(ch.record_name, ch.value)] = ours[0]
            return
        doc = _parsed(resp, what)
        result = doc.get("result") if isinstance(doc, dict) else None
        rid = result.get("id") if isinstance(result, dict) else None
        if not isinstance(rid, str) or not rid.startswith("dns/record/"):
            # The record may exist all the same: cleanup finds it by zone, name and value.
            raise DnsError(f"uddi: {what}: {_request(resp)} with {_sample(resp)}, not a dns/record")
        self._ids[(ch.record_name, ch.value)] = rid

    def cleanup(self, ch: Challenge) -> None:
        rid = self._ids.pop((ch.record_name, ch.value), None)
        if rid is None:
            zone_id, fqdn = self._zone(ch)
            ids = self._find(ch, zone_id, fqdn, ours_only=True)
        else:
            ids = [rid]
        for r in ids:
            resp = self._call("DELETE", r, f"could not delete TXT record {ch.record_name}", ok=(200, 204, 404))
            if resp.status_code == 404:
                log.debug("uddi: %s was already gone", r)

    # -- the DDI API -----------------------------------------------------------

    def _view_name(self, ch: Challenge) -> str:
        return (self.cfg.alias_view or self.cfg.view) if ch.delegated else self.cfg.view

    def _view_id(self, name: str) -> str:
        if name not in self._views:
            what = f"could not find DNS view {name}"
            found = self._list("dns/view", what, {"_filter": f"name=='{_quoted(name)}'", "_fields": "id,name"})
            ids = [str(v["id"]) for v in found if v.get("name") == name and isinstance(v.get("id"), str)]
            if not ids:
                raise DnsError(f"uddi: {what}: no view of that name; check dns.uddi.view")
            self._views[name] = ids[0]
        return self._views[name]

    def _zone(self, ch: Challenge) -> tuple[str, str]:
        """(id, fqdn) of the closest authoritative zone above the record's name, in the configured view."""
        view = self._view_name(ch)
        key = (ch.record_name, view)
        if key in self._zones:
            return self._zones[key]
        view_id = self._view_id(view) if view else ""
        labels = ch.record_name.rstrip(".").split(".")
        for i in range(len(labels) - 1):
            fqdn = ".".join(labels[i:]) + "."
            what = f"could not look up zone {fqdn}"
            found = self._list(
                "dns/auth_zone", what, {"_filter": f"fqdn eq '{_quoted(fqdn)}'", "_fields": "id,fqdn,view"}
            )
            zones = [z for z in found if z.get("fqdn") == fqdn and isinstance(z.get("id"), str)]
            if view_id:
                zones = [z for z in zones if z.get("view") == view_id]
            if len(zones) > 1:
                raise DnsError(
                    f"uddi: zone {fqdn} is in {len(zones)} views; set dns.uddi.view"
                    + (" (or alias_view)" if ch.delegated else "")
                    + " to the one the CA's answers come from"
                )
            if zones:
                self._zones[key] = (str(zones[0]["id"]), fqdn)
                return self._zones[key]
        where = f" in view {view}" if view else ""
        raise DnsError(f"uddi: no authoritative zone{where} holds {ch.record_name}; create it, or fix dns.uddi.view")

    def _find(self, ch: Challenge, zone_id: str, fqdn: str, ours_only: bool) -> list[str]:
        name = _name_in_zone(ch.record_name, fqdn)
        what = f"could not search TXT records at {ch.record_name}"
        flt = f"type=='TXT' and zone=='{_quoted(zone_id)}' and name_in_zone=='{_quoted(name)}'"
        found = self._list("dns/record", what, {"_filter": flt})
        out = []
        for r in found:
            rdata = r.get("rdata")
            tags = r.get("tags")
            if not (isinstance(rdata, dict) and rdata.get("text") == ch.value and isinstance(r.get("id"), str)):
                continue
            if r.get("zone") != zone_id or r.get("name_in_zone") != name:
                continue
            if ours_only and not (isinstance(tags, dict) and tags.get(TAG[0]) == TAG[1]):
                continue
            out.append(str(r["id"]))
        return out

    def _list(self, path: str, what: str, params: dict[str, str]) -> list[dict[str, Any]]:
        resp = self._call("GET", path, what, params=params)
        doc = _parsed(resp, what)
        results = doc.get("results") if isinstance(doc, dict) else None
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            raise DnsError(f"uddi: {what}: {_request(resp)} with {_sample(resp)}, not a list of results")
        return results

    def _call(self, method: str, path: str, what: str, ok: tuple[int, ...] = (200,), **kw: Any) -> requests.Response:
        """One request, retried on 429 (after its Retry-After), 5xx and network errors, with backoff."""
        url = self.base + path
        attempts = max(1, self.cfg.retries)
        problem = ""
        for attempt in range(1, attempts + 1):
            wait = min(8.0, 0.5 * 2 ** (attempt - 1))
            try:
                resp = self._session.request(method, url, timeout=self.cfg.timeout, verify=self._verify, **kw)
            except requests.exceptions.SSLError as e:
                raise DnsError(
                    f"uddi: {what}: TLS verification of {self.cfg.portal} failed ({_root_cause(e)}); "
                    "set dns.uddi.ca_bundle to the CA of its certificate"
                ) from None
            except http.TotalTimeout as e:
                problem = f"{method} {path}: {e}"
            except requests.Timeout:
                problem = f"{method} {path}: no answer from {self.cfg.portal} within {self.cfg.timeout:g}s"
            except requests.ConnectionError as e:
                problem = f"{method} {path}: cannot connect to {self.cfg.portal}: {_root_cause(e)}"
            except requests.RequestException as e:
                problem = f"{method} {path} failed: {type(e).__name__}: {_root_cause(e)}"
            else:
                if resp.status_code in ok:
                    return resp
                if resp.status_code == 401:
                    raise DnsError(
                        f"uddi: {what}: {_request(resp)}: the API key was refused by {self.cfg.portal}; "
                        "check dns.uddi.api_key_file (a key of a user or service account with DNS rights)"
                    )
                if resp.status_code not in _RETRY_STATUS:
                    raise DnsError(f"uddi: {what}: {_describe(resp)}")
                problem = _describe(resp)
                if resp.status_code == 429:
                    asked = _retry_after(resp)
                    if asked is not None and asked > self.cfg.max_retry_after:
                        raise DnsError(
                            f"uddi: {what}: {problem}, retry after {asked:g}s, longer than "
                            f"dns.uddi.max_retry_after ({self.cfg.max_retry_after:g}s)"
                        )
                    wait = asked if asked is not None else wait
            if deadline.stopping():
                raise DnsError(f"uddi: {what}: {problem} (not retried: the run is stopping)")
            if attempt < attempts:
                log.info("uddi: %s (attempt %d of %d), retrying in %.1fs", problem, attempt, attempts, wait)
                time.sleep(wait)
        raise DnsError(f"uddi: {what}: {problem} (after {attempts} attempts)")


def _name_in_zone(record_name: str, fqdn: str) -> str:
    name = record_name.rstrip(".")
    zone = fqdn.rstrip(".")
    return "" if name == zone else name.removesuffix("." + zone)


def _quoted(value: str) -> str:
    """A value inside the filter's single quotes: ACME values and names never hold one, but a config might."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _retry_after(resp: requests.Response) -> float | None:
    """Retry-After in seconds (RFC 9110 allows a date too; the API sends seconds), None if absent or unreadable."""
    value = resp.headers.get("Retry-After", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds)


def _parsed(resp: requests.Response, what: str) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise DnsError(f"uddi: {what}: {_request(resp)} with something that is not JSON ({_sample(resp)})") from None


def _request(resp: requests.Response) -> str:
    """`POST dns/record answered 201`: what was asked, and the status that came back."""
    method = resp.request.method if resp.request is not None else "?"
    path = urlsplit(resp.url).path.split("/api/ddi/v1/", 1)[-1] or resp.url
    return f"{method} {path} answered {resp.status_code}"


def _sample(resp: requests.Response) -> str:
    kind = resp.headers.get("Content-Type", "no content type").split(";")[0]
    text = " ".join(resp.text[:80].split())
    return clean(f"{kind}, {len(resp.content)} bytes: {text!r}" if text else f"{kind}, empty", SAID)


def _describe(resp: requests.Response) -> str:
    """The request, its status, and the API's own message (`{"error": [{"message": ...}]}`) if it gave one."""
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    messages: list[str] = []
    if isinstance(doc, dict) and isinstance(doc.get("error"), list):
        messages = [str(e.get("message", "")).strip() for e in doc["error"] if isinstance(e, dict)]
    said = "; ".join(m for m in messages if m)
    return clean(f"{_request(resp)} {resp.reason}" + (f": {said}" if said else ""), SAID)


def _root_cause(e: BaseException) -> str:
    while isinstance(e.__context__, OSError | ValueError) and not isinstance(e.__context__, DnsError):
        e = e.__context__
    return str(e) or type(e).__name__
