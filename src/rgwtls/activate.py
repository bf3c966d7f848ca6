"""How the server takes a new certificate without a restart (`deploy.activate`).

- "restart" (the default): deploy restarts the server under a restart slot; nothing here.
- "haproxy": HAProxy in front of the gateways swaps it in memory through its
  runtime API, after deploy wrote the file HAProxy loads at its start. No
  restart slot: a swap drops no connection, so every frontend may swap at once.
- "self": the server re-reads its file by itself (radosgw's `ssl_reload`);
  deploy waits up to `deploy.self_reload_wait` seconds for it to be served,
  and only then restarts it under a slot, with one NOTICE.

Every way verifies by handshake at `deploy.verify_endpoint`, never by an
answer alone, and a haproxy swap that is not served is swapped back, file
and memory. The loop (swap, verify, swap back) is all here: rgwtls.haproxy
only sends a command and reads its answer. HAProxy (2.2 and later) replaces
a certificate in memory with `set ssl cert PATH` (the PEM as a payload) then
`commit ssl cert PATH`; a failed commit leaves a transaction open, which
`abort ssl cert PATH` drops, so HAProxy goes on serving what it served. The
API never writes to disk: the file at PATH is deploy's to write first, so
that a restarted HAProxy loads the same certificate. Crash-only: a run killed after the file was written leaves the
file right but not served, and the next run (which finds it installed and
not served) swaps it, as it would restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from rgwtls import files, scrub
from rgwtls.backoff import Backoff
from rgwtls.config import DeployConfig
from rgwtls.errors import DeployError, RgwtlsError
from rgwtls.haproxy import ADMIN_LINE, Runtime, one_line
from rgwtls.log import notice
from rgwtls.probe import pem_fingerprint, served_fingerprint, server_name
from rgwtls.targets import Target

if TYPE_CHECKING:
    from rgwtls.revoked import RevokedList

log = logging.getLogger(__name__)

# Each runtime API command, connect to answer; HAProxy answers in milliseconds.
RUNTIME_TIMEOUT = 10.0
# What status and the metrics count, by method: a "self" that was restarted counts as self-then-restart.
RECORD = "activations.json"
COUNTED = ("restart", "haproxy", "self", "self-then-restart")


def runtime(d: DeployConfig) -> Runtime:
    return Runtime(d.haproxy_socket, RUNTIME_TIMEOUT)


def preflight(d: DeployConfig) -> None:
    """haproxy: the socket answers at level admin and has loaded deploy.path; else one line, nothing changed."""
    if d.activate != "haproxy":
        return
    api = runtime(d)
    level = api.level()
    if level != "admin":
        raise DeployError(
            f"HAProxy's runtime API at {d.haproxy_socket} is at level {one_line(level or 'unknown')}, and replacing a "
            f"certificate needs level admin (cephadm's ingress writes its socket at level operator); change that "
            f"stats socket line to '{ADMIN_LINE.format(socket=d.haproxy_socket)}' and reload HAProxy; "
            "nothing was changed"
        )
    loaded, pending = api.certificates()
    if d.path not in loaded:
        shown = one_line(", ".join(loaded) or "none")
        raise DeployError(
            f"HAProxy has not loaded {d.path} (show ssl cert lists: {shown}); add 'crt {d.path}' to the bind "
            "line of the frontend that serves these names and reload HAProxy once, or set deploy.path to "
            "the file it loads; nothing was changed"
        )
    if d.path in pending:
        # A run killed between set and commit left it open: this run's set replaces it anyway; drop it to start clean.
        log.info("HAProxy has an uncommitted transaction for %s; aborting it before the swap", d.path)
        api.ask(f"abort ssl cert {d.path}")


def install(
    d: DeployConfig,
    target: Target,
    built: bytes,
    installed: bytes | None,
    names: tuple[str, ...],
    backoff: Backoff,
    revoked: RevokedList | None = None,
) -> bool:
    """deploy.activate haproxy or self: install, then let the server take it; False: restart it after all.

    A haproxy swap that fails (refused, or not served, and swapped back) goes
    into the backoff as a failed restart does: it would fail on every cron run.
    """
    try:
        target.install(built, installed)
    except RgwtlsError as e:
        restore_quietly(target, installed)
        raise e from None
    from rgwtls.validate import unless_revoked

    put_back = unless_revoked(installed, revoked, partial(target.restore, installed))
    if not without_restart(d, names, built, installed, put_back, backoff.failed):
        return False
    record(d, d.activate)
    return True


def restore_quietly(target: Target, previous: bytes | None) -> None:
    """After a failed install: each file is replaced whole, so only a layout of two may need it."""
    try:
        if target.installed() != previous:
            target.restore(previous)
    except RgwtlsError as e:
        # deploy's line, as the install it follows.
        logging.getLogger("rgwtls.deploy").warning("could not put the previous file back: %s", e)


def without_restart(
    d: DeployConfig,
    names: tuple[str, ...],
    new: bytes,
    previous: bytes | None,
    put_back: Callable[[], None],
    failed: Callable[[RgwtlsError], str] = lambda cause: "",
) -> bool:
    """After the file is installed: True once the server serves `new` with no restart; False: restart it.

    haproxy either serves it or raises, after putting the previous certificate
    back (`put_back` restores the file, then memory is swapped back); "self"
    returns False when the server did not pick it up within the wait.
    `failed` records a swap that failed (deploy's backoff, which a signal does
    not count) and gives the end of its line, as for a restart that failed.
    """
    want = pem_fingerprint(new.decode())
    if d.activate == "self":
        try:
            seen = served_within(d, names, want, d.self_reload_wait)
        except RgwtlsError as cause:  # a signal while waiting: the previous file back, for the server to re-read
            try:
                put_back()
            except RgwtlsError as e:
                raise DeployError(f"{cause}; could not put the previous file back ({e})") from None
            raise DeployError(f"{cause}; put the previous file back, which the server re-reads") from None
        if seen is None:
            log.info("%s picked up certificate %s by itself", d.verify_endpoint, want[:16])
            return True
        notice(
            log,
            "%s did not pick up certificate %s by itself within %gs (%s); restarting it",
            d.verify_endpoint,
            want[:16],
            d.self_reload_wait,
            seen,
        )
        return False
    api = runtime(d)
    try:
        log.info("swapping certificate %s into HAProxy at %s for %s", want[:16], d.haproxy_socket, d.path)
        swap(api, d.path, new.decode())
        seen = served_within(d, names, want, d.verify_timeout)
        if seen is not None:
            raise DeployError(
                f"{d.verify_endpoint} did not serve certificate {want[:16]} for {server_name(d, names)} within "
                f"{d.verify_timeout:g}s of HAProxy's commit ({seen})"
            )
    except RgwtlsError as cause:
        _swap_back(d, names, api, previous, put_back, cause, failed(cause))
    return True


def _swap_back(
    d: DeployConfig,
    names: tuple[str, ...],
    api: Runtime,
    previous: bytes | None,
    put_back: Callable[[], None],
    cause: RgwtlsError,
    after: str,
) -> NoReturn:
    """The previous file back, then the previous certificate swapped back and checked; `after` ends the line."""
    try:
        put_back()
    except RgwtlsError as e:
        raise DeployError(
            f"{cause}; could not put the previous file back ({e}): this frontend needs attention now{after}"
        ) from None
    if previous is None:
        raise DeployError(f"{cause}; removed the new file again (there was none before){after}") from None
    try:
        old = pem_fingerprint(previous.decode())
        swap(api, d.path, previous.decode())
        seen = served_within(d, names, old, d.verify_timeout)
    except (RgwtlsError, ValueError) as again:
        raise DeployError(
            f"{cause}; put the previous file back, but could not swap it into HAProxy ({again}): "
            f"this frontend needs attention now{after}"
        ) from None
    if seen is not None:
        raise DeployError(
            f"{cause}; swapped the previous certificate back, but it is not served either ({seen}): "
            f"this frontend needs attention now{after}"
        ) from None
    raise DeployError(
        f"{cause}; put the previous certificate back in {d.path} and in HAProxy: it is served again{after}"
    ) from None


def swap(api: Runtime, path: str, pem: str) -> None:
    """Swap the certificate at `path` for `pem` in HAProxy's memory; on any failure, drop the transaction.

    The key is remembered by rgwtls.scrub first: a socket that echoes
    what it was sent must not get its lines into the error line.
    """
    scrub.remember(pem)
    answer = api.ask(f"set ssl cert {path}", pem)
    if not answer.startswith("Transaction "):
        _abort_quietly(api, path)
        raise DeployError(f"HAProxy refused the new PEM for {path}: {one_line(answer)}")
    answer = api.ask(f"commit ssl cert {path}")
    if "Success!" not in answer:
        _abort_quietly(api, path)
        raise DeployError(f"HAProxy refused to commit the new PEM for {path}: {one_line(answer)}")


def _abort_quietly(api: Runtime, path: str) -> None:
    with contextlib.suppress(DeployError):
        api.ask(f"abort ssl cert {path}")


def served_within(d: DeployConfig, names: tuple[str, ...], want: str, seconds: float) -> str | None:
    """None once `want` is served at verify_endpoint; else, after `seconds`, what was served instead."""
    sni = server_name(d, names)
    deadline = time.monotonic() + seconds
    seen = "no handshake tried"
    while True:
        try:
            got = served_fingerprint(d.verify_endpoint, sni, timeout=min(5.0, max(0.1, seconds)))
        except (OSError, ValueError) as e:
            seen = f"handshake failed: {e}"
        else:
            if got == want:
                return None
            seen = f"it serves certificate {got[:16]}"
        if time.monotonic() >= deadline:
            return seen
        time.sleep(0.1 if d.activate != "self" else 0.5)


def record(d: DeployConfig, method: str) -> None:
    """Count one verified activation in this host's state, for status and the metrics; never fails a deploy."""
    counts = recorded(d)
    counts[method] = counts.get(method, 0) + 1
    try:
        Path(d.state_dir).mkdir(parents=True, exist_ok=True)
        files.atomic_write(
            Path(d.state_dir) / RECORD,
            json.dumps(counts, sort_keys=True).encode() + b"\n",
            files.Access(0o644, os.getuid(), os.getgid()),
        )
    except (RgwtlsError, OSError) as e:
        log.warning("could not count the activation in %s: %s", Path(d.state_dir) / RECORD, e)


def recorded(d: DeployConfig) -> dict[str, int]:
    """This host's activations by method, as `record` kept them; an unreadable record counts none."""
    try:
        raw = files.read(Path(d.state_dir) / RECORD)
        doc = json.loads(raw) if raw else {}
    except (RgwtlsError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: v for k, v in doc.items() if k in COUNTED and isinstance(v, int) and not isinstance(v, bool)}


def plan(d: DeployConfig, restart_line: str) -> str:
    """What deploy would run to activate, for a dry run."""
    if d.activate == "haproxy":
        return f"set ssl cert {d.path} and commit ssl cert {d.path} on {d.haproxy_socket} (no restart)"
    if d.activate == "self":
        return f"nothing for up to {d.self_reload_wait:g}s while the server re-reads its file, then: {restart_line}"
    return restart_line


def describe(d: DeployConfig) -> str:
    """How this host activates a new certificate, for status."""
    if d.activate == "haproxy":
        return f"haproxy: swapped in memory through {d.haproxy_socket}, no restart"
    if d.activate == "self":
        return f"self: the server re-reads its file; restarted if not served within {d.self_reload_wait:g}s"
    return f"restart: {d.restart_command}"
