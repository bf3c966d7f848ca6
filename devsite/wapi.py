"""An Infoblox WAPI emulator (record:txt only) that writes into the real BIND.

Infoblox cannot run here, so this is the one stand-in of the test stack. It
follows what a NIOS grid master answers, as far as public material shows it:

- Object references: `record:txt/<base64 id>:<name>/<view>`; the id is
  content-derived like the appliance's (`dns.bind_txt$._default.<reversed
  name>."<text>"`), so deleting and re-creating a record gives the same ref.
- record:txt: required fields `name`, `text`; basic fields `name`, `text`,
  `view`; `comment` (and here `name`, `text`) searchable by `=`, `:=` (case
  insensitive), `~=` (regular expression); `view` by `=`; `ttl` not searchable.
- Errors: JSON `{"Error", "code", "text"}`; 400 for protocol and data
  errors, 404 for a reference or a view that does not exist; 401 from the web
  server in front, as Apache's HTML page with `WWW-Authenticate: Basic
  realm="InfoBlox ONE Platform"`.
- A name in no zone of the view: the appliance answers 400 with code
  `Client.Ibap.Data.Conflict` and the text "The action is not allowed. A
  parent was not found." (the same code as a duplicate: only the text differs).
- Sessions: a Basic login sets the `ibapauth` cookie; requests carrying it
  need no Basic auth until `expire_sessions()`.

Only the `dns_view` ("default") is served by the BIND: records created in
another view are kept here and never reach DNS, as on an appliance whose
other view answers other clients.

A request that matches a `fail()` gets its failure before authentication (as
from the web server in front). `slow()` delays the answer *after* the work is
done: a client that times out has still created or deleted the record.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from devsite.bind import Bind
from devsite.https import HttpsService, ServiceHandler
from devsite.tlsca import TestCA

log = logging.getLogger(__name__)

REALM = "InfoBlox ONE Platform"
_PATH = re.compile(r"^/wapi/v(?P<version>\d+\.\d+(?:\.\d+)?)/(?P<rest>.*)$")
_TXT_FIELDS = {
    "name",
    "text",
    "view",
    "ttl",
    "use_ttl",
    "comment",
    "zone",
    "disable",
    "creator",
    "dns_name",
    "extattrs",
}
_TXT_BASIC = ("name", "text", "view")
_WRITABLE = {"name", "text", "view", "ttl", "use_ttl", "comment", "disable", "extattrs", "creator"}
# Search modifiers per field: "" is '=', ":" case-insensitive, "~" regular expression.
_SEARCHABLE = {
    "name": {"", ":", "~"},
    "text": {"", ":", "~"},
    "comment": {"", ":", "~"},
    "view": {""},
    "zone": {""},
}
_OPTIONS = {"_return_fields", "_return_fields+", "_return_as_object", "_max_results"}

_HTML_401 = """<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">
<html><head>
<title>401 Authorization Required</title>
</head><body>
<h1>Authorization Required</h1>
<p>This server could not verify that you
are authorized to access the document
requested.  Either you supplied the wrong
credentials (e.g., bad password), or your
browser doesn't understand how to supply
the credentials required.</p>
</body></html>
"""
_HTML_503 = """<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">
<html><head>
<title>503 Service Unavailable</title>
</head><body>
<h1>Service Unavailable</h1>
<p>The server is temporarily unable to service your
request due to maintenance downtime or capacity
problems. Please try again later.</p>
</body></html>
"""


def _html(status: int, reason: str) -> str:
    return (
        '<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
        f"<title>{status} {reason}</title>\n</head><body>\n<h1>{reason}</h1>\n</body></html>\n"
    )


class WapiError(Exception):
    """One WAPI error answer: HTTP status and the appliance's JSON body."""

    def __init__(self, status: int, error: str, code: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.body = {"Error": error, "code": code, "text": text}

    @classmethod
    def proto(cls, text: str) -> WapiError:
        return cls(400, f"AdmConProtoError: {text}", "Client.Ibap.Proto", text)

    @classmethod
    def not_found(cls, text: str) -> WapiError:
        return cls(404, f"AdmConDataNotFoundError: {text}", "Client.Ibap.Data.NotFound", text)

    @classmethod
    def conflict(cls, text: str) -> WapiError:
        return cls(
            400,
            f"AdmConDataError: None (IBDataConflictError: IB.Data.Conflict:{text})",
            "Client.Ibap.Data.Conflict",
            text,
        )


@dataclass
class _Record:
    ref: str
    name: str
    text: str
    view: str
    ttl: int | None
    use_ttl: bool
    comment: str
    zone: str
    disable: bool = False
    creator: str = "STATIC"

    def as_dict(self) -> dict[str, Any]:
        return {
            "_ref": self.ref,
            "name": self.name,
            "text": self.text,
            "view": self.view,
            "ttl": self.ttl,
            "use_ttl": self.use_ttl,
            "comment": self.comment,
        }

    def fields(self, names: tuple[str, ...] | list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"_ref": self.ref}
        for f in names:
            if f == "ttl":
                if self.use_ttl and self.ttl is not None:
                    out["ttl"] = self.ttl
            elif f == "dns_name":
                out["dns_name"] = self.name
            elif f == "extattrs":
                out["extattrs"] = {}
            else:
                out[f] = getattr(self, f)
        return out


class WapiEmulator(HttpsService):
    """The emulator's state and steering; its HTTPS server runs in a thread."""

    name = "WAPI emulator"

    def __init__(
        self,
        workdir: Path,
        bind: Bind,
        username: str = "rgwtls",
        password: str | None = None,
        views: set[str] | None = None,
        dns_view: str = "default",
    ) -> None:
        super().__init__()
        self.workdir = workdir
        self.bind = bind
        self.username = username
        self.password = password if password is not None else secrets.token_urlsafe(16)
        self.views: set[str] = set(views) if views is not None else {"default", "external"}
        self.dns_view = dns_view
        self._records: dict[str, _Record] = {}  # by internal id
        self._sessions: set[str] = set()
        self._basic_logins = 0
        self._versions: list[str] = []
        ca = TestCA(workdir / "ca")
        self.ca_bundle: Path = ca.ca_pem
        self._cert, self._key = ca.issue("wapi")

    # -- what tests read -----------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def server_name(self) -> str:
        """host:port, as a client's `server` setting names the grid master."""
        return f"127.0.0.1:{self.port}"

    @property
    def basic_logins(self) -> int:
        with self._lock:
            return self._basic_logins

    @property
    def wapi_versions(self) -> list[str]:
        """The WAPI version of every request that had one, e.g. ["2.11", "2.11"]."""
        with self._lock:
            return list(self._versions)

    @property
    def wapi_version(self) -> str | None:
        """The version the last request used."""
        with self._lock:
            return self._versions[-1] if self._versions else None

    def records(self) -> list[dict[str, Any]]:
        """Every TXT record held, in every view: _ref, name, text, view, ttl, use_ttl, comment."""
        with self._lock:
            return [r.as_dict() for r in self._records.values()]

    # -- steering ----------------------------------------------------------------

    def expire_sessions(self) -> None:
        """Every ibapauth cookie handed out so far stops working (as at its timeout)."""
        with self._lock:
            self._sessions.clear()

    def clear_log(self) -> None:
        with self._lock:
            super().clear_log()
            self._versions.clear()

    def reset(self) -> None:
        """A fresh appliance for the next test: no records (none in BIND either), no
        failure or delay, no sessions, `basic_logins` and the logs back to zero."""
        self._clear_steering()
        with self._lock:
            for rec in list(self._records.values()):
                self._delete(rec.ref)
            self._sessions.clear()
            self._basic_logins = 0
            self._versions.clear()

    def add_record(self, name: str, text: str, view: str = "default", comment: str = "") -> str:
        """Plant a record as if a crashed run or a person made it; also written into BIND."""
        body: dict[str, Any] = {"name": name, "text": text, "view": view}
        if comment:
            body["comment"] = comment
        return self._create(body).ref

    def delete_record(self, ref: str) -> None:
        """Remove a record as a person would in the GUI; also removed from BIND."""
        self._delete(ref)

    # -- the object model ------------------------------------------------------------

    @staticmethod
    def _norm(name: str) -> str:
        return name.strip().rstrip(".").lower()

    def _view_id(self, view: str) -> str:
        if view == "default":
            return "_default"
        return str(sorted(self.views - {"default"}).index(view) + 1)

    def _make_ref(self, name: str, text: str, view: str) -> tuple[str, str]:
        reversed_name = ".".join(reversed(name.split(".")))
        inner = f'dns.bind_txt$.{self._view_id(view)}.{reversed_name}."{text}"'
        rid = base64.urlsafe_b64encode(inner.encode()).decode().rstrip("=")
        return rid, f"record:txt/{rid}:{name}/{view}"

    def _zone_for(self, name: str) -> str | None:
        try:
            return self.bind.zone_of(name)
        except KeyError:
            return None

    def _create(self, body: dict[str, Any]) -> _Record:
        unknown = sorted(set(body) - _WRITABLE)
        if unknown:
            raise WapiError.proto(f"Unknown argument/field: '{unknown[0]}'")
        for req in ("name", "text"):
            if req not in body:
                raise WapiError.proto(f"Field is required: {req}")
        name, text = body["name"], body["text"]
        view = body.get("view", "default")
        comment = body.get("comment", "")
        ttl = body.get("ttl")
        use_ttl = body.get("use_ttl", ttl is not None)
        if not isinstance(name, str) or not name.strip():
            raise WapiError.proto("Invalid value for name: " + json.dumps(name))
        if not isinstance(text, str):
            raise WapiError.proto("Invalid value for text: " + json.dumps(text) + ": String expected")
        if not isinstance(view, str):
            raise WapiError.proto("Invalid value for view: " + json.dumps(view) + ": String expected")
        if not isinstance(comment, str) or comment != comment.strip() or len(comment) > 256:
            raise WapiError.proto("Invalid value for comment: " + json.dumps(comment))
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl < 2**32):
            raise WapiError.proto("Invalid value for ttl: " + json.dumps(ttl) + ": Unsigned integer expected")
        if not isinstance(use_ttl, bool):
            raise WapiError.proto("Invalid value for use_ttl: " + json.dumps(use_ttl) + ": Boolean expected")
        name = self._norm(name)
        with self._lock:
            if view not in self.views:
                raise WapiError.not_found(f"View {view} not found")
            zone = self._zone_for(name)
            if zone is None:
                raise WapiError.conflict("The action is not allowed. A parent was not found.")
            rid, ref = self._make_ref(name, text, view)
            if rid in self._records:
                raise WapiError.conflict(f"The record '{name}' already exists.")
            rec = _Record(
                ref=ref,
                name=name,
                text=text,
                view=view,
                ttl=ttl if use_ttl else None,
                use_ttl=use_ttl,
                comment=comment,
                zone=zone,
            )
            if view == self.dns_view:
                self.bind.add_txt(name, text, ttl if use_ttl and ttl is not None else 5)
            self._records[rid] = rec
            return rec

    def _by_ref(self, ref: str) -> tuple[str, _Record]:
        m = re.fullmatch(r"record:txt/([A-Za-z0-9_\-]+)(?::.*)?", ref)
        if not m:
            raise WapiError.proto(f"Invalid reference: {ref}")
        rid = m.group(1)
        try:
            base64.urlsafe_b64decode(rid + "=" * (-len(rid) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise WapiError.proto(f"Invalid reference: {ref}") from None
        with self._lock:
            rec = self._records.get(rid)
        if rec is None:
            raise WapiError.not_found(f"Reference {ref} not found")
        return rid, rec

    def _delete(self, ref: str) -> str:
        with self._lock:
            rid, rec = self._by_ref(ref)
            if rec.view == self.dns_view:
                self.bind.delete_txt(rec.name, rec.text)
            del self._records[rid]
            return rec.ref

    def _return_fields(self, params: list[tuple[str, str]]) -> list[str]:
        fields: list[str] = list(_TXT_BASIC)
        for key, value in params:
            if key in ("_return_fields", "_return_fields+", "_return_fields "):
                wanted = [f.strip() for f in value.split(",") if f.strip()]
                for f in wanted:
                    if f not in _TXT_FIELDS:
                        raise WapiError.proto(f"Unknown argument/field: '{f}'")
                if key == "_return_fields":
                    fields = wanted
                else:
                    fields += [f for f in wanted if f not in fields]
        return fields

    def _search(self, params: list[tuple[str, str]]) -> list[_Record]:
        tests: list[tuple[str, str, str]] = []
        for key, value in params:
            if key.startswith("_"):
                continue
            m = re.fullmatch(r"([a-z_]+)([:~!<>]?)", key)
            if not m:
                raise WapiError.proto(f"Unknown argument/field: '{key}'")
            fld, mod = m.groups()
            if fld not in _TXT_FIELDS:
                raise WapiError.proto(f"Unknown argument/field: '{fld}'")
            if fld not in _SEARCHABLE:
                raise WapiError.proto(f"Field is not searchable: {fld}")
            if mod not in _SEARCHABLE[fld]:
                raise WapiError.proto(f"Search modifier '{mod}' not allowed for field: {fld}")
            if mod == "~":
                try:
                    re.compile(value)
                except re.error:
                    raise WapiError.proto(f"Invalid regular expression: {value}") from None
            tests.append((fld, mod, value))

        def matches(rec: _Record) -> bool:
            for fld, mod, value in tests:
                have = str(getattr(rec, fld))
                want = value
                if fld == "name":
                    want = self._norm(value) if mod != "~" else value
                if mod == "~":
                    if not re.search(want, have):
                        return False
                elif mod == ":":
                    if have.lower() != want.lower():
                        return False
                elif have != want:
                    return False
            return True

        with self._lock:
            return [r for r in self._records.values() if matches(r)]

    # -- HTTP ----------------------------------------------------------------------

    def _authenticate(self, headers: Any) -> tuple[bool, str | None]:
        """(authenticated, cookie to set)."""
        auth = headers.get("Authorization")
        if auth:
            scheme, _, data = auth.partition(" ")
            if scheme.lower() != "basic":
                return False, None
            try:
                user, _, pw = base64.b64decode(data.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return False, None
            ok = secrets.compare_digest(user.encode(), self.username.encode()) and secrets.compare_digest(
                pw.encode(), self.password.encode()
            )
            if not ok:
                return False, None
            token = secrets.token_urlsafe(24)
            now = int(time.time())
            with self._lock:
                self._basic_logins += 1
                self._sessions.add(token)
            value = (
                f'"ip=127.0.0.1,client=API,group=admin-group,ctime={now},timeout=600,'
                f'mtime={now},su=1,auth=LOCAL,user={self.username},{token}"'
            )
            return True, f"ibapauth={value}; httponly; Path=/; secure"
        for part in headers.get_all("Cookie") or []:
            for item in part.split(";"):
                k, _, v = item.strip().partition("=")
                if k == "ibapauth":
                    token = v.strip().strip('"').rsplit(",", 1)[-1]
                    with self._lock:
                        if token in self._sessions:
                            return True, None
        return False, None

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        method = h.command
        target = h.path
        split = urlsplit(target)
        status, ctype, body, headers = self._answer(h, method, split.path, split.query)
        self._answered(method, target, status)
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            h.send_header(k, v)
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(body)

    def _answer(
        self, h: BaseHTTPRequestHandler, method: str, path: str, query: str
    ) -> tuple[int, str, bytes, list[tuple[str, str]]]:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        html = "text/html; charset=iso-8859-1"
        unauthorized = (401, html, _HTML_401.encode(), [("WWW-Authenticate", f'Basic realm="{REALM}"')])

        # A failure a test asked for (`fail`) looks as the appliance's makes it: 401 the
        # web server's HTML 401; 500 a JSON WAPI error; 503 and other statuses its HTML page.
        steered = self._take_failure(method)
        if steered is not None:
            failure = steered.status
            if failure == 401:
                return unauthorized
            if failure == 503:
                return 503, html, _HTML_503.encode(), []
            if failure == 500:
                err = WapiError(500, "AdmConError: Internal error", "Server", "Internal error")
                return 500, "application/json", json.dumps(err.body).encode(), []
            reason = h.responses.get(failure, ("Error",))[0]
            return failure, html, _html(failure, reason).encode(), []

        ok, cookie = self._authenticate(h.headers)
        if not ok:
            return unauthorized
        extra = [("Set-Cookie", cookie)] if cookie else []

        m = _PATH.match(path)
        if not m:
            return 404, html, _html(404, "Not Found").encode(), extra
        with self._lock:
            self._versions.append(m.group("version"))
        rest = unquote(m.group("rest"))
        params = parse_qsl(query, keep_blank_values=True)
        try:
            status, doc = self._route(method, rest, params, raw)
        except WapiError as e:
            status, doc = e.status, e.body
        except Exception as e:  # the emulator's own failure (BIND refused, ...): say so loudly
            log.exception("WAPI emulator: %s %s failed", method, path)
            err = WapiError(500, f"AdmConError: emulator: {e}", "Server", f"emulator: {e}")
            status, doc = 500, err.body
        return status, "application/json", json.dumps(doc, indent=4).encode(), extra

    def _route(self, method: str, rest: str, params: list[tuple[str, str]], raw: bytes) -> tuple[int, Any]:
        keys = {k for k, _ in params}
        objtype = rest.split("/", 1)[0]
        if objtype != "record:txt":
            raise WapiError.proto(f"Unknown object type ({objtype})")
        as_object = dict(params).get("_return_as_object") == "1"

        def wrap(doc: Any) -> Any:
            return {"result": doc} if as_object else doc

        if rest == "record:txt":
            if method == "GET":
                fields = self._return_fields(params)
                found = self._search(params)
                max_results = dict(params).get("_max_results")
                if max_results:
                    try:
                        limit = int(max_results)
                    except ValueError:
                        raise WapiError.proto(f"Invalid value for _max_results: {max_results}") from None
                    if limit < 0 and len(found) > -limit:
                        raise WapiError.proto(f"Result set too large (> {-limit})")
                    found = found[: abs(limit)]
                return 200, wrap([r.fields(fields) for r in found])
            if method == "POST":
                bad = sorted(keys - _OPTIONS)
                if bad:
                    raise WapiError.proto(f"Unknown argument/field: '{bad[0]}'")
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    raise WapiError.proto("Invalid JSON in request body") from None
                if not isinstance(body, dict):
                    raise WapiError.proto("Invalid request body: a JSON object expected")
                rec = self._create(body)
                if keys & {"_return_fields", "_return_fields+", "_return_fields "}:
                    return 201, wrap(rec.fields(self._return_fields(params)))
                return 201, wrap(rec.ref)
            raise WapiError.proto(f"Method {method} not allowed for record:txt without a reference")

        if method == "GET":
            _, rec = self._by_ref(rest)
            return 200, wrap(rec.fields(self._return_fields(params)))
        if method == "DELETE":
            return 200, wrap(self._delete(rest))
        raise WapiError.proto(f"Method {method} not supported by the emulator for {rest}")


class _Handler(ServiceHandler):
    server_version = "Apache"
    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = ServiceHandler.dispatch


WapiEmulator.handler = _Handler


@contextmanager
def wapi_emulator(
    workdir: Path,
    bind: Bind,
    username: str = "rgwtls",
    password: str | None = None,
    views: set[str] | None = None,
) -> Iterator[WapiEmulator]:
    """Start the emulator over `bind`, yield it, and always shut it down cleanly."""
    workdir.mkdir(parents=True, exist_ok=True)
    emu = WapiEmulator(workdir, bind, username=username, password=password, views=views)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()
