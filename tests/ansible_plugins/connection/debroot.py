"""An Ansible connection into a scripts/debroot overlay: a fresh Debian 12 host for the role's package tests.

Each command runs through `scripts/debroot run LAYER`, in the cached bookworm
root under the layer's changes; /tmp and the repo are the host's, as on the
machine. The layer is the host's `ansible_host`.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

from ansible.plugins.connection import ConnectionBase  # type: ignore[import-untyped]

DOCUMENTATION = """
    name: debroot
    short_description: run tasks in a scripts/debroot overlay of the Debian 12 root
    description:
        - Runs every command chrooted in the overlay whose upper layer is the host's address.
    author: rgwtls tests
    options:
        remote_addr:
            description: The overlay's layer directory.
            type: str
            vars:
                - name: ansible_host
"""

DEBROOT = str(Path(__file__).resolve().parents[3] / "scripts" / "debroot")


class Connection(ConnectionBase):  # type: ignore[misc]  # untyped base
    transport = "debroot"
    has_pipelining = True

    def _connect(self) -> Connection:
        self._connected = True
        return self

    def _run(self, argv: list[str], stdin: bytes | None) -> tuple[int, bytes, bytes]:
        layer = self.get_option("remote_addr")
        res = subprocess.run([DEBROOT, "run", layer, *argv], input=stdin or b"", capture_output=True, check=False)
        return res.returncode, res.stdout, res.stderr

    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = True) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        return self._run(["/bin/sh", "-c", cmd], in_data)

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        code, _, err = self._run(["/bin/sh", "-c", f"cat > {shlex.quote(out_path)}"], Path(in_path).read_bytes())
        if code != 0:
            raise OSError(f"debroot: could not write {out_path}: {err.decode(errors='replace')}")

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        code, out, err = self._run(["cat", in_path], None)
        if code != 0:
            raise OSError(f"debroot: could not read {in_path}: {err.decode(errors='replace')}")
        Path(out_path).write_bytes(out)

    def close(self, *args: Any) -> None:
        self._connected = False
