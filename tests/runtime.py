"""A UNIX socket where deploy expects HAProxy's runtime API: the accept and read loop the fake runtimes share.

Each fake (scripted answers, a hostile one, a relay that holds a command) says
only what it does with one connection's command; the socket, its thread and
its close are here, once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path


def read_command(conn: socket.socket) -> bytes:
    """One command as rgwtls sends it: a line, or a line with `<<` and its payload up to an empty line."""
    data = b""
    while not (data.endswith(b"\n\n") or (data.endswith(b"\n") and b"<<" not in data)):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class FakeSocket:
    """A UNIX socket served by a thread of its own, one connection at a time, until `close`.

    A subclass sets its own fields, then calls this `__init__` (which starts
    the thread), and answers each connection in `handle`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._srv.bind(str(path))
        self._srv.listen(8)
        # Polled, and joined before the close: a listener closed under a blocked accept() lets
        # that thread accept on whatever socket reuses the descriptor next (another test's server).
        self._srv.settimeout(0.05)
        self._stopping = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def handle(self, conn: socket.socket) -> bool:
        """Answer one connection; True to hold it open, unanswered, until `close`."""
        raise NotImplementedError

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.handle(conn):
                self._held.append(conn)
            else:
                conn.close()

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(10)
        self._srv.close()
        for c in self._held:
            with contextlib.suppress(OSError):
                c.close()
