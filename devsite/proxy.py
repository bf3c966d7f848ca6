"""A real HTTP proxy, Debian's tinyproxy, standing in for a site's outbound proxy.

Each one runs on its own free 127.0.0.1 port with its own config and access
log in its own directory, and is stopped by its process handle. `hosts` gives
it names that only it can resolve: it runs in a mount namespace of its own
with its own /etc/hosts, so a name such as Pebble's `ONLY_VIA_PROXY` is
reachable through the proxy and unknown to anything that tries directly.
"""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devsite.ports import free_port
from devsite.proc import Server

_CONNECT = re.compile(r"Request \(file descriptor \d+\): CONNECT (\S+) HTTP/")


@dataclass
class Tinyproxy:
    server: Server
    port: int
    access_log: Path
    user: str
    password: str

    @property
    def url(self) -> str:
        """The proxy as acme.proxy names it, with its user if it wants one (never the password)."""
        return f"http://{self.user}@127.0.0.1:{self.port}" if self.user else self.bare_url

    @property
    def bare_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        try:
            return self.access_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def connects(self) -> list[str]:
        """Every CONNECT target (host:port) asked of this proxy so far, in order."""
        return _CONNECT.findall(self.log_text())

    def stop(self) -> None:
        self.server.stop()


def _config(port: int, log: Path, user: str, password: str, connect_ports: tuple[int, ...]) -> str:
    lines = [
        f"Port {port}",
        "Listen 127.0.0.1",
        "Timeout 30",
        f'LogFile "{log}"',
        # Connect: one line per client connection and per request, CONNECT included.
        "LogLevel Connect",
        "MaxClients 50",
        "Allow 127.0.0.1",
        "DisableViaHeader Yes",
    ]
    # No ConnectPort line: CONNECT to any port. With some: to those only, else 403.
    lines += [f"ConnectPort {p}" for p in connect_ports]
    if user:
        lines.append(f"BasicAuth {user} {password}")
    return "\n".join(lines) + "\n"


@contextmanager
def tinyproxy(
    workdir: Path,
    user: str = "",
    password: str = "",
    connect_ports: tuple[int, ...] = (),
    hosts: Mapping[str, str] | None = None,
) -> Iterator[Tinyproxy]:
    binary = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "tinyproxy.conf"
    conf.write_text(_config(port, workdir / "access.log", user, password, connect_ports))
    conf.chmod(0o600)  # it holds the proxy's password
    argv: list[str] = [binary, "-d", "-c", str(conf)]
    if hosts:
        hosts_file = workdir / "hosts"
        entries = {"localhost": "127.0.0.1", **hosts}
        hosts_file.write_text("".join(f"{ip} {name}\n" for name, ip in entries.items()))
        # unshare and sh both exec: the process we hold is tinyproxy itself.
        script = 'mount --bind "$1" /etc/hosts && shift && exec "$@"'
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(hosts_file), *argv]
    server = Server("tinyproxy", argv, workdir / "tinyproxy.out", cwd=workdir)
    proxy = Tinyproxy(server, port, workdir / "access.log", user, password)
    server.start()
    try:
        server.wait_until(lambda: _listening(port), what="listening")
        yield proxy
    finally:
        server.stop()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
