"""Debian's prometheus-node-exporter with only the textfile collector, on a free loopback port.

The test reads what a real Prometheus would scrape from an issuer host's
textfile directory, and node_exporter's own view of it: its gathering errors
(`promhttp_metric_handler_errors_total`) and the collector's `node_textfile_scrape_error`.
Run by hand: `python -m devsite.node_exporter DIR` serves DIR until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from devsite.ports import free_port
from devsite.proc import Server

BINARY = "prometheus-node-exporter"


class NodeExporter:
    def __init__(self, textfile_dir: Path, workdir: Path) -> None:
        binary = shutil.which(BINARY) or f"/usr/bin/{BINARY}"
        self.port = free_port()
        self.textfile_dir = textfile_dir
        self.server = Server(
            "node_exporter",
            [
                binary,
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--collector.disable-defaults",
                "--collector.textfile",
                f"--collector.textfile.directory={textfile_dir}",
            ],
            workdir / "node_exporter.log",
            cwd=workdir,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self) -> NodeExporter:
        self.server.start()
        self.server.wait_until(lambda: bool(self.scrape()), what="serving /metrics")
        return self

    def stop(self) -> None:
        self.server.stop()

    def scrape(self) -> str:
        """One scrape, as Prometheus does it (text format)."""
        req = urllib.request.Request(self.url, headers={"Accept": "text/plain;version=0.0.4"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return str(resp.read().decode())

    def log_tail(self, lines: int = 30) -> str:
        return self.server.log_tail(lines)


@contextlib.contextmanager
def node_exporter(textfile_dir: Path, workdir: Path | None = None) -> Iterator[NodeExporter]:
    """A started node_exporter reading `textfile_dir`; stopped (by its handle) on exit."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="node_exporter-")))
        ne = NodeExporter(textfile_dir, workdir)
        stack.callback(ne.stop)
        yield ne.start()


if __name__ == "__main__":
    with node_exporter(Path(sys.argv[1])) as ne:
        print(f"node_exporter on {ne.url}, reading {ne.textfile_dir}; Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
