"""A restart of radosgw under its slot, the check that it serves the new certificate, and the rollback if not.

deploy (`deploy.activate = "restart"`, or "self" when the server did not
re-read its file) holds a restart slot, confirms the cluster can take a
restart, installs, and then calls `run` and `verify` here; any failure after
the install is `roll_back`'s: the previous certificate back, restarted and
checked again, under the same fence.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from typing import TYPE_CHECKING, NoReturn

from rgwtls.backoff import Backoff
from rgwtls.config import Config, DeployConfig
from rgwtls.errors import DeployError, LockHeld, RgwtlsError, StoreError
from rgwtls.fence import SlotFence
from rgwtls.store import Pool
from rgwtls.targets import Target

if TYPE_CHECKING:
    from collections.abc import Callable

    from rgwtls.revoked import RevokedList

# The logger of the deploy it belongs to: its lines are deploy's.
log = logging.getLogger("rgwtls.deploy")


def confirm_cluster(cfg: Config, pool: Pool, served: str, kept: str) -> None:
    """radosgw cannot start without a mon, nor while its own pools do not answer; the rgwtls pool may.

    A restart then would turn a cluster's trouble into a gateway outage: the
    running radosgw keeps serving through it, so it is left alone.
    """
    keeps = f"certificate {served[:16]}" if is_fingerprint(served) else "what it serves now"
    try:
        pool.confirm_mon()
    except StoreError as e:
        raise DeployError(
            f"{e}; radosgw would not come back after a restart, so {kept}; the gateway keeps serving {keeps}; "
            "the next run tries again"
        ) from None
    from rgwtls.health import radosgw_could_not_start

    problem = radosgw_could_not_start(cfg.ceph, cfg.deploy.rgw_pools)
    if problem:
        raise DeployError(
            f"{problem}: a new radosgw could not start, so {kept}; the gateway keeps serving {keeps}; "
            "the next run tries again"
        )


def put_back_unserved(target: Target, previous: bytes | None) -> str:
    """With "self" and no restart after all: the previous file back in place of the one not re-read; what happened."""
    try:
        target.restore(previous)
    except RgwtlsError as e:
        return (
            f"the new file stays in {target.describe()}, installed but not served "
            f"(could not put the previous one back: {e})"
        )
    if previous is None:
        return f"removed the new file from {target.describe()} again (there was none before), as it is not served"
    return f"put the previous file back in {target.describe()}, as radosgw had not re-read the new one"


def is_fingerprint(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def roll_back(
    d: DeployConfig,
    target: Target,
    previous: bytes | None,
    names: tuple[str, ...],
    cause: RgwtlsError,
    after: str,
    fence: SlotFence,
    revoked: RevokedList | None = None,
) -> NoReturn:
    """Put the previous certificate back, restart under the slot, and check it is served again; `after` ends the line.

    The restart is fenced as the first one was: a run frozen during the
    check, or before this, may have lost its slot to another gateway.
    Never a revoked one: then the new certificate stays installed, and the line says so.
    """
    from rgwtls.certs import first_cert
    from rgwtls.validate import not_put_back

    refused = not_put_back(previous, revoked)
    if refused is not None:
        raise DeployError(f"{cause}; {refused}: this gateway needs attention now{after}") from None
    try:
        target.restore(previous)
    except RgwtlsError as e:
        raise DeployError(
            f"{cause}; could not put the previous certificate back ({e}): this gateway needs attention now{after}"
        ) from None
    old = first_cert(previous)
    if old is None:
        raise DeployError(f"{cause}; removed the new file again (there was none before){after}") from None
    try:
        run(d, fence)
        from rgwtls.probe import fingerprint

        verify(d, names, fingerprint(old))
    except LockHeld as e:
        raise DeployError(
            f"{cause}; put the previous certificate back in place, but {e}: the gateway serves what the failed "
            f"restart left until a run restarts it{after}"
        ) from None
    except RgwtlsError as again:
        raise DeployError(
            f"{cause}; restored the previous certificate, but the gateway does not serve it either "
            f"({again}): this gateway needs attention now{after}"
        ) from None
    raise DeployError(f"{cause}; restored the previous certificate and restarted: it is served again{after}") from None


def restart_argv(d: DeployConfig) -> list[str]:
    return d.restart_argv(os.uname().nodename.split(".")[0])


def restart_line(d: DeployConfig) -> str:
    return shlex.join(restart_argv(d))


def slot_fence(d: DeployConfig, confirm: Callable[[], None]) -> SlotFence:
    """The slot's fence, which covers a restart and its check: the rollback's restart has the rest of the hold."""
    return SlotFence(confirm, d.slot_hold, d.restart_timeout + d.verify_timeout)


def run(d: DeployConfig, fence: SlotFence) -> None:
    """Run the restart command, the slot confirmed recently enough to cover it (LockHeld if it cannot be)."""
    from rgwtls.command import CommandFailed
    from rgwtls.command import run as run_command

    argv = restart_argv(d)
    fence.before_exec()
    log.info("restarting radosgw: %s", shlex.join(argv))
    try:
        run_command(argv, d.restart_timeout)
    except CommandFailed as e:
        raise DeployError(f"the restart command {e.problem}") from None


def verify(d: DeployConfig, names: tuple[str, ...], want: str) -> None:
    """Handshake until the wanted certificate is served; a live port alone proves nothing."""
    from rgwtls.probe import served_fingerprint, server_name

    sni = server_name(d, names)
    deadline = time.monotonic() + d.verify_timeout
    seen = "no handshake tried"
    while True:
        try:
            got = served_fingerprint(d.verify_endpoint, sni, timeout=min(5.0, d.verify_timeout))
        except (OSError, ValueError) as e:
            seen = f"handshake failed: {e}"
        else:
            if got == want:
                log.info("%s serves certificate %s for %s", d.verify_endpoint, want[:16], sni)
                return
            seen = f"it serves certificate {got[:16]}"
        if time.monotonic() >= deadline:
            raise DeployError(
                f"{d.verify_endpoint} did not serve certificate {want[:16]} for {sni} within "
                f"{d.verify_timeout:g}s ({seen})"
            )
        time.sleep(0.1)


def install_and_restart(
    cfg: Config,
    pool: Pool,
    target: Target,
    built: bytes,
    installed: bytes | None,
    names: tuple[str, ...],
    want: str,
    served: Callable[[], str],
    backoff: Backoff,
    revoked: RevokedList | None = None,
) -> None:
    """Steps 5 to 9 of a deploy that restarts: returns once radosgw serves `want`, else raises with the rollback's end.

    `served` tells what the gateway served before (asked while the pool was
    read); `backoff` records a failed restart or check, which a signal is not.
    """
    from rgwtls.activate import restore_quietly  # not on the path of a deploy with nothing to do

    d = cfg.deploy
    # "self" installed the new file and the server did not re-read it: until this run holds a
    # slot and a mon answers, a failure or a signal puts the previous file back, so that the
    # file on disk is the one served. After that, steps 6 to 9 restore or roll back as for "restart".
    pending = d.activate == "self"
    try:
        with pool.restart_slot(d.max_parallel_restarts, d.restart_wait, d.slot_hold) as confirm:
            fence = slot_fence(d, confirm)
            # 5. A restart needs a mon and radosgw's pools to come back: without them, leave radosgw running.
            confirm_cluster(cfg, pool, served(), "it was not restarted" if pending else "nothing was installed")
            pending = False
            # 6. Install atomically, keeping the previous for rollback.
            try:
                target.install(built, installed)
            except RgwtlsError as e:
                restore_quietly(target, installed)
                raise e from None
            # 7. The slot is still ours (a frozen run's may have lapsed), or put it back unrestarted.
            try:
                fence.confirm()
            except RgwtlsError as e:
                restore_quietly(target, installed)
                raise DeployError(f"{e}; the previous file is back in place; the next run tries again") from None
            # 8. Restart (fenced again if this run was frozen since), and 9. verify
            # the new certificate is served; a signal here rolls back like any failure.
            try:
                run(d, fence)
                verify(d, names, want)
            except LockHeld as e:
                restore_quietly(target, installed)
                raise DeployError(f"{e}; the previous file is back in place; the next run tries again") from None
            except RgwtlsError as e:
                roll_back(d, target, installed, names, e, backoff.failed(e), fence, revoked)
    except RgwtlsError as e:
        if not pending:
            raise
        raise DeployError(f"{e}; {put_back_unserved(target, installed)}") from None


def restart_installed(
    cfg: Config,
    pool: Pool,
    target: Target,
    previous: bytes | None,
    names: tuple[str, ...],
    want: str,
    served: str,
    backoff: Backoff,
    revoked: RevokedList | None = None,
) -> None:
    """Finish a deploy an earlier run installed and did not see served: restart under a slot, verify, or roll back."""
    d = cfg.deploy
    with pool.restart_slot(d.max_parallel_restarts, d.restart_wait, d.slot_hold) as confirm:
        fence = slot_fence(d, confirm)
        confirm_cluster(cfg, pool, served, "nothing was restarted")
        try:
            fence.confirm()
        except RgwtlsError as e:
            raise DeployError(f"{e}; the next run tries again") from None
        try:
            run(d, fence)
            verify(d, names, want)
        except LockHeld as e:
            raise DeployError(f"{e}; the next run tries again") from None
        except RgwtlsError as e:
            after = backoff.failed(e)
            if previous is None:
                raise DeployError(f"{e}; there is no previous certificate to roll back to{after}") from None
            roll_back(d, target, previous, names, e, after, fence, revoked)
