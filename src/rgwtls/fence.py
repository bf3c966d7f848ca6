"""A restart slot's fence, carried up to the exec of the restart command.

A lease is not a lock: a deploy can be frozen (SIGSTOP, a VM pause, swap)
at any instruction, for longer than its slot's hold, and wake believing it
still restarts alone. The slot is confirmed in one RADOS operation (the
store's fence: assert the lock is ours and renew it for the whole hold), and
that confirmation is only worth something for a while: the monotonic time
since it was sent is checked right before every restart command runs, the
rollback's included. Past that while, the slot is confirmed again, which
fails if another gateway took it; then no restart is made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from rgwtls.errors import LockHeld

log = logging.getLogger(__name__)


class SlotFence:
    """When the slot was last confirmed, and what a restart needs of it.

    `confirm` is the store's fence (it raises LockHeld unless the slot is
    still ours, and renews it for `hold` seconds from the moment the OSD runs
    it, which is after it was sent). `need` is how long a restart and its
    check may take: a confirmation sent at `t` covers a restart started
    before `t + hold - need`.
    """

    def __init__(self, confirm: Callable[[], None], hold: float, need: float) -> None:
        self._confirm, self.hold, self.need = confirm, hold, need
        self._sent: float | None = None

    def confirm(self) -> None:
        """Confirm and renew the slot now (LockHeld if it is no longer ours)."""
        sent = time.monotonic()
        self._confirm()
        self._sent = sent

    def age(self) -> float | None:
        """Seconds since the last confirmation was sent; None: never confirmed."""
        return None if self._sent is None else time.monotonic() - self._sent

    def _covers(self) -> bool:
        age = self.age()
        return age is not None and age + self.need <= self.hold

    def before_exec(self) -> None:
        """Right before a restart command runs: the slot covers the restart and its check, or LockHeld.

        A confirmation too old (the run was frozen, or the restart before
        this one was slow) is made again, in one RADOS operation; one that
        itself took so long that it no longer covers the restart gives up.
        """
        if self._covers():
            return
        age = self.age()
        log.info(
            "the restart slot was confirmed %s ago; confirming it again before restarting",
            "never" if age is None else f"{age:.1f}s",
        )
        self.confirm()
        if not self._covers():
            raise LockHeld(
                f"confirming the restart slot took {self.age() or 0:.1f}s, too long to cover a restart and its "
                f"check ({self.need:g}s) within its hold ({self.hold:g}s); radosgw was not restarted"
            )
