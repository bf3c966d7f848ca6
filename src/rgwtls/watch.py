"""`rgwtls deploy --watch`: the deploy job as a long-running service, woken by the issuer's notify.

cron pays Python's and librados' start-up on every check; a watcher pays it
once, then runs exactly the deploy logic of the cron job (the same host
lock, the same checks) when `issue` announces a new set, and every
`deploy.interval` besides. A push only makes the fleet faster: a watch that
broke is made again, a watcher that died is replaced by systemd, and cron
stays correct without any of it.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from rgwtls.config import Config
from rgwtls.errors import DeployDeferred, Interrupted, RgwtlsError
from rgwtls.recorded import deploy_recorded
from rgwtls.store import Pool

log = logging.getLogger(__name__)
# How soon a watcher that cannot reach the cluster tries again (or at deploy.interval, if sooner).
RECONNECT = 30.0


class _Watch:
    """The watch on the fleet's announcements, over a connection of its own; made again when it breaks."""

    def __init__(self, cfg: Config, wake: threading.Event) -> None:
        self.cfg, self.wake = cfg, wake
        # The watch's connection, which holds the watch itself: closing it ends both, in their order.
        self._pool: Pool | None = None
        self._broken: str | None = None
        self._next_try = 0.0

    @property
    def up(self) -> bool:
        return self._pool is not None

    def ensure(self) -> None:
        """Watch, unless watching already or it failed a moment ago; a failure is one WARNING, never fatal."""
        if self._broken is not None:
            log.warning("deploy --watch: %s; watching again", self._broken)
            self.close()
        if self._pool is not None or time.monotonic() < self._next_try:
            return
        try:
            self._pool = Pool(self.cfg.ceph).connect(long_lived=True)
            self._pool.watch(self.wake.set, self._lost)
        except Interrupted:
            self.close()
            raise  # a stop while connecting is a stop, not a cluster to try again
        except RgwtlsError as e:
            self.close()
            self._next_try = time.monotonic() + self.retry
            log.warning(
                "deploy --watch: %s; trying again in %gs, and deploying every %gs meanwhile", e, self.retry, self.retry
            )
            return
        log.info(
            "deploy --watch: watching pool %s for new certificates, and looking every %gs",
            self.cfg.ceph.pool,
            self.cfg.deploy.interval,
        )

    @property
    def retry(self) -> float:
        return min(RECONNECT, self.cfg.deploy.interval)

    def _lost(self, why: str) -> None:
        self._broken = why
        self.wake.set()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        self._broken = None
        if pool is not None:
            pool.close()  # the watch first, then the connection: a watch that fails to close goes after it


def _noted(stopping: list[str], handler: Callable[[int, Any], Any], signum: int, frame: Any) -> Any:
    stopping.append(signal.Signals(signum).name)
    return handler(signum, frame)


def watch(
    cfg: Config,
    staging: bool = False,
    allow_older: bool = False,
    after_run: Callable[[Config, bool, float], None] | None = None,
) -> None:
    """Deploy now, then on every announcement and every deploy.interval, until a signal stops the watcher.

    A deploy that fails is its one line, as from cron, and the watcher goes
    on: the next notify or interval tries again. A signal ends the watcher
    cleanly (exit 0, as systemd's stop expects): at once while waiting;
    during a deploy once that deploy unwound (it rolls back as any
    interrupted deploy does), its line a WARNING.
    """
    wake = threading.Event()
    watcher = _Watch(cfg, wake)
    # deploy turns a signal during a run into its own rollback line: remember
    # that one came, so that the watcher stops after that run and does not go on.
    stopping: list[str] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        before = signal.getsignal(sig)
        if callable(before):
            signal.signal(sig, functools.partial(_noted, stopping, before))
    first = True
    try:
        while True:
            watcher.ensure()
            wake.clear()  # before the run: an announcement during it wakes the next one
            started = time.monotonic()
            ok = False
            try:
                # The first run records even a no-op: rollout then knows this gateway before the next rotation.
                deploy_recorded(cfg, record_noop=first, staging=staging, allow_older=allow_older)
                ok = True
            except Interrupted as e:
                stopping.append(e.signame)  # nothing had changed yet, or it was put back: a stop, not a failure
            except DeployDeferred as e:
                log.warning("%s", e)  # still failing, and said so when it failed
            except RgwtlsError as e:
                if stopping:
                    # The run unwound on the signal (rolled back, or finished what it could): say what it
                    # did, then stop as asked. The next start, or cron, converges from there.
                    log.warning("%s", e)
                else:
                    log.error("%s", e)
            finally:
                first = False
                if after_run is not None:
                    after_run(cfg, ok, started)
            if stopping:  # a signal during the run, or while recording or writing metrics: stop, not wait
                break
            wake.wait(cfg.deploy.interval if watcher.up else watcher.retry)
    except Interrupted as e:  # while connecting or waiting: a stop, never a cluster error to retry
        stopping.append(e.signame)
    finally:
        watcher.close()
    log.info("deploy --watch: stopped by %s", stopping[0])
