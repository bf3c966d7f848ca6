"""The transport to a CA: every request its total deadline, its proxy, and retries the library does not make.

The library retries a badNonce once; Let's Encrypt asks clients to retry it
as often as it comes, and at a 50% rejection rate certbot and dehydrated fail
every run. `Network` retries badNonce, 5xx and connection errors itself, and
keeps the last response so that a rate limit can be reported with its
Retry-After.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from acme import client, errors, messages
from josepy.jwa import ES256, JWASignature
from josepy.jwk import JWK

from rgwtls import __version__
from rgwtls.config import AcmeConfig
from rgwtls.proxy import Route, failure
from rgwtls.scrub import clean

# The name the log format shows: a line of the ACME flow reads as it always has, whichever module wrote it.
log = logging.getLogger("rgwtls.acmeflow")
T = TypeVar("T")
USER_AGENT = f"rgwtls/{__version__}"
# A CA's own words (its problem documents' detail) as they reach a line: cleaned, and this long at most.
CA_SAID = 500


def retry_after(resp: requests.Response | None) -> float | None:
    """Seconds from a Retry-After header (delta or HTTP date), if any."""
    value = resp.headers.get("Retry-After") if resp is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class Network(client.ClientNetwork):
    def __init__(self, key: JWK, cfg: AcmeConfig, rt: Route, directory_url: str, alg: JWASignature = ES256) -> None:
        super().__init__(
            key,
            alg=alg,
            # A CA bundle path is passed on to requests as it is.
            verify_ssl=cfg.ca_bundle or True,  # type: ignore[arg-type]
            user_agent=USER_AGENT,
            timeout=int(cfg.timeout),
        )
        self.cfg = cfg
        # Every request goes the one way, whatever its URL: the CA is one place;
        # and each has acme.timeout as its total deadline (rgwtls.http), not only per read.
        self.route, self.directory_url = rt, directory_url
        rt.mount(self.session)
        self.last_response: requests.Response | None = None

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        self.last_response = None
        # Per request: the one setting requests lets no environment variable override.
        kwargs["proxies"] = self.route.proxies
        response: requests.Response = super()._send_request(method, url, *args, **kwargs)
        self.last_response = response
        return response

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        nonces = tries = 0
        while True:
            try:
                return call()
            except messages.Error as e:
                if e.code == "badNonce" and nonces < self.cfg.nonce_retries:
                    nonces += 1
                    log.debug("badNonce from the CA, retry %d", nonces)
                    continue
                status = self.last_response.status_code if self.last_response is not None else 0
                if status < 500 or tries >= self.cfg.retries:
                    raise
                problem = clean(f"{e.typ}: {e.detail}", CA_SAID)
            except errors.ClientError as e:
                status = self.last_response.status_code if self.last_response is not None else 0
                if status < 500 or tries >= self.cfg.retries:
                    raise
                problem = f"HTTP {status}: {e}"
            except (requests.ConnectionError, requests.Timeout) as e:
                refused = failure(self.route, e, self.directory_url)
                if tries >= self.cfg.retries or (refused is not None and refused.final):
                    raise
                problem = refused.text if refused is not None else type(e).__name__
            tries += 1
            wait = retry_after(self.last_response) or self.cfg.retry_backoff * 2 ** (tries - 1)
            log.info("ACME %s failed (%s); retry %d of %d in %.1fs", what, problem, tries, self.cfg.retries, wait)
            time.sleep(min(wait, 60.0))

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        # _post_once takes a fresh nonce on every call: each retry is a new JWS.
        return self._retrying("POST", lambda: self._post_once(*args, **kwargs))

    def get(self, *args: Any, **kwargs: Any) -> requests.Response:
        return self._retrying("GET", lambda: super(Network, self).get(*args, **kwargs))

    def head(self, *args: Any, **kwargs: Any) -> requests.Response:
        return self._retrying("HEAD", lambda: super(Network, self).head(*args, **kwargs))
