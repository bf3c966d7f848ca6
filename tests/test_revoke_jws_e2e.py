"""Who signs a revocation at Pebble: keyCompromise the certificate's own key (`jwk`, no account), else the account.

Let's Encrypt blocks a key only when the revocation proves possession of
it, so the keyCompromise request must carry the certificate's key as `jwk`,
as certbot's `revoke --key-path` does.
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from josepy.b64 import b64decode
from josepy.jwk import JWK

from rgwtls.config import load
from rgwtls.issue import revoking_acme
from rgwtls.revoked import serial_hex
from rgwtls.store import Pool
from tests.conftest import Stack, run_cli
from tests.test_issue_e2e import stored_set
from tests.test_revoke_e2e import leaf


def signed_headers(acme: Any) -> list[dict[str, Any]]:
    """Every JWS protected header the session sends from now on."""
    sent: list[dict[str, Any]] = []
    wrap = acme.net._wrap_in_jws

    def spy(obj: Any, nonce: str, url: str) -> str:
        jws: str = wrap(obj, nonce, url)
        protected = json.loads(jws)["protected"]
        sent.append(json.loads(b64decode(protected)))
        return jws

    acme.net._wrap_in_jws = spy
    return sent


@pytest.mark.parametrize(
    ("reason", "code", "key_type"),
    [
        ("keyCompromise", 1, "rsa2048"),
        ("keyCompromise", 1, "ec256"),
        ("keyCompromise", 1, "ec384"),
        ("superseded", 4, ""),
    ],
)
def test_key_compromise_is_signed_by_the_certificates_key_and_other_reasons_by_the_account(
    stack: Stack, reason: str, code: int, key_type: str
) -> None:
    settings = stack.settings()
    if key_type:
        settings["acme"]["key_type"] = key_type
    config = stack.write_config(settings)
    assert run_cli(config, "issue").code == 0
    s = stored_set(stack)
    assert s is not None
    cert = leaf(s)
    cfg = load(config)
    with Pool(cfg.ceph) as pool:
        own = str(s["key_pem"]) if reason == "keyCompromise" else None
        acme = revoking_acme(cfg, pool, stack.pebble.directory_url, False, own)
        assert acme is not None
        sent = signed_headers(acme)
        assert acme.revoke(str(s["cert_pem"]), code) is True
        assert acme.revoke(str(s["cert_pem"]), code) is False  # alreadyRevoked counts as done
    header = sent[0]
    if reason == "keyCompromise":
        assert "kid" not in header
        sent_key = cast(JWK, JWK.from_json(header["jwk"]))
        assert sent_key.thumbprint() == JWK.load(str(s["key_pem"]).encode()).public_key().thumbprint()
    else:
        assert "jwk" not in header
        assert header["kid"].startswith("https://127.0.0.1:")
    assert stack.pebble.revoked_reason(serial_hex(cert)) == code
