"""The HTTPS plumbing the API emulators share: a threaded server that stops cleanly, and its steering.

Each connection gets its own thread, which does the TLS handshake itself, so
a client that stalls in it cannot stop the accept loop; `stop()` wakes idle
keep-alive connections and joins every thread, so no emulator thread outlives
its test. A test steers every emulator the same way: `fail`, `slow`,
`trickle`, and what it answered in `requests_log`.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from contextlib import suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from devsite.ports import free_port

log = logging.getLogger(__name__)


@dataclass
class Failure:
    """What `fail` asked for: the next `count` requests (None: all) with these methods (None: any) get `status`."""

    status: int
    count: int | None
    methods: frozenset[str] | None
    retry_after: str | None


class HttpsService:
    """A service on 127.0.0.1:port; subclasses answer requests in `handle` and set `handler`."""

    name = "HTTPS service"  # in thread names and log lines
    handler: type[ServiceHandler]

    def __init__(self) -> None:
        self.port = free_port()
        self._lock = threading.RLock()
        self._stopping = threading.Event()  # cuts short any delay a test asked for
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._cert: Path | None = None
        self._key: Path | None = None
        self._log: list[tuple[str, str, int]] = []
        self._failure: Failure | None = None
        self._slow: tuple[float, frozenset[str] | None] | None = None
        self._trickle: tuple[float, frozenset[str] | None] | None = None

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    # -- steering, and what tests read ----------------------------------------------

    @property
    def requests_log(self) -> list[tuple[str, str, int]]:
        """(method, path with query, status) of every answered request, in order."""
        with self._lock:
            return list(self._log)

    def fail(
        self,
        status: int | None,
        count: int | None = None,
        methods: set[str] | None = None,
        retry_after: str | None = None,
    ) -> None:
        """The next `count` requests (None: all, until cleared) with these methods get `status`; None clears.

        Each service answers a failure as its real counterpart's front end does.
        """
        with self._lock:
            ms = frozenset(m.upper() for m in methods) if methods else None
            self._failure = None if status is None else Failure(status, count, ms, retry_after)

    def slow(self, seconds: float | None, methods: set[str] | None = None) -> None:
        """Delay answers to requests with these methods (None: all) by `seconds`; None clears."""
        with self._lock:
            ms = frozenset(m.upper() for m in methods) if methods else None
            self._slow = None if seconds is None else (seconds, ms)

    def trickle(self, interval: float | None, methods: set[str] | None = None) -> None:
        """Send answers to requests with these methods (None: all) one byte every `interval` seconds,
        status line and headers included, as a crawling server does; None clears.

        Each read a client makes gets a byte in time: only a total deadline ends
        the request. The work is done first, as with `slow`.
        """
        with self._lock:
            ms = frozenset(m.upper() for m in methods) if methods else None
            self._trickle = None if interval is None else (interval, ms)

    def _trickle_interval(self, method: str) -> float | None:
        with self._lock:
            t = self._trickle
        return t[0] if t is not None and (t[1] is None or method in t[1]) else None

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _clear_steering(self) -> None:
        """No failure, no delay, an empty log: for the next test."""
        with self._lock:
            self._failure = None
            self._slow = None
            self._trickle = None
            self._log.clear()

    def _take_failure(self, method: str) -> Failure | None:
        """The failure this request gets, if a test asked for one; counted down."""
        with self._lock:
            f = self._failure
            if f is None or (f.methods is not None and method not in f.methods):
                return None
            if f.count is not None:
                f.count -= 1
                if f.count <= 0:
                    self._failure = None
            return f

    def _answered(self, method: str, target: str, status: int) -> None:
        """Wait as long as `slow` asked (cut short by `stop`), then log the answer about to go."""
        with self._lock:
            slow = self._slow
        if slow is not None and (slow[1] is None or method in slow[1]):
            self._stopping.wait(slow[0])
        with self._lock:
            self._log.append((method, target, status))

    def start(self) -> Self:
        if self._cert is None or self._key is None:
            raise RuntimeError(f"{self.name}: no certificate to serve")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self._cert, self._key)
        server = _Server(("127.0.0.1", self.port), self.handler, self)
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{self.name}-{self.port}"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()  # the accept loop ends
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # idle keep-alive connections: wake their threads
            with suppress(OSError):
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
        server.server_close()  # joins every connection's thread
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins them: no thread outlives the service
    block_on_close = True

    def __init__(self, addr: tuple[str, int], handler: type[ServiceHandler], service: HttpsService) -> None:
        self.service = service
        super().__init__(addr, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("%s: connection from %s ended with an error", self.service.name, client_address, exc_info=True)


class ServiceHandler(BaseHTTPRequestHandler):
    """Subclasses set `server_version` and the `do_METHOD`s the service answers, each `= ServiceHandler.dispatch`."""

    protocol_version = "HTTP/1.1"  # keep-alive, as requests' sessions use it
    sys_version = ""
    timeout = 30  # an idle connection's thread ends by itself after this
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms stall

    @property
    def service(self) -> HttpsService:
        server = self.server
        if not isinstance(server, _Server):
            raise TypeError("not an emulator's server")
        return server.service

    def setup(self) -> None:
        super().setup()
        sock = self.request
        with self.service._lock:
            self.service._conns.add(sock)
        if isinstance(sock, ssl.SSLSocket):
            try:
                sock.do_handshake()  # in this connection's thread
            except BaseException:  # finish() is not called when setup() fails
                with self.service._lock:
                    self.service._conns.discard(sock)
                raise

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.service._lock:
                self.service._conns.discard(self.request)

    def dispatch(self) -> None:
        interval = self.service._trickle_interval(self.command)
        if interval is None:
            self.service.handle(self)
            return
        plain = self.wfile
        self.wfile = _Trickling(plain, interval, self.service._stopping)  # type: ignore[assignment]
        try:
            self.service.handle(self)
        finally:
            self.wfile = plain

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(f"{self.service.name}: " + format, *args)


class _Trickling:
    """A connection's writer that sends one byte every `interval` seconds; `stop` of the service ends it."""

    def __init__(self, plain: Any, interval: float, stopping: threading.Event) -> None:
        self._plain, self._interval, self._stopping = plain, interval, stopping

    def write(self, data: bytes) -> int:
        for i in range(len(data)):
            if self._stopping.wait(self._interval):
                raise ConnectionAbortedError("the service is stopping")
            self._plain.write(data[i : i + 1])
        return len(data)

    def flush(self) -> None:
        self._plain.flush()
