"""A real S3 client that never retries, in a loop, every failure counted: what a rotation costs a user.

Issue 20 asks for the proof with the client people actually point at
radosgw: botocore, its retries cut to one attempt (`total_max_attempts = 1`),
so that nothing inside it hides a refused connection, a failed handshake or
a 5xx behind a silent second try. Every exception it raises is a failed
request, and so is any answer but the 200 radosgw gives an anonymous
ListAllMyBuckets (unsigned, so the loop needs no S3 user on the cluster).

Each request asks for `Connection: close`, and radosgw, HAProxy and nginx all
answer it with one, so each request opens a new TLS connection: each one sees
the certificate served at that moment, and a connection refused while radosgw
restarts counts, as it would for a client arriving then. The Host header is
the certificate's name, as a client that resolved it would send.

The keep-alive probe beside it stays on http.client, on purpose: it shows that
a connection already open survives a rotation, and a pooled client such as
botocore would silently reconnect when that connection dropped, hiding exactly
what the probe is there to see.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import botocore.session
import urllib3
from botocore import UNSIGNED
from botocore.awsrequest import AWSPreparedRequest
from botocore.config import Config


@dataclass
class Tally:
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    longest_gap: float = 0.0  # seconds between two successful requests
    keepalive_ok: int = 0
    keepalive_failed: int = 0


class GetLoop:
    """S3 ListBuckets on https://127.0.0.1:port/ for Host `host`, trusting nothing, until `stop()`."""

    def __init__(self, port: int, host: str, interval: float = 0.01) -> None:
        self.port, self.host, self.interval = port, host, interval
        self.tally = Tally()
        self._stop = threading.Event()
        # The client trusts any certificate (the loop counts failures, it does not judge certificates);
        # urllib3 would warn on every request, and under `pytest -W error` each warning would be a failure.
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self._list_buckets = self._s3_client()
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._ctx.check_hostname = False
        self._ctx.verify_mode = ssl.CERT_NONE
        self._threads = [
            threading.Thread(target=self._loop, name="getloop", daemon=True),
            threading.Thread(target=self._keepalive, name="getloop-keepalive", daemon=True),
        ]

    def _s3_client(self) -> Callable[[], dict[str, Any]]:
        # Made once here, not per request: a new client costs some 0.1 s of model loading, a call 2 ms.
        client = botocore.session.get_session().create_client(
            "s3",
            region_name="us-east-1",
            endpoint_url=f"https://127.0.0.1:{self.port}",
            verify=False,
            config=Config(
                signature_version=UNSIGNED,
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=5,
                read_timeout=10,
                s3={"addressing_style": "path"},
            ),
        )
        client.meta.events.register("before-send.s3", self._as_user)
        # botocore builds its operations from the service model at run time; its stubs cannot list them.
        list_buckets: Callable[[], dict[str, Any]] = client.list_buckets  # type: ignore[attr-defined]
        return list_buckets

    def _as_user(self, request: AWSPreparedRequest, **_: Any) -> None:
        request.headers["Host"] = self.host
        request.headers["Connection"] = "close"

    def _loop(self) -> None:
        t = self.tally
        last_ok = time.monotonic()
        while not self._stop.is_set():
            try:
                answer = self._list_buckets()
            except Exception as e:  # whatever the client raises, the request failed
                t.failed += 1
                t.errors.append(f"{type(e).__name__}: {e}")
            else:
                if answer["ResponseMetadata"]["HTTPStatusCode"] != 200:
                    t.failed += 1
                    t.errors.append(f"HTTP {answer['ResponseMetadata']['HTTPStatusCode']}")
                else:
                    now = time.monotonic()
                    t.longest_gap = max(t.longest_gap, now - last_ok)
                    last_ok = now
                    t.ok += 1
            self._stop.wait(self.interval)

    def _get(self, conn: http.client.HTTPSConnection) -> int:
        conn.request("GET", "/", headers={"Host": self.host})
        resp = conn.getresponse()
        resp.read()
        return resp.status

    def _keepalive(self) -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=self._ctx)
        try:
            while not self._stop.is_set():
                try:
                    ok = self._get(conn) < 500
                except (OSError, http.client.HTTPException):
                    ok = False
                    conn.close()  # a new connection next time: one failure, counted apart
                if ok:
                    self.tally.keepalive_ok += 1
                else:
                    self.tally.keepalive_failed += 1
                self._stop.wait(0.2)
        finally:
            conn.close()

    def start(self) -> GetLoop:
        for th in self._threads:
            th.start()
        return self

    def wait_for(self, ok: int, timeout: float = 30.0) -> GetLoop:
        """Until `ok` more requests succeeded: a rotation is then surrounded by requests on both sides."""
        target = self.tally.ok + ok
        deadline = time.monotonic() + timeout
        while self.tally.ok < target and time.monotonic() < deadline and not self.tally.failed:
            time.sleep(0.01)
        return self

    def stop(self) -> Tally:
        self._stop.set()
        for th in self._threads:
            th.join(15)
        return self.tally
