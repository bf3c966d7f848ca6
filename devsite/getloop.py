"""A client that never retries: HTTPS GETs in a loop, each on a new connection, every failure counted.

This stands in for curl, a browser or a script (botocore is not installed
here; with `max_attempts = 1` it would behave the same): one attempt per
request, a refused connection, a failed handshake or a 5xx is a failed
request. Each request opens a new connection, so each one sees the
certificate served at that moment; one keep-alive connection is kept open
beside them, to show that an in-flight connection survives a rotation.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Tally:
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    longest_gap: float = 0.0  # seconds between two successful requests
    keepalive_ok: int = 0
    keepalive_failed: int = 0


class GetLoop:
    """GET https://127.0.0.1:port/ for Host `host`, trusting nothing, until `stop()`."""

    def __init__(self, port: int, host: str, interval: float = 0.01) -> None:
        self.port, self.host, self.interval = port, host, interval
        self.tally = Tally()
        self._stop = threading.Event()
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._ctx.check_hostname = False
        self._ctx.verify_mode = ssl.CERT_NONE
        self._threads = [
            threading.Thread(target=self._loop, name="getloop", daemon=True),
            threading.Thread(target=self._keepalive, name="getloop-keepalive", daemon=True),
        ]

    def _get(self, conn: http.client.HTTPSConnection) -> int:
        conn.request("GET", "/", headers={"Host": self.host})
        resp = conn.getresponse()
        resp.read()
        return resp.status

    def _loop(self) -> None:
        t = self.tally
        last_ok = time.monotonic()
        while not self._stop.is_set():
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=self._ctx)
            try:
                status = self._get(conn)
            except (OSError, http.client.HTTPException) as e:
                t.failed += 1
                t.errors.append(f"{type(e).__name__}: {e}")
            else:
                if status >= 500:
                    t.failed += 1
                    t.errors.append(f"HTTP {status}")
                else:
                    now = time.monotonic()
                    t.longest_gap = max(t.longest_gap, now - last_ok)
                    last_ok = now
                    t.ok += 1
            finally:
                conn.close()
            self._stop.wait(self.interval)

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
