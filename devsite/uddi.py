"""An Infoblox Universal DDI emulator (the DDI API's views, auth zones and TXT records) that writes into the real BIND.

Universal DDI is a cloud service and cannot run here; this is the second
and only other stand-in of the test stack, beside the WAPI emulator. It
follows the public API as documented for `https://csp.infoblox.com/api/ddi/v1`:

- Authentication: `Authorization: Token <API key>`; anything else is 401 with
  a JSON `{"error": [{"message": ...}]}`, like every error answer.
- Objects have ids of the form `dns/view/<uuid>`, `dns/auth_zone/<uuid>`,
  `dns/record/<uuid>`; the object is `GET`/`DELETE` at `/api/ddi/v1/<id>`.
- Lists: `GET dns/view|dns/auth_zone|dns/record` answer `{"results": [...]}`,
  narrowed by `_filter` (clauses `field == 'v'`, `field eq 'v'`, `!=`/`ne`,
  joined by `and`; quotes ' or "), `_tfilter` (tags, the same grammar) and
  `_fields` (a comma list; `id` is always there).
- Zones are named by `fqdn` with its trailing dot; a zone of the same name may
  exist in several views. A record names its `zone` by id and its
  `name_in_zone` relative to it ("" for the apex), `rdata.text` for TXT, and
  `absolute_name_spec` is filled in.
- `POST dns/record` answers 201 `{"result": <record>}`; the same type, name
  and text again is 409; a zone id that does not exist is 404.
  `DELETE dns/record/<uuid>` answers 200 `{}`, and 404 once it is gone.

Only zones in `dns_view` ("default") are served by the BIND: records in
another view are kept here and never reach DNS.

A request that matches a `fail()` gets its failure before authentication (as
from the gateway in front): 429 carries `Retry-After`. `slow()` delays the
answer *after* the work is done: a client that times out has still created or
deleted the record.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from devsite.bind import Bind
from devsite.https import HttpsService, ServiceHandler
from devsite.tlsca import TestCA

log = logging.getLogger(__name__)

BASE = "/api/ddi/v1/"
_CLAUSE = re.compile(r"""\s*([a-z_.]+)\s*(==|!=|eq\b|ne\b)\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\s*""")
_FILTERABLE = {
    "dns/view": {"id", "name"},
    "dns/auth_zone": {"id", "fqdn", "view"},
    "dns/record": {"id", "type", "zone", "view", "name_in_zone", "absolute_name_spec", "comment"},
}
_RECORD_WRITABLE = {
    "type",
    "name_in_zone",
    "zone",
    "rdata",
    "ttl",
    "comment",
    "tags",
    "inheritance_sources",
    "disabled",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": [{"message": message}]}


@dataclass
class _Zone:
    id: str
    fqdn: str  # with its trailing dot
    view: str  # the view's id

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "fqdn": self.fqdn, "view": self.view, "primary_type": "cloud"}


@dataclass
class _Record:
    id: str
    zone: _Zone
    name_in_zone: str
    text: str
    ttl: int | None
    comment: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def absolute_name(self) -> str:
        return f"{self.name_in_zone}.{self.zone.fqdn}" if self.name_in_zone else self.zone.fqdn

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "TXT",
            "name_in_zone": self.name_in_zone,
            "zone": self.zone.id,
            "view": self.zone.view,
            "absolute_name_spec": self.absolute_name,
            "absolute_zone_name": self.zone.fqdn,
            "rdata": {"text": self.text},
            "dns_rdata": json.dumps(self.text),
            "ttl": self.ttl,
            "comment": self.comment,
            "tags": dict(self.tags),
        }


class UddiEmulator(HttpsService):
    """The emulator's state and steering; its HTTPS server runs in a thread."""

    name = "UDDI emulator"

    def __init__(
        self, workdir: Path, bind: Bind, api_key: str | None = None, views: tuple[str, ...] = ("default", "external")
    ) -> None:
        super().__init__()
        self.workdir = workdir
        self.bind = bind
        self.api_key = api_key if api_key is not None else secrets.token_urlsafe(32)
        self.dns_view = "default"
        self.views: dict[str, str] = {name: f"dns/view/{uuid.uuid4()}" for name in views}
        self._zones: list[_Zone] = [
            _Zone(f"dns/auth_zone/{uuid.uuid4()}", f"{z}.", self.views[self.dns_view]) for z in bind.zones
        ]
        self._first_zones = list(self._zones)
        self._records: dict[str, _Record] = {}
        ca = TestCA(workdir / "ca")
        self.ca_bundle: Path = ca.ca_pem
        self._cert, self._key = ca.issue("uddi")

    # -- what tests read -----------------------------------------------------------

    @property
    def portal(self) -> str:
        """host:port, as a client's `portal` setting names the service."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.portal}{BASE}"

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.as_dict() for r in self._records.values()]

    def zone_id(self, fqdn: str, view: str = "default") -> str:
        with self._lock:
            return next(z.id for z in self._zones if z.fqdn == fqdn.rstrip(".") + "." and z.view == self.views[view])

    # -- steering ----------------------------------------------------------------

    def add_zone(self, fqdn: str, view: str) -> str:
        """Another auth zone, e.g. the same name in a second view (never served by BIND unless in dns_view)."""
        with self._lock:
            zone = _Zone(f"dns/auth_zone/{uuid.uuid4()}", fqdn.rstrip(".") + ".", self.views[view])
            self._zones.append(zone)
            return zone.id

    def add_record(self, name: str, text: str, tags: dict[str, str] | None = None, comment: str = "") -> str:
        """Plant a TXT record as a crashed run or a person would leave it; in BIND too."""
        with self._lock:
            zone = self._zone_of(name)
            rel = name.rstrip(".") + "."
            rel = rel.removesuffix(zone.fqdn).rstrip(".")
            return self._create(zone, rel, text, 60, comment, tags or {}).id

    def reset(self) -> None:
        """A fresh tenant for the next test: no records (none in BIND either), the first zones, no failure or delay."""
        self._clear_steering()
        with self._lock:
            for rid in list(self._records):
                self._delete(rid)
            self._zones = list(self._first_zones)

    # -- the object model ------------------------------------------------------------

    def _zone_of(self, name: str) -> _Zone:
        owner = name.rstrip(".") + "."
        best = [z for z in self._zones if z.view == self.views[self.dns_view] and ("." + owner).endswith("." + z.fqdn)]
        if not best:
            raise KeyError(name)
        return max(best, key=lambda z: len(z.fqdn))

    def _create(
        self, zone: _Zone, name_in_zone: str, text: str, ttl: int | None, comment: str, tags: dict[str, str]
    ) -> _Record:
        for r in self._records.values():
            if r.zone.id == zone.id and r.name_in_zone == name_in_zone and r.text == text:
                raise ApiError(409, f"TXT record {r.absolute_name} with this text already exists")
        rec = _Record(f"dns/record/{uuid.uuid4()}", zone, name_in_zone, text, ttl, comment, tags)
        if zone.view == self.views[self.dns_view]:
            self.bind.add_txt(rec.absolute_name, text, ttl if ttl is not None else 5)
        self._records[rec.id] = rec
        return rec

    def _delete(self, rid: str) -> None:
        rec = self._records.get(rid)
        if rec is None:
            raise ApiError(404, f"record {rid} not found")
        if rec.zone.view == self.views[self.dns_view]:
            self.bind.delete_txt(rec.absolute_name, rec.text)
        del self._records[rid]

    def _post_record(self, body: Any) -> _Record:
        if not isinstance(body, dict):
            raise ApiError(400, "invalid request body: a JSON object expected")
        unknown = sorted(set(body) - _RECORD_WRITABLE)
        if unknown:
            raise ApiError(400, f"unknown field: {unknown[0]}")
        if body.get("type") != "TXT":
            raise ApiError(400, f"record type {body.get('type')!r} is not supported by the emulator (TXT only)")
        zone_id, name, rdata = body.get("zone"), body.get("name_in_zone", ""), body.get("rdata")
        if not isinstance(name, str) or not isinstance(zone_id, str):
            raise ApiError(400, "zone and name_in_zone must be strings")
        if not isinstance(rdata, dict) or not isinstance(rdata.get("text"), str):
            raise ApiError(400, "rdata.text is required for a TXT record")
        ttl, comment, tags = body.get("ttl"), body.get("comment", ""), body.get("tags", {})
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl < 2**31):
            raise ApiError(400, f"invalid ttl: {ttl!r}")
        if not isinstance(comment, str) or not isinstance(tags, dict):
            raise ApiError(400, "comment must be a string and tags an object")
        zone = next((z for z in self._zones if z.id == zone_id), None)
        if zone is None:
            raise ApiError(404, f"zone {zone_id} not found")
        return self._create(
            zone, name.rstrip("."), rdata["text"], ttl, comment, {str(k): str(v) for k, v in tags.items()}
        )

    @staticmethod
    def _filter(expr: str) -> list[tuple[str, bool, str]]:
        """`a == 'x' and b ne "y"` as [(field, equal, value)]; a 400 for anything else."""
        out: list[tuple[str, bool, str]] = []
        for part in re.split(r"\s+and\s+", expr.strip()) if expr.strip() else []:
            m = _CLAUSE.fullmatch(part)
            if not m:
                raise ApiError(400, f"invalid filter: {expr}")
            fld, op, raw = m.groups()
            value = re.sub(r"\\(.)", r"\1", raw[1:-1])
            out.append((fld, op in ("==", "eq"), value))
        return out

    @staticmethod
    def _matches(doc: dict[str, Any], tests: list[tuple[str, bool, str]], fields: set[str]) -> bool:
        for fld, equal, value in tests:
            if fld not in fields:
                raise ApiError(400, f"invalid filter field: {fld}")
            have = doc.get(fld)
            if (str(have) == value) != equal:
                return False
        return True

    def _list(self, kind: str, params: dict[str, str]) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]]
        if kind == "dns/view":
            docs = [{"id": vid, "name": name} for name, vid in self.views.items()]
        elif kind == "dns/auth_zone":
            docs = [z.as_dict() for z in self._zones]
        else:
            docs = [r.as_dict() for r in self._records.values()]
        tests = self._filter(params.get("_filter", ""))
        tag_tests = self._filter(params.get("_tfilter", ""))
        found = [
            d
            for d in docs
            if self._matches(d, tests, _FILTERABLE[kind])
            and all((str(d.get("tags", {}).get(k)) == v) == eq for k, eq, v in tag_tests)
        ]
        wanted = [f.strip() for f in params.get("_fields", "").split(",") if f.strip()]
        if wanted:
            found = [{k: v for k, v in d.items() if k in wanted or k == "id"} for d in found]
        return found

    # -- HTTP ----------------------------------------------------------------------

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        method, target = h.command, h.path
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        headers: list[tuple[str, str]] = []
        failure = self._take_failure(method)
        if failure is not None:
            status = failure.status
            if failure.retry_after is not None:
                headers.append(("Retry-After", failure.retry_after))
            if status in (502, 503, 504):
                reason = h.responses.get(status, ("Error",))[0]
                body, ctype = f"<html><body><h1>{status} {reason}</h1></body></html>\n".encode(), "text/html"
            else:
                message = "Too Many Requests" if status == 429 else h.responses.get(status, ("Error",))[0]
                body, ctype = json.dumps({"error": [{"message": message}]}).encode(), "application/json"
        else:
            status, doc = self._answer(h, method, target, raw)
            body = json.dumps(doc).encode() if doc is not None else b""
            ctype = "application/json"
        self._answered(method, target, status)
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def _answer(self, h: BaseHTTPRequestHandler, method: str, target: str, raw: bytes) -> tuple[int, Any]:
        auth = h.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "token" or not secrets.compare_digest(token.strip().encode(), self.api_key.encode()):
            return 401, {"error": [{"message": "user is not authorized: invalid or missing API key"}]}
        split = urlsplit(target)
        if not split.path.startswith(BASE):
            return 404, {"error": [{"message": f"no such API: {split.path}"}]}
        path = unquote(split.path[len(BASE) :]).rstrip("/")
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            with self._lock:
                return self._route(method, path, params, raw)
        except ApiError as e:
            return e.status, e.body
        except Exception as e:  # the emulator's own failure (BIND refused, ...): say so loudly
            log.exception("UDDI emulator: %s %s failed", method, target)
            return 500, {"error": [{"message": f"emulator: {e}"}]}

    def _route(self, method: str, path: str, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        if path in ("dns/view", "dns/auth_zone", "dns/record"):
            if method == "GET":
                return 200, {"results": self._list(path, params)}
            if method == "POST" and path == "dns/record":
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    raise ApiError(400, "invalid JSON in request body") from None
                return 201, {"result": self._post_record(body).as_dict()}
            raise ApiError(405, f"method {method} not allowed on {path}")
        if path.startswith("dns/record/"):
            if method == "GET":
                rec = self._records.get(path)
                if rec is None:
                    raise ApiError(404, f"record {path} not found")
                return 200, {"result": rec.as_dict()}
            if method == "DELETE":
                self._delete(path)
                return 200, {}
            raise ApiError(405, f"method {method} not allowed on {path}")
        raise ApiError(404, f"no such object type: {path}")


class _Handler(ServiceHandler):
    server_version = "envoy"
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = ServiceHandler.dispatch


UddiEmulator.handler = _Handler


@contextmanager
def uddi_emulator(workdir: Path, bind: Bind, api_key: str | None = None) -> Iterator[UddiEmulator]:
    """Start the emulator over `bind`, yield it, and always shut it down cleanly."""
    workdir.mkdir(parents=True, exist_ok=True)
    emu = UddiEmulator(workdir, bind, api_key=api_key)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()
