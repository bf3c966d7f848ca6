"""HAProxy's runtime API: one command per connection on its stats socket, with a total deadline.

This module only talks to the socket: it sends a command (with its payload)
and reads the answer. What to send, and what an answer means for the swap,
is rgwtls.activate's, which owns the swap-and-verify loop. Every answer is
text ending in an empty line, and the socket is closed after it; each call
has one deadline for connect, send and every read, so a HAProxy that hangs
cannot hold a deploy.
"""

from __future__ import annotations

import socket
import time

from rgwtls import scrub
from rgwtls.errors import DeployError

# cephadm's ingress writes its stats socket at `level operator`, which may show but not set certificates.
ADMIN_LINE = "stats socket {socket} mode 600 level admin"
# HAProxy's refusals are one short line; more is something else answering.
ANSWER = 300


class Runtime:
    """The runtime API at `path`; each method is one connection, bounded by `timeout` in total."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path, self.timeout = path, timeout

    def ask(self, command: str, payload: str | None = None) -> str:
        """The answer to one command, without its closing empty line; raises DeployError in one line."""
        line = command if payload is None else f"{command} <<\n{payload_lines(payload)}\n"
        deadline = time.monotonic() + self.timeout
        where = f"HAProxy's runtime API at {self.path}"
        chunks: list[bytes] = []
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.path)
                s.settimeout(max(0.001, deadline - time.monotonic()))
                s.sendall(line.encode() + b"\n")
                while True:
                    s.settimeout(max(0.001, deadline - time.monotonic()))
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except FileNotFoundError:
            raise DeployError(
                f"{where}: no such socket; add '{ADMIN_LINE.format(socket=self.path)}' to HAProxy's global "
                "section and reload it, or set deploy.haproxy_socket; nothing was changed"
            ) from None
        except PermissionError:
            raise DeployError(
                f"{where}: permission denied for this user; run rgwtls deploy as the socket's owner (root) or give "
                "it the socket's group with a matching 'mode'/'group' on the stats socket line; nothing was changed"
            ) from None
        except ConnectionRefusedError:
            raise DeployError(
                f"{where}: nothing listens there (is HAProxy running, and is this its stats socket?); "
                "nothing was changed"
            ) from None
        except TimeoutError:
            raise DeployError(f"{where}: no answer to '{command}' within {self.timeout:g}s") from None
        except OSError as e:
            raise DeployError(f"{where}: {e.strerror or e}") from None
        # Whatever listens there may be no HAProxy, or a wrapper: bytes that are not UTF-8 stay visible as escapes.
        return b"".join(chunks).decode(errors="backslashreplace").rstrip("\n")

    def level(self) -> str:
        return self.ask("show cli level").strip()

    def certificates(self) -> tuple[list[str], list[str]]:
        """The files HAProxy has loaded, and those with a transaction open (`show ssl cert`)."""
        loaded: list[str] = []
        pending: list[str] = []
        section = ""
        for raw in self.ask("show ssl cert").splitlines():
            text = raw.strip()
            if text.startswith("#"):
                section = text.lstrip("# ")
            elif text and section == "transaction":
                pending.append(text.removeprefix("*"))
            elif text:
                loaded.append(text)
        return loaded, pending


def payload_lines(pem: str) -> str:
    """The PEM without its blank lines: an empty line ends the payload of a runtime API command."""
    return "\n".join(line for line in pem.splitlines() if line.strip())


def one_line(answer: str) -> str:
    """An answer as part of a line: its lines joined, then cleaned (no key material, no control byte, bounded)."""
    return scrub.clean("; ".join(line.strip() for line in answer.splitlines() if line.strip()) or "no answer", ANSWER)
