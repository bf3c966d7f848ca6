"""`deploy` as cron and the watcher run it: the deploy, then this gateway's record when there is one to write.

Apart from rgwtls.fleet, which writes the record and reads them all back for
`rollout`: a no-op deploy (cron's, every few minutes on every gateway) writes
no record, so it never imports fleet; only a deploy that changed something or
failed does.
"""

from __future__ import annotations

from typing import Any

from rgwtls.config import Config
from rgwtls.errors import RgwtlsError
from rgwtls.store import HOLDER_LABEL


def deploy_recorded(cfg: Config, record_noop: bool = False, **kwargs: Any) -> bool:
    """`deploy`, then this gateway's record if it changed something or failed (a no-op writes nothing).

    `record_noop`: record even a no-op, as a watcher does once when it
    starts, so that a gateway set up after the last rotation is known to
    `rollout` before the next one.
    """
    from rgwtls.deploy import deploy

    # A restart slot's holder record then names this gateway, not only its host: rollout shows it restarting.
    token = HOLDER_LABEL.set(cfg.deploy.verify_endpoint)
    try:
        changed = deploy(cfg, **kwargs)
    except RgwtlsError as e:
        if not kwargs.get("dry_run"):
            _record(cfg, bool(kwargs.get("staging")), str(e))
        raise
    finally:
        HOLDER_LABEL.reset(token)
    if (changed or record_noop) and not kwargs.get("dry_run"):
        _record(cfg, bool(kwargs.get("staging")), None)
    return changed


def _record(cfg: Config, staging: bool, error: str | None) -> None:
    from rgwtls.fleet import record

    record(cfg, staging, error)
