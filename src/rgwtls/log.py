"""Log levels and set-up.

Cron mails whatever a job prints, so by default rgwtls prints only what the
operator must hear about: a change (NOTICE), a warning, an error. Progress
and "nothing to do" are INFO, shown with -v. Every line carries its level.
"""

from __future__ import annotations

import logging
import os
import sys

from rgwtls.scrub import LINE, clean

NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")


def notice(logger: logging.Logger, msg: str, *args: object) -> None:
    logger.log(NOTICE, msg, *args)


class _Clean(logging.Formatter):
    """The last line of defence: a message that carries an outside string nobody cleaned is cleaned here.

    Its control bytes escaped and key material removed (rgwtls.scrub), so that
    a path that missed it still cannot put a key or a terminal escape into
    cron mail or the journal. A traceback (--debug) stays as it is, multi-line.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = clean(record.message, LINE)
        return super().formatMessage(record)


class _Line(logging.Formatter):
    """The plain line of cron mail, cleaned as _Clean's, and never a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname}: {clean(record.getMessage(), LINE)}"


def setup(verbose: int, debug: bool, syslog: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if debug:
        handler.setFormatter(_Clean("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_Line())
    handler.setLevel(logging.DEBUG if debug else logging.INFO if verbose else NOTICE)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # A handler that fails (syslog gone away) must not print a traceback into cron mail.
    logging.raiseExceptions = False
    if syslog:
        # The journal keeps the whole story (INFO and up) while cron mail stays quiet.
        from logging.handlers import SysLogHandler

        # SysLogHandler only fails when it first logs, so look for the socket now.
        if not os.path.exists("/dev/log"):
            logging.getLogger("rgwtls").warning("syslog is not available (no /dev/log); logging to stderr only")
            return
        to_syslog = SysLogHandler(address="/dev/log", facility="daemon")
        to_syslog.setFormatter(_Clean("rgwtls[%(process)d]: %(levelname)s: %(message)s"))
        to_syslog.setLevel(logging.INFO)
        root.handlers.append(to_syslog)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        # The libraries' own lines (acme's request dumps, urllib3) are noise in cron mail.
        for noisy in ("acme", "urllib3", "requests"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
