"""A TLS server that re-reads its certificate file every second, as radosgw's `ssl_reload` does.

No Squid package (19.2.4+, the first radosgw with `ssl_reload`) runs here,
so `deploy.activate = "self"` is proven against this stand-in: its own
process (`python -m devsite.reloading PORT PEM`), answering every HTTPS
request with 200, serving new connections with whatever its PEM (key, cert,
chain in one file) held at its last look. A PEM it cannot load is ignored,
and the last good one served, as radosgw keeps its context then.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
import time
from pathlib import Path

from devsite.ports import free_port
from devsite.proc import Server

INTERVAL = 1.0


class _Reloader:
    def __init__(self, pem: Path) -> None:
        self.pem = pem
        self.seen = b""
        self.ctx = self._load()

    def _load(self) -> ssl.SSLContext:
        data = self.pem.read_bytes()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.pem)
        self.seen = data
        return ctx

    def watch(self) -> None:
        while True:
            time.sleep(INTERVAL)
            try:
                if self.pem.read_bytes() != self.seen:
                    self.ctx = self._load()
            except (OSError, ssl.SSLError):
                pass


def _answer(conn: socket.socket, ctx: ssl.SSLContext) -> None:
    try:
        conn.settimeout(10)
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    except (OSError, ssl.SSLError):
        pass
    finally:
        conn.close()


def serve(port: int, pem: Path) -> None:
    reloader = _Reloader(pem)
    threading.Thread(target=reloader.watch, daemon=True).start()
    with socket.create_server(("127.0.0.1", port)) as srv:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=_answer, args=(conn, reloader.ctx), daemon=True).start()


class ReloadingServer:
    """The stand-in in its own process, on a free port; stopped by its handle."""

    def __init__(self, workdir: Path, pem: Path) -> None:
        self.port = free_port()
        self.pem = pem
        self.server = Server(
            "reloading TLS server",
            [sys.executable, "-m", "devsite.reloading", str(self.port), pem],
            workdir / "reloading.out",
            cwd=Path(__file__).resolve().parent.parent,
        )

    def start(self) -> ReloadingServer:
        self.server.start()
        self.server.wait_until(self._listening, what="listening")
        return self

    def _listening(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        self.server.stop()


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]))
