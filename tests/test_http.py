"""Every request has a total deadline: a server that trickles its answer is cut off at the request's timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress

import pytest
import requests

from devsite.ports import free_port
from rgwtls import deadline, http
from tests import waits

BODY = b'{"ok": true}'
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


class Trickler:
    """Plain HTTP on 127.0.0.1: each answer is ANSWER, its first `fast` bytes at once, then one per `interval`.

    `interval` 0 answers at once. A connection serves requests until the client closes it (keep-alive).
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.interval = 0.0
        self.fast = 0
        self.connections = 0
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._sock.settimeout(0.05)
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._accepter = threading.Thread(target=self._accept)
        self._accepter.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/x"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,))
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, suppress(OSError):
            while not self._stop.is_set():
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                if not self.interval:
                    conn.sendall(ANSWER)
                    continue
                conn.sendall(ANSWER[: self.fast])
                for i in range(self.fast, len(ANSWER)):
                    if self._stop.wait(self.interval):
                        return
                    conn.sendall(ANSWER[i : i + 1])

    def stop(self) -> None:
        self._stop.set()
        self._accepter.join()
        for c in self._conns:
            with suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join()
        self._sock.close()


@pytest.fixture
def server() -> Iterator[Trickler]:
    s = Trickler()
    yield s
    s.stop()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    deadline.reset()
    with http.session() as s:
        s.trust_env = False
        yield s
    deadline.reset()


def timed(session: requests.Session, url: str, timeout: float) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        session.get(url, timeout=timeout)
    except requests.RequestException as e:
        return time.monotonic() - started, e
    return time.monotonic() - started, None


def test_an_answer_in_time_passes_and_the_connection_is_reused(server: Trickler, session: requests.Session) -> None:
    for _ in range(3):
        resp = session.get(server.url, timeout=2)
        assert resp.json() == {"ok": True}
    assert server.connections == 1


def test_trickled_headers_end_at_the_requests_timeout_though_every_read_is_in_time(
    server: Trickler, session: requests.Session
) -> None:
    server.interval = 0.1  # each read gets a byte well within the 1 s timeout
    took, err = timed(session, server.url, 1)
    assert isinstance(err, http.TotalTimeout)
    assert isinstance(err, requests.Timeout)  # callers retry it as any timeout
    assert str(err) == f"no complete answer from {server.url} within 1s"
    assert 0.9 < took < 2.0


class _StarvedTimer:
    """A deadline timer whose thread never gets the CPU in time: what a busy machine does to it."""

    def __init__(self, interval: float, function: Callable[[], None]) -> None:
        self.daemon, self.name = True, ""

    def start(self) -> None:
        pass

    def cancel(self) -> None:
        pass


def test_a_read_timeout_at_the_total_is_the_total_deadline_though_its_timer_has_not_run(
    server: Trickler, session: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threading, "Timer", _StarvedTimer)
    server.interval = 10.0  # not one byte within the timeout: the socket's own read times out at 1 s
    took, err = timed(session, server.url, 1)
    assert isinstance(err, http.TotalTimeout), err
    assert str(err) == f"no complete answer from {server.url} within 1s"
    assert took >= 1.0


def test_a_trickled_body_ends_at_the_requests_timeout_too(server: Trickler, session: requests.Session) -> None:
    server.interval, server.fast = 0.2, len(ANSWER) - len(BODY)  # the headers at once, the body one byte at a time
    took, err = timed(session, server.url, 1)
    assert isinstance(err, http.TotalTimeout), err
    assert 0.9 < took < 2.0


def test_a_pooled_connection_is_bounded_as_a_new_one(server: Trickler, session: requests.Session) -> None:
    assert session.get(server.url, timeout=2).status_code == 200
    server.interval = 0.1
    took, err = timed(session, server.url, 1)
    assert isinstance(err, http.TotalTimeout)
    assert took < 2.0
    assert server.connections == 1
    server.interval = 0.0
    assert session.get(server.url, timeout=2).status_code == 200  # a dead connection is not reused


def test_a_connect_and_read_timeout_pair_is_a_total_of_both(server: Trickler, session: requests.Session) -> None:
    server.interval = 0.1
    took, err = timed(session, server.url, (0.5, 0.5))  # type: ignore[arg-type]
    assert isinstance(err, http.TotalTimeout)
    assert 0.9 < took < 2.0


def test_once_the_run_is_stopping_a_request_gets_the_cap_and_none_is_sent_past_the_cleanup_time(
    server: Trickler, session: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deadline, "CAP", 0.5)
    monkeypatch.setattr(deadline, "CLEANUP", 1.2)
    server.interval = 0.1
    deadline.wind_down("interrupted by SIGTERM")
    took, err = timed(session, server.url, 30)
    assert isinstance(err, http.TotalTimeout)
    assert "within 0.5s (capped while the run is stopping: interrupted by SIGTERM)" in str(err)
    assert took < 1.0
    # Time must pass: the cleanup's 1.2 s used up, as the run's own clock says.
    waits.wait_for("the cleanup's time used up", lambda: deadline.limit(30) == 0, deadline.CLEANUP, why="its cleanup")
    took, err = timed(session, server.url, 30)
    assert took < 0.1
    assert str(err) == (
        f"GET {server.url} not made: the run is stopping (interrupted by SIGTERM) and its 1.2s for cleanup are used up"
    )


def test_limit_is_the_callers_own_until_the_run_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    deadline.reset()
    assert deadline.limit(30) == 30
    assert deadline.limit(None) is None
    assert deadline.stopping() == ""
    deadline.wind_down("interrupted by SIGTERM")
    deadline.wind_down("past its bound")  # the first reason stays
    try:
        assert deadline.stopping() == "interrupted by SIGTERM"
        assert deadline.limit(30) == deadline.CAP
        assert deadline.limit(1) == 1
        assert deadline.limit(None) == deadline.CAP
    finally:
        deadline.reset()
