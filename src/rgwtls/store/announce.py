"""The fleet's announcements: `issue` notifies the object `announce` after storing, `deploy --watch` watches it.

A notify only makes the fleet faster, cron converges without it. The watch's
handle is the connection's to end (`Connection.close`, `rgwtls.unwatch`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Callable

import rados

from rgwtls.errors import StoreError
from rgwtls.store.connection import Connection, reason
from rgwtls.store.layout import ANNOUNCE, NS_DEPLOY, object_name

# The name the pool's lines have always carried, whichever of its modules logs them.
log = logging.getLogger("rgwtls.store")


class Announcements(Connection):
    """Notify and watch the fleet's announcements of a new set."""

    def announce(self, name: str, generation: int, staging: bool) -> int | None:
        """Tell every watching gateway that a new set is stored; how many heard, or None if nobody could.

        A push only makes the fleet faster: no watcher, no object yet (no
        gateway ever watched), or a cap missing is fine, and cron converges.
        """
        self._ioctx.set_namespace(NS_DEPLOY)
        msg = json.dumps({"name": name, "generation": generation, "staging": staging})
        try:
            self._ioctx.notify(ANNOUNCE, msg, timeout_ms=int(min(self.cfg.timeout, 5.0) * 1000))
        except rados.Error as e:
            log.info("no gateway was told of generation %d at once (%s); their cron finds it", generation, reason(e))
            return None
        return 1

    def watch(self, callback: Callable[[], None], lost: Callable[[str], None]) -> None:
        """Watch the fleet's announcements (creating their object if need be), until `close`.

        `callback` runs in librados' thread on every notify; `lost` when the
        watch broke (the cluster was unreachable past its timeout): the
        watcher then connects and watches again.
        """
        self._ioctx.set_namespace(NS_DEPLOY)
        try:
            with rados.WriteOpCtx() as op:
                op.new(rados.LIBRADOS_CREATE_IDEMPOTENT)
                self._ioctx.operate_write_op(op, ANNOUNCE)
            handle = self._ioctx.watch(
                ANNOUNCE,
                lambda *_: callback(),
                # librados calls it with the watch's id, then the (negative) errno.
                lambda *args: lost(f"the watch broke ({_errno_text(args[-1] if args else 0)})"),
                timeout=int(max(self.cfg.timeout, 5)),
            )
        except rados.Error as e:
            raise StoreError(
                f"cannot watch {object_name(NS_DEPLOY, ANNOUNCE)} in {self._describe()}: {reason(e)}"
            ) from None
        # Only the connection holds the handle: one whose close fails must outlive the shutdown (rgwtls.unwatch).
        self._watches.append(handle)


def _errno_text(err: object) -> str:
    try:
        code = abs(int(err))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return str(err)
    return f"{errno.errorcode.get(code, 'errno')} {code}: {os.strerror(code)}"
