"""`rgwtls issue`: from the configured names to a stored certificate set, one room per step of the data.

A newcomer finds each step's file by its name: issue/run.py is the protocol
itself, `issue()` read top to bottom (lock, what an earlier run left, decide,
order, store, record); decide.py says whether a certificate is due;
order.py gets it from the first CA that can issue it, with the ACME session
and account of each CA in session.py and the challenge records and their
journal in journal.py; kept.py is what this host keeps until the pool has
the set, and earlier.py what the next run does with it; schedule.py is the
last-issue record and the retry schedule; persist.py dns-persist-01's
standing records; clock.py the one wall clock they all read.

Everything the rest of rgwtls and its tests import is named here, so `from
rgwtls.issue import X` keeps working wherever X lives.
"""

from __future__ import annotations

from rgwtls.issue.decide import Decision
from rgwtls.issue.decide import decide as _decide
from rgwtls.issue.journal import JOURNAL
from rgwtls.issue.kept import ORDER_FORMAT
from rgwtls.issue.order import CAs as _CAs
from rgwtls.issue.order import obtain_from_any as _obtain_from_any
from rgwtls.issue.order import revoking_acme
from rgwtls.issue.persist import persist_records
from rgwtls.issue.run import issue, replace_now
from rgwtls.issue.schedule import RETRY_EARLY, RETRY_FIRST, RETRY_MAX, RETRY_MIN
from rgwtls.issue.schedule import held_back as _held_back
from rgwtls.issue.schedule import next_attempt as _next_attempt
from rgwtls.issue.session import account_object

__all__ = [
    "JOURNAL",
    "ORDER_FORMAT",
    "RETRY_EARLY",
    "RETRY_FIRST",
    "RETRY_MAX",
    "RETRY_MIN",
    "Decision",
    "_CAs",
    "_decide",
    "_held_back",
    "_next_attempt",
    "_obtain_from_any",
    "account_object",
    "issue",
    "persist_records",
    "replace_now",
    "revoking_acme",
]
