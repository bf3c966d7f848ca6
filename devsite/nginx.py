"""Debian's nginx terminating TLS in front of a radosgw, reloaded gracefully with `nginx -s reload`.

A graceful reload is a restart command too: the master re-reads its
configuration and certificate, starts new workers and lets the old ones finish
their requests, on the same listening socket. The master runs in the
foreground (`daemon off`: the process we hold is the master, and its PID stays
across reloads) on a free 127.0.0.1 port, with its own config, pid file, logs
and temporary directories in its own directory; it is stopped by its handle.
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


class Nginx:
    """nginx on 127.0.0.1:port, serving `pem` (key, cert and chain in one file) and proxying to the backend."""

    def __init__(self, workdir: Path, backend_port: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.pem = workdir / "nginx.pem"
        fd = os.open(self.pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(pem_file(DOMAINS, days_before=30))
        self.conf = workdir / "nginx.conf"
        self.binary = shutil.which("nginx") or "/usr/sbin/nginx"
        tmp = workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        self.conf.write_text(f"""daemon off;
user root;
worker_processes 2;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log notice;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{self.port} ssl;
        ssl_certificate {self.pem};
        ssl_certificate_key {self.pem};
        location / {{
            proxy_pass https://127.0.0.1:{backend_port};
            proxy_ssl_verify off;
            proxy_set_header Host $host;
        }}
    }}
}}
""")
        self.server = Server("nginx", [self.binary, "-p", workdir, "-c", self.conf], workdir / "nginx.out", cwd=workdir)

    @property
    def reload_command(self) -> str:
        """deploy.restart_command for this nginx: a graceful reload of its master."""
        return f"{self.binary} -p {self.workdir} -c {self.conf} -s reload"

    @property
    def pid(self) -> int:
        return self.server.pid

    def start(self) -> Nginx:
        self.server.start()
        self.server.wait_until(self._listening, what="listening")
        return self

    def _listening(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def running(self) -> bool:
        return self.server.running()

    def stop(self) -> None:
        self.server.stop()
