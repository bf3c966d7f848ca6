"""Debian's HAProxy (2.6) terminating TLS in front of a radosgw, as ceph-ansible's and cephadm's load balancers do.

Each one runs in the foreground (`-db`: the process we hold is HAProxy
itself, so its PID is the one a hot swap must keep) on a free 127.0.0.1 port,
with its own config, its own PEM and two stats sockets in its own directory:
`admin.sock` at `level admin`, what rgwtls needs, and `operator.sock` at
`level operator`, as cephadm's ingress writes it. It is stopped by its handle.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from devsite.certmaker import pem_file
from devsite.ports import free_port
from devsite.proc import Server
from devsite.site import DOMAINS


class HAProxy:
    """HAProxy on 127.0.0.1:port, serving `pem` and passing every request to the backend's HTTPS port."""

    def __init__(self, workdir: Path, backend_port: int, pem: Path | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.backend_port = backend_port
        self.pem = pem or workdir / "haproxy.pem"
        if pem is None:
            # What it served before rgwtls: a certificate from elsewhere, a month old, 0600 from the start.
            fd = os.open(self.pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(pem_file(DOMAINS, days_before=30))
        self.admin_socket = workdir / "admin.sock"
        self.operator_socket = workdir / "operator.sock"
        self.conf = workdir / "haproxy.cfg"
        self.conf.write_text(self.config_text())
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.server = Server("haproxy", [binary, "-db", "-f", self.conf], workdir / "haproxy.out", cwd=workdir)

    def config_text(self, crt: Path | None = None) -> str:
        return f"""global
    stats socket {self.admin_socket} mode 600 level admin
    stats socket {self.operator_socket} mode 600 level operator
    stats timeout 30s
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 5s
frontend s3
    bind 127.0.0.1:{self.port} ssl crt {crt or self.pem}
    default_backend rgw
backend rgw
    server rgw1 127.0.0.1:{self.backend_port} ssl verify none
"""

    @property
    def pid(self) -> int:
        return self.server.pid

    def start(self) -> HAProxy:
        self.server.start()
        self.server.wait_until(self._ready, what="listening with its admin socket")
        return self

    def _ready(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", self.port)) != 0:
                return False
        return self.admin_socket.exists()

    def running(self) -> bool:
        return self.server.running()

    def stop(self) -> None:
        self.server.stop()

    def deploy_settings(self) -> dict[str, object]:
        """The [deploy] keys for a deploy job on this TLS host: its PEM, its admin socket, its port."""
        return {
            "path": str(self.pem),
            "activate": "haproxy",
            "haproxy_socket": str(self.admin_socket),
            "verify_endpoint": f"127.0.0.1:{self.port}",
        }
