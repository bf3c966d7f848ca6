"""The ACME protocol, through certbot's `acme` library, made to survive real CAs.

A newcomer finds each part by its file's name: acmeflow/network.py is the
transport (each request's total deadline, the proxy, the retries the library
does not make); objects.py what goes to a CA beyond the library's messages,
and a CA's problem documents read for a person; client.py one CA directory
as one account (the one-line errors, the account, ARI, profiles); order.py
`Acme`, the order flow on top of it (challenges, finalize, the chain).

Everything the rest of rgwtls and its tests import is named here, so `from
rgwtls.acmeflow import X` keeps working wherever X lives.
"""

from __future__ import annotations

from rgwtls.acmeflow.client import new_account_key
from rgwtls.acmeflow.network import CA_SAID, USER_AGENT, Network
from rgwtls.acmeflow.objects import PERSIST, PendingChallenge
from rgwtls.acmeflow.objects import NewOrder as _NewOrder
from rgwtls.acmeflow.objects import challenge_error as _challenge_error
from rgwtls.acmeflow.order import Acme

__all__ = [
    "CA_SAID",
    "PERSIST",
    "USER_AGENT",
    "Acme",
    "Network",
    "PendingChallenge",
    "_NewOrder",
    "_challenge_error",
    "new_account_key",
]
