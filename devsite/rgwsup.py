#!/usr/bin/env python3
"""A tiny supervisor for radosgw, so that `deploy`'s restart command can restart it.

The test starts `rgwsup.py serve SOCK -- radosgw ...` and holds its handle;
radosgw is its child. `rgwsup.py ctl SOCK restart` (the restart command the
tests configure, standing in for systemctl) stops the child and starts it
again, and returns once it is started, as `systemctl restart` does. On
SIGTERM the supervisor stops its child and exits. Standalone on purpose: the
restart command runs it by path, outside the test package.

Like systemd, it outlives its clients: a request once received is carried
out whether or not its client is still there for the answer (tests SIGKILL a
deploy, and its `ctl`, in the middle of a restart). It serves one connection
at a time, so two restarts asked at once are done one after the other.

Requests: `restart`, `restart PEM` (start once with another ssl_certificate,
to play a gateway that comes up serving the wrong certificate), `pid`,
`count` (restarts so far).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import sys
import time


def _start(argv: list[str], pem: str | None = None) -> subprocess.Popen[bytes]:
    if pem is not None:
        argv = [
            a.replace(a[a.index("ssl_certificate=") :].split()[0], f"ssl_certificate={pem}")
            if "ssl_certificate=" in a
            else a
            for a in argv
        ]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL)


def _wait_dropped(child: subprocess.Popen[bytes], argv: list[str], timeout: float = 30.0) -> None:
    """Return once the child runs as its `--setuser` user, or died: started, as systemd means it.

    radosgw 20 listens a moment before it drops from root; a client must not
    meet the new gateway still as root.
    """
    if "--setuser" not in argv:
        return
    uid = str(pwd.getpwnam(argv[argv.index("--setuser") + 1]).pw_uid)
    deadline = time.monotonic() + timeout
    while child.poll() is None and time.monotonic() < deadline:
        try:
            with open(f"/proc/{child.pid}/status") as f:
                status = f.read().splitlines()
        except OSError:
            return
        if any(line.split()[1:2] == [uid] for line in status if line.startswith("Uid:")):
            return
        time.sleep(0.01)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _answer(
    conn: socket.socket, child: subprocess.Popen[bytes], argv: list[str], restarts: int
) -> tuple[subprocess.Popen[bytes], int]:
    """Serve one connection; the child and restart count after it.

    A client that hung up, before or after its request, costs it nothing: the
    request it sent is done, the answer it no longer waits for is dropped.
    """
    try:
        words = conn.recv(4096).decode(errors="replace").split()
    except OSError:
        return child, restarts
    if words[:1] == ["restart"]:
        _stop(child)
        child = _start(argv, words[1] if len(words) > 1 else None)
        _wait_dropped(child, argv)
        restarts += 1
        answer = f"ok {child.pid}\n"
    elif words[:1] == ["pid"]:
        answer = f"ok {child.pid}\n"
    elif words[:1] == ["count"]:
        answer = f"ok {restarts}\n"
    elif not words:
        return child, restarts  # connected and left without asking anything
    else:
        answer = "error unknown request\n"
    with contextlib.suppress(OSError):
        conn.sendall(answer.encode())
    return child, restarts


def serve(sock_path: str, argv: list[str]) -> int:
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    child = _start(argv)
    restarts = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        if os.path.exists(sock_path):
            os.unlink(sock_path)
        srv.bind(sock_path)
        srv.listen(8)
        srv.settimeout(0.1)
        try:
            while not stopping:
                child.poll()  # reap a radosgw that died on its own
                try:
                    conn, _ = srv.accept()
                except (TimeoutError, InterruptedError):
                    continue
                with conn:
                    conn.settimeout(5)
                    child, restarts = _answer(conn, child, argv, restarts)
        finally:
            _stop(child)
            os.unlink(sock_path)
    return 0


def ctl(sock_path: str, request: list[str]) -> int:
    deadline = time.monotonic() + 30
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        # Requests wait behind a restart in progress, which under load takes a while.
        s.settimeout(60)
        while True:
            try:
                s.connect(sock_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    print(f"rgwsup: no supervisor at {sock_path}", file=sys.stderr)
                    return 1
                time.sleep(0.05)
        s.sendall(" ".join(request).encode())
        answer = s.recv(4096).decode().strip()
    print(answer)
    return 0 if answer.startswith("ok") else 1


def main() -> int:
    if len(sys.argv) >= 4 and sys.argv[1] == "serve" and sys.argv[3] == "--":
        return serve(sys.argv[2], sys.argv[4:])
    if len(sys.argv) >= 4 and sys.argv[1] == "ctl":
        return ctl(sys.argv[2], sys.argv[3:])
    print("usage: rgwsup.py serve SOCK -- ARGV... | rgwsup.py ctl SOCK restart [PEM]|pid|count", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
