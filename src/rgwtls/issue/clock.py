"""The wall clock every step of an issue run reads: the dates it judges, records and schedules by.

One function, so that every room of the package reads the same clock, and a
test that needs another time has one name to replace.
"""

from __future__ import annotations

import datetime as dt


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
