"""`rgwtls deploy`: from the pool to a certificate served by this gateway, safely.

Reads top to bottom: read, validate, build, compare, install, restart,
verify, and roll back if the gateway does not serve the new certificate.
It runs from cron every few minutes on every gateway, so the no-change path
is one RADOS read and one file read, and it never imports the ACME stack.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from rgwtls import scrub
from rgwtls.backoff import Backoff
from rgwtls.config import Config, DeployConfig
from rgwtls.errors import DeployError, LockHeld, RgwtlsError, StoreError
from rgwtls.fence import SlotFence
from rgwtls.files import host_lock
from rgwtls.log import notice
from rgwtls.store import CertSet, Pool
from rgwtls.targets import Target, make_target

if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography import x509

log = logging.getLogger(__name__)


def deploy(
    cfg: Config, dry_run: bool = False, staging: bool = False, allow_older: bool = False, force: bool = False
) -> bool:
    """Make this gateway serve the pool's current set; True if it restarted radosgw.

    Level-triggered: every run compares the pool's set with what is installed
    AND with what the gateway serves, so a run killed between installing and
    verifying is finished by the next one, whatever the kill interrupted.
    A set that failed its restart or check here waits out a backoff
    (`force` tries at once).
    """
    d = cfg.deploy
    cert_cfg = cfg.certificate(d.certificate or cfg.certificates[0].name)[0]
    names = d.names or cert_cfg.domains
    # 0. One run per host: two would restart radosgw twice.
    with host_lock(Path(d.state_dir), "deploy.lock", HOST_LOCK_WAIT) as mine:
        if not mine:
            log.info("another rgwtls deploy runs on this host; it does the work, this one exits")
            return False
        # The handshake that tells what is served runs while the cluster is
        # asked: both wait on the network, and this is every cron run.
        served = _Served(d, names)
        with Pool(cfg.ceph) as pool:
            # 1. Read the set in one atomic read.
            new = pool.read_set(cert_cfg.name, staging)
            if new is None:
                kind = "staging " if staging else ""
                raise DeployError(
                    f"no {kind}certificate {cert_cfg.name} in pool {cfg.ceph.pool} yet; "
                    f"run 'rgwtls issue{' --staging' if staging else ''}' on the issuer"
                )
            scrub.remember(new.key_pem)  # a socket or command that echoes its lines never gets them into a line
            target = make_target(d, pool, cert_cfg.name)
            installed = target.installed()
            # 2. Build what radosgw reads, and 3. compare it with what is
            # installed and with what is served. This is every cron run but
            # one, so it needs no cryptography: one read, one handshake.
            built = target.build(new)
            if built == installed:
                want = _fingerprint_or_none(new)
                now_served = served.result()
                if want is not None and now_served == want:
                    log.info("%s: generation %d is installed and served; nothing to do", cert_cfg.name, new.generation)
                    return False
                return _finish(cfg, pool, target, new, names, now_served, dry_run, force)
            return _install(cfg, pool, target, new, names, installed, built, served, dry_run, allow_older, force)


HOST_LOCK_WAIT = 5.0


def _install(
    cfg: Config,
    pool: Pool,
    target: Target,
    new: CertSet,
    names: tuple[str, ...],
    installed: bytes | None,
    built: bytes,
    served: _Served,
    dry_run: bool,
    allow_older: bool,
    force: bool,
) -> bool:
    d = cfg.deploy
    # 4. Validate before touching anything.
    from rgwtls.certs import first_cert
    from rgwtls.validate import check_set, trusted_roots

    checked = check_set(
        new, names, dt.datetime.now(dt.UTC), first_cert(installed), allow_older, roots=trusted_roots(cfg)
    )
    what = _what(new, checked.cert)
    if dry_run:
        notice(log, "dry run: would install %s to %s and run: %s", what, target.describe(), _activation_line(d))
        return False
    backoff = Backoff(cfg, new, checked.fingerprint)
    backoff.wait_unless(force)
    # 4b. deploy.activate = "haproxy": a runtime API that cannot swap is one line, before anything changes.
    from rgwtls import activate

    activate.preflight(d)
    if d.splay > 0:
        import random

        time.sleep(random.uniform(0, d.splay))  # noqa: S311 - spreading load, not secrecy
    # 5a. A server that takes the new file without a restart takes no restart slot.
    if d.activate != "restart" and _without_restart(d, target, built, installed, names, backoff):
        target.commit()
        backoff.clear()
        notice(
            log,
            "%s: installed %s to %s, and it is served with no restart (%s)",
            new.name,
            what,
            target.describe(),
            d.activate,
        )
        return False
    # "self" installed the new file and the server did not re-read it: until this run holds a
    # slot and a mon answers, a failure or a signal puts the previous file back, so that the
    # file on disk is the one served. After that, steps 6 to 9 restore or roll back as for "restart".
    pending = d.activate == "self"
    try:
        with pool.restart_slot(d.max_parallel_restarts, d.restart_wait, d.slot_hold) as confirm:
            fence = _fence(d, confirm)
            # 5. A restart needs a mon and radosgw's pools to come back: without them, leave radosgw running.
            _confirm_cluster(cfg, pool, served.result(), "it was not restarted" if pending else "nothing was installed")
            pending = False
            # 6. Install atomically, keeping the previous for rollback.
            try:
                target.install(built, installed)
            except RgwtlsError as e:
                _restore_quietly(target, installed)
                raise e from None
            # 7. The slot is still ours (a frozen run's may have lapsed), or put it back unrestarted.
            try:
                fence.confirm()
            except RgwtlsError as e:
                _restore_quietly(target, installed)
                raise DeployError(f"{e}; the previous file is back in place; the next run tries again") from None
            # 8. Restart (fenced again if this run was frozen since), and 9. verify
            # the new certificate is served; a signal here rolls back like any failure.
            try:
                _restart(d, fence)
                _verify_served(d, names, checked.fingerprint)
            except LockHeld as e:
                _restore_quietly(target, installed)
                raise DeployError(f"{e}; the previous file is back in place; the next run tries again") from None
            except RgwtlsError as e:
                _roll_back(d, target, installed, names, e, backoff.failed(e), fence)
    except RgwtlsError as e:
        if not pending:
            raise
        raise DeployError(f"{e}; {_put_back_unserved(target, installed)}") from None
    target.commit()
    backoff.clear()
    activate.record(d, "restart" if d.activate == "restart" else "self-then-restart")
    notice(log, "%s: installed %s to %s, restarted radosgw, and it serves it", new.name, what, target.describe())
    return True


def _without_restart(
    d: DeployConfig, target: Target, built: bytes, installed: bytes | None, names: tuple[str, ...], backoff: Backoff
) -> bool:
    """deploy.activate haproxy or self: install, then let the server take it; False: restart it after all.

    A haproxy swap that fails (refused, or not served, and swapped back) goes
    into the backoff as a failed restart does: it would fail on every cron run.
    """
    from rgwtls import activate

    try:
        target.install(built, installed)
    except RgwtlsError as e:
        _restore_quietly(target, installed)
        raise e from None
    if not activate.without_restart(d, names, built, installed, lambda: target.restore(installed), backoff.failed):
        return False
    activate.record(d, d.activate)
    return True


def _finish(
    cfg: Config,
    pool: Pool,
    target: Target,
    new: CertSet,
    names: tuple[str, ...],
    served: str,
    dry_run: bool,
    force: bool,
) -> bool:
    """The set is installed but not served: an earlier run was stopped before its restart or check ended."""
    d = cfg.deploy
    from rgwtls.validate import check_set, trusted_roots

    checked = check_set(new, names, dt.datetime.now(dt.UTC), None, True, roots=trusted_roots(cfg))
    what = _what(new, checked.cert)
    seen = f"serves certificate {served[:16]}" if _is_fingerprint(served) else served
    if dry_run:
        notice(
            log, "dry run: %s is installed but %s %s; would run: %s", what, d.verify_endpoint, seen, _activation_line(d)
        )
        return False
    backoff = Backoff(cfg, new, checked.fingerprint)
    backoff.wait_unless(force)
    previous = target.previous()
    # deploy.activate haproxy or self: a run killed after the install is finished the way it began, never by a restart.
    if d.activate != "restart":
        from rgwtls import activate

        activate.preflight(d)
        notice(log, "%s is installed but %s %s; activating it (%s)", what, d.verify_endpoint, seen, d.activate)
        built = target.build(new)
        if activate.without_restart(d, names, built, previous, lambda: target.restore(previous), backoff.failed):
            activate.record(d, d.activate)
            target.commit()
            backoff.clear()
            notice(log, "%s: %s serves %s with no restart (%s)", new.name, d.verify_endpoint, what, d.activate)
            return False
    notice(log, "%s is installed but %s %s; restarting radosgw to finish the deploy", what, d.verify_endpoint, seen)
    with pool.restart_slot(d.max_parallel_restarts, d.restart_wait, d.slot_hold) as confirm:
        fence = _fence(d, confirm)
        _confirm_cluster(cfg, pool, served, "nothing was restarted")
        try:
            fence.confirm()
        except RgwtlsError as e:
            raise DeployError(f"{e}; the next run tries again") from None
        try:
            _restart(d, fence)
            _verify_served(d, names, checked.fingerprint)
        except LockHeld as e:
            raise DeployError(f"{e}; the next run tries again") from None
        except RgwtlsError as e:
            after = backoff.failed(e)
            if previous is None:
                raise DeployError(f"{e}; there is no previous certificate to roll back to{after}") from None
            _roll_back(d, target, previous, names, e, after, fence)
    target.commit()
    backoff.clear()
    from rgwtls import activate as counted

    counted.record(d, "restart" if d.activate == "restart" else "self-then-restart")
    notice(log, "%s: restarted radosgw onto %s, and it serves it", new.name, what)
    return True


def _what(new: CertSet, cert: x509.Certificate) -> str:
    return f"{new.name} generation {new.generation} (expires {cert.not_valid_after_utc:%Y-%m-%d})"


def _confirm_cluster(cfg: Config, pool: Pool, served: str, kept: str) -> None:
    """radosgw cannot start without a mon, nor while its own pools do not answer; the rgwtls pool may.

    A restart then would turn a cluster's trouble into a gateway outage: the
    running radosgw keeps serving through it, so it is left alone.
    """
    keeps = f"certificate {served[:16]}" if _is_fingerprint(served) else "what it serves now"
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


def _put_back_unserved(target: Target, previous: bytes | None) -> str:
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


def _fingerprint_or_none(s: CertSet) -> str | None:
    from rgwtls.probe import pem_fingerprint

    try:
        return pem_fingerprint(s.cert_pem)
    except ValueError:
        return None


def _is_fingerprint(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


class _Served:
    """The fingerprint the gateway serves now, or what went wrong asking it, found in a thread."""

    def __init__(self, d: DeployConfig, names: tuple[str, ...]) -> None:
        import threading

        self._d, self._names = d, names
        self._answer = "no handshake tried"
        self._thread = threading.Thread(target=self._ask, name="served", daemon=True)
        self._thread.start()

    def _ask(self) -> None:
        from rgwtls.probe import served_fingerprint, server_name

        d = self._d
        try:
            self._answer = served_fingerprint(
                d.verify_endpoint, server_name(d, self._names), min(5.0, d.verify_timeout)
            )
        except (OSError, ValueError) as e:
            self._answer = f"answers no TLS handshake ({e})"

    def result(self) -> str:
        self._thread.join()
        return self._answer


def _restore_quietly(target: Target, previous: bytes | None) -> None:
    """After a failed install: each file is replaced whole, so only a layout of two may need it."""
    try:
        if target.installed() != previous:
            target.restore(previous)
    except RgwtlsError as e:
        log.warning("could not put the previous file back: %s", e)


def _roll_back(
    d: DeployConfig,
    target: Target,
    previous: bytes | None,
    names: tuple[str, ...],
    cause: RgwtlsError,
    after: str,
    fence: SlotFence,
) -> NoReturn:
    """Put the previous certificate back, restart under the slot, and check it is served again; `after` ends the line.

    The restart is fenced as the first one was: a run frozen during the
    check, or before this, may have lost its slot to another gateway.
    """
    try:
        target.restore(previous)
    except RgwtlsError as e:
        raise DeployError(
            f"{cause}; could not put the previous certificate back ({e}): this gateway needs attention now{after}"
        ) from None
    from rgwtls.certs import first_cert

    old = first_cert(previous)
    if old is None:
        raise DeployError(f"{cause}; removed the new file again (there was none before){after}") from None
    try:
        _restart(d, fence)
        from rgwtls.probe import fingerprint

        _verify_served(d, names, fingerprint(old))
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


def _restart_argv(d: DeployConfig) -> list[str]:
    return d.restart_argv(os.uname().nodename.split(".")[0])


def _restart_line(d: DeployConfig) -> str:
    return shlex.join(_restart_argv(d))


def _activation_line(d: DeployConfig) -> str:
    """What a dry run says step 6 would do, by deploy.activate."""
    from rgwtls import activate

    return activate.plan(d, _restart_line(d))


def _fence(d: DeployConfig, confirm: Callable[[], None]) -> SlotFence:
    """The slot's fence, which covers a restart and its check: the rollback's restart has the rest of the hold."""
    return SlotFence(confirm, d.slot_hold, d.restart_timeout + d.verify_timeout)


def _restart(d: DeployConfig, fence: SlotFence) -> None:
    """Run the restart command, the slot confirmed recently enough to cover it (LockHeld if it cannot be)."""
    from rgwtls.command import CommandFailed, run

    argv = _restart_argv(d)
    fence.before_exec()
    log.info("restarting radosgw: %s", shlex.join(argv))
    try:
        run(argv, d.restart_timeout)
    except CommandFailed as e:
        raise DeployError(f"the restart command {e.problem}") from None


def _verify_served(d: DeployConfig, names: tuple[str, ...], want: str) -> None:
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
