"""HTTP requests with a total deadline: connect, TLS, send, headers and body, all within the request's timeout.

requests' `timeout` bounds each socket read, not the request: a server that
sends one byte a second answers every read in time and holds the request, the
run and the cluster-wide issuer lock forever. So every session rgwtls makes
mounts `Adapter`, which runs a watchdog per request: the connections the
request uses register their sockets with it (urllib3's pools are given
connection classes that do), and at the deadline the watchdog shuts those
sockets down. The blocked read returns, and the request fails with
`TotalTimeout`: "no complete answer from URL within Ns".

The body is read inside the adapter, under the same deadline (requests would
read it later, in Session.send); only a caller asking for `stream=True` reads
it itself, unbounded. The watchdog holds its own duplicate of each socket's
descriptor, so it never shuts down a descriptor the kernel has since given to
another socket, and it can stop a TLS handshake, whose socket object urllib3
swaps for the wrapped one midway. Proxied requests (a ProxyManager's pools,
the CONNECT tunnel) go through the same connection classes.

Once the run is stopping (see `rgwtls.deadline`), each request gets at most
the wind-down's cap, and none is sent once the cleanup's time is used up.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

from rgwtls import deadline


class TotalTimeout(requests.exceptions.Timeout):
    """The request did not finish (headers and body) within its total deadline, or was not sent at all."""


class TooLarge(requests.exceptions.RequestException):
    """The answer's body was longer than the adapter's `max_bytes`: a hostile server's, cut off there."""


class _Capped:
    """A response's raw stream that stops at `cap` decoded bytes: a fast server fills no memory within the deadline."""

    def __init__(self, raw: Any, cap: int, where: str) -> None:
        self._raw, self._cap, self._where = raw, cap, where

    def stream(self, amt: int = 2**16, decode_content: bool | None = None) -> Any:
        told = self._raw.headers.get("Content-Length", "") if getattr(self._raw, "headers", None) else ""
        if told.isdigit() and int(told) > self._cap:
            self._raw.close()
            raise TooLarge(f"the answer of {self._where} is {told} bytes long, more than the {self._cap} allowed")
        seen = 0
        for chunk in self._raw.stream(amt, decode_content=decode_content):
            seen += len(chunk)
            if seen > self._cap:
                self._raw.close()
                raise TooLarge(f"the answer of {self._where} is longer than the {self._cap} bytes allowed")
            yield chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class _Watch:
    """One request's watchdog: the sockets it uses, shut down if the deadline passes first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self.fired = False
        self._closed = False

    def add(self, sock: Any) -> None:
        try:
            fd = sock.fileno()
        except (OSError, ValueError):
            return
        if fd < 0:
            return
        # A plain socket on a duplicate descriptor: the same connection, whatever wraps the original.
        dup = socket.fromfd(fd, sock.family, sock.type)
        with self._lock:
            if self._closed:
                dup.close()
                return
            self._socks.append(dup)
            fired = self.fired
        if fired:
            _shut(dup)

    def fire(self) -> None:
        with self._lock:
            if self._closed:
                return
            self.fired = True
            socks = list(self._socks)
        for s in socks:
            _shut(s)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            socks, self._socks = self._socks, []
        for s in socks:
            s.close()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_current = threading.local()


def _register(sock: Any) -> None:
    watch: _Watch | None = getattr(_current, "watch", None)
    if watch is not None and sock is not None:
        watch.add(sock)


class _Conn(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _register(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        # A connection from the pool, connected by an earlier request.
        _register(self.sock)
        super().request(*args, **kwargs)


class _TlsConn(_Conn, HTTPSConnection):
    """The same watch on a TLS connection: _Conn's methods come first, then HTTPSConnection's."""


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Conn


class _TlsPool(HTTPSConnectionPool):
    ConnectionCls = _TlsConn


POOLS: dict[str, type[HTTPConnectionPool]] = {"http": _Pool, "https": _TlsPool}


def _where(url: str | None) -> str:
    """scheme://host:port/path: the URL without its query, which may be long and says nothing to the operator."""
    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _seconds(timeout: Any) -> float | None:
    """The request's total from requests' timeout: a number, or (connect, read), whose sum bounds both."""
    if isinstance(timeout, tuple):
        parts = [float(t) for t in timeout if t is not None]
        return sum(parts) if len(parts) == len(timeout) else None
    return None if timeout is None else float(timeout)


class Adapter(HTTPAdapter):
    """requests' adapter, with the request's timeout as its total deadline."""

    # The most body an answer may have (decoded), or None: any. Set on an
    # adapter that fetches from a server nobody vouches for (a CRL's).
    max_bytes: int | None = None

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        response: requests.Response = super().build_response(req, resp)
        if self.max_bytes is not None:
            response.raw = _Capped(response.raw, self.max_bytes, _where(req.url))
        return response

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS has pools of its own
            manager.pool_classes_by_scheme = POOLS
        return manager

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        total = deadline.limit(_seconds(timeout))
        where = _where(request.url)
        if total is not None and total <= 0:
            raise TotalTimeout(f"{request.method} {where} {deadline.used_up()}", request=request)
        if total is None:
            return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        watch = _Watch()
        timer = threading.Timer(total, watch.fire)
        timer.daemon = True
        timer.name = "http-deadline"
        _current.watch = watch
        started = time.monotonic()
        timer.start()
        try:
            resp: requests.Response = super().send(
                request, stream=True, timeout=total, verify=verify, cert=cert, proxies=proxies
            )
            if not stream:
                resp.content  # noqa: B018 - the body, read under the deadline
        except requests.RequestException as e:
            # A per-read timeout at the wind-down's cap is the same: no complete answer in time. So is
            # one at the total itself, which on a busy machine may come before the timer's thread runs.
            late = time.monotonic() - started >= total or deadline.stopping()
            if watch.fired or (isinstance(e, requests.Timeout) and late):
                raise TotalTimeout(self._late(where, total), request=request) from None
            raise
        finally:
            timer.cancel()
            _current.watch = None
            watch.close()
        if watch.fired:
            # The deadline passed as the answer ended: a body read to EOF may be cut short.
            resp.close()
            raise TotalTimeout(self._late(where, total), request=request)
        return resp

    @staticmethod
    def _late(where: str, total: float) -> str:
        why = deadline.stopping()
        during = f" (capped while the run is stopping: {why})" if why else ""
        return f"no complete answer from {where} within {total:g}s{during}"


def mount(session: requests.Session, adapter: Adapter | None = None) -> requests.Session:
    """Every request of `session` gets its total deadline."""
    adapter = adapter or Adapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def session() -> requests.Session:
    """A requests session whose every request has a total deadline."""
    return mount(requests.Session())
