"""An HTTPS front that forwards to a server (Pebble) and can trickle its answers.

It ends TLS with a certificate of the test CA, opens its own TLS connection
to the server behind it, and passes the bytes on. Its steering works on the
plain HTTP the two exchange, so "trickle" means what a crawling CA does: the
status line, the headers and the body, one byte every `interval`, for the
answers to requests whose path matches `paths` (a regular expression; None:
every request). Pebble builds its URLs from the
Host a client asks, so a directory fetched through the front points back at it.

Each connection is one thread, reading from either side as select says: the
client waits for each answer before it asks again (HTTP/1.1 as requests
speaks it), so the request just read decides how its answer goes. `stop()`
ends every connection and joins every thread.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from devsite.ports import free_port
from devsite.tlsca import TestCA

_REQUEST = re.compile(rb"(?:^|\r\n)(GET|POST|HEAD|PUT|DELETE) (\S+) HTTP/1\.[01]\r\n")


@dataclass(frozen=True)
class Steering:
    seconds: float  # between two bytes
    paths: re.Pattern[str] | None


class TrickleFront:
    """127.0.0.1:port, in front of 127.0.0.1:upstream_port; steer it with `trickle` and `clear`."""

    def __init__(self, upstream_port: int, cert: Path, key: Path, upstream_ca: Path) -> None:
        self.port = free_port()
        self.upstream_port = upstream_port
        self._server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_ctx.load_cert_chain(cert, key)
        self._client_ctx = ssl.create_default_context(cafile=str(upstream_ca))
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._steering: Steering | None = None
        self._socks: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._accepter: threading.Thread | None = None
        self._log: list[tuple[str, str, str]] = []

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def requests_log(self) -> list[tuple[str, str, str]]:
        """(method, path, how its answer went: "pass" or "trickle") of every request seen."""
        with self._lock:
            return list(self._log)

    def trickle(self, interval: float = 1.0, paths: str | None = None) -> None:
        """Answers to matching requests go one byte every `interval` seconds, headers included."""
        self._steer(Steering(interval, re.compile(paths) if paths else None))

    def clear(self) -> None:
        self._steer(None)

    def _steer(self, steering: Steering | None) -> None:
        with self._lock:
            self._steering = steering

    def _how(self, method: str, path: str) -> Steering | None:
        with self._lock:
            s = self._steering
            chosen = s if s is not None and (s.paths is None or s.paths.search(path)) else None
            self._log.append((method, path, "trickle" if chosen else "pass"))
        return chosen

    # -- serving ------------------------------------------------------------------

    def start(self) -> Self:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.settimeout(0.05)
        self._listener = listener
        self._accepter = threading.Thread(target=self._accept, name=f"trickle-{self.port}")
        self._accepter.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._accepter is not None:
            self._accepter.join()
            self._accepter = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            with suppress(OSError):
                socket.socket.shutdown(s, socket.SHUT_RDWR)
        for t in self._threads:
            t.join()
        self._threads.clear()

    def _accept(self) -> None:
        listener = self._listener
        while listener is not None and not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                # A connection reset before it was accepted: the front goes on serving the next.
                if self._stopping.is_set() or listener.fileno() < 0:
                    return
                continue
            t = threading.Thread(target=self._serve, args=(conn,), name=f"trickle-conn-{self.port}")
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
            t.start()

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._socks.add(s)

    def _serve(self, raw: socket.socket) -> None:
        self._track(raw)
        client: ssl.SSLSocket | None = None
        upstream: ssl.SSLSocket | None = None
        try:
            raw.settimeout(10)
            client = self._server_ctx.wrap_socket(raw, server_side=True)
            self._track(client)
            up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
            upstream = self._client_ctx.wrap_socket(up, server_hostname="localhost")
            self._track(upstream)
            client.settimeout(None)
            upstream.settimeout(None)
            self._pump(client, upstream)
        except (OSError, ssl.SSLError):
            pass  # the client gave up, or stop() ended the connection
        finally:
            for s in (client, upstream, raw):
                if s is not None:
                    with self._lock:
                        self._socks.discard(s)
                    with suppress(OSError):
                        s.close()

    def _pump(self, client: ssl.SSLSocket, upstream: ssl.SSLSocket) -> None:
        steering: Steering | None = None
        while not self._stopping.is_set():
            ready = [s for s in (client, upstream) if s.pending()]
            if not ready:
                ready, _, _ = select.select([client, upstream], [], [], 0.05)
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                if s is client:
                    found = _REQUEST.findall(data)
                    if found:
                        method, path = found[-1]
                        steering = self._how(method.decode(), path.decode())
                    upstream.sendall(data)
                    continue
                if steering is None:
                    client.sendall(data)
                    continue
                for i in range(len(data)):
                    if self._stopping.wait(steering.seconds):
                        return
                    client.sendall(data[i : i + 1])


@contextmanager
def trickle_front(ca: TestCA, upstream_port: int, name: str = "trickle") -> Iterator[TrickleFront]:
    """A front on a free port, with a certificate of `ca` (which also verifies the server behind it)."""
    cert, key = ca.issue(name)
    front = TrickleFront(upstream_port, cert, key, ca.ca_pem).start()
    try:
        yield front
    finally:
        front.stop()
