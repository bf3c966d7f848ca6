"""The HTTPS plumbing the API emulators share: a threaded server that stops cleanly.

Each connection gets its own thread, which does the TLS handshake itself, so
a client that stalls in it cannot stop the accept loop; `stop()` wakes idle
keep-alive connections and joins every thread, so no emulator thread outlives
its test.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from devsite.ports import free_port

log = logging.getLogger(__name__)


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

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

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
        self.service.handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(f"{self.service.name}: " + format, *args)
