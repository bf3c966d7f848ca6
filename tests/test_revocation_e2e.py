"""A mass revocation, compressed: the CA revokes, and the fleet moves on with no operator.

Through the real stack: Pebble revokes a certificate through its ACME
revokeCert, as a CA does, and opens its renewal window (ARI) now; a CA of
devsite's own (devsite/crlca.py) lists a certificate in the CRL it serves on
127.0.0.1; the pool records one as revoked, as `rgwtls revoke` does. Each
time, `check` on the gateway says so, the next plain `issue` renews while
the retry schedule would hold any other renewal back, and a watching
gateway serves the replacement.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from devsite.crlca import CrlCA, crl_ca
from devsite.gateway import Gateway
from devsite.ports import free_port
from rgwtls.check import CRITICAL, OK, WARNING
from tests.conftest import POOL, ZONE, Result, Stack, run_cli
from tests.test_issue_e2e import stored_set
from tests.test_watch_e2e import Watcher, serves_pool, wait_for


@pytest.fixture
def crl_server() -> Iterator[CrlCA]:
    with crl_ca() as ca:
        yield ca


def check(gw: Gateway, *args: str) -> tuple[int, str]:
    res = run_cli(gw.config(), "check", *args, timeout=60)
    return res.code, res.stdout.strip()


def hold_back(stack: Stack, config: Path) -> None:
    """A failed attempt recorded a minute ago, the next one due in six hours: any ordinary renewal waits."""
    now = dt.datetime.now(dt.UTC)
    doc = {
        "at": now.isoformat(timespec="seconds"),
        "host": "rgw0",
        "ok": False,
        "error": "ACME: the CA was down",
        "failures": 1,
        "next_attempt": (now + dt.timedelta(hours=6)).isoformat(timespec="seconds"),
        "config": hashlib.sha256(config.read_bytes()).hexdigest()[:16],
    }
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    try:
        ioctx.write_full(f"{ZONE}/last-issue", json.dumps(doc).encode())
    finally:
        ioctx.close()


def plain_issue(config: Path) -> Result:
    """`issue` as the hourly timer runs it: no --force."""
    res = run_cli(config, "issue")
    assert res.code == 0, res.stderr
    return res


def revoke_at_pebble(stack: Stack, cert_pem: str, key_pem: str) -> None:
    """revokeCert signed with the certificate's own key (reason keyCompromise), as the acme library sends it."""
    from acme import client
    from cryptography.hazmat.primitives.asymmetric import rsa
    from josepy.jwa import ES256, RS256
    from josepy.jwk import JWK, JWKEC, JWKRSA

    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    jwk: JWK = JWKRSA(key=key) if isinstance(key, rsa.RSAPrivateKey) else JWKEC(key=key)
    alg = RS256 if isinstance(key, rsa.RSAPrivateKey) else ES256
    net = client.ClientNetwork(jwk, alg=alg, verify_ssl=str(stack.pebble.ca_bundle))  # type: ignore[arg-type]
    acme = client.ClientV2(client.ClientV2.get_directory(stack.pebble.directory_url, net), net)
    acme.revoke(x509.load_pem_x509_certificate(cert_pem.encode()), 1)


def current(stack: Stack) -> dict[str, object]:
    s = stored_set(stack)
    assert s is not None
    return s


def watching(stack: Stack, gw: Gateway) -> Watcher:
    w = Watcher(gw)
    wait_for("the first deploy", lambda: serves_pool(stack, gw), w)
    wait_for("the watch", lambda: w.said("watching pool"), w)
    return w


def test_pebble_revokes_and_asks_for_renewal_now_and_the_next_issue_renews_within_the_backoff(
    stack: Stack, gateway: Gateway
) -> None:
    issuer = stack.write_config(stack.settings(), "issuer.toml")
    plain_issue(issuer)
    watcher = watching(stack, gateway)
    try:
        first = current(stack)
        revoke_at_pebble(stack, str(first["cert_pem"]), str(first["key_pem"]))
        now = dt.datetime.now(dt.UTC)
        stack.pebble.set_renewal_info(str(first["cert_pem"]), now - dt.timedelta(hours=2), now - dt.timedelta(hours=1))
        code, line = check(gateway)
        assert code == WARNING, line
        assert line.startswith("RGWTLS WARNING - cog.example.org: the CA asks for renewal now: its renewal window")
        hold_back(stack, issuer)
        res = plain_issue(issuer)
        assert "renewed (the CA's renewal window (ARI) opened at" in res.stderr
        assert current(stack)["generation"] == 2
        wait_for("the watcher serving generation 2", lambda: serves_pool(stack, gateway), watcher)
        code, line = check(gateway)
        assert code == OK, line
    finally:
        assert watcher.stop() == 0


def put_crl_set(stack: Stack, ca: CrlCA, directory: str) -> str:
    """The pool's next generation, as the CA at `directory` issued it (CRL's CA, chain its intermediate); its PEM."""
    good = current(stack)
    key, cert = ca.issue(tuple(str(d) for d in good["domains"]), backdate=0)  # type: ignore[attr-defined]
    doc = {"format": "rgwtls-set/1", **good, "generation": int(good["generation"]) + 1}  # type: ignore[call-overload]
    doc.update(key_pem=key, cert_pem=cert, chain_pem=ca.issuer_pem, directory=directory)
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    try:
        ioctx.write_full(f"{ZONE}/current", json.dumps(doc).encode())
    finally:
        ioctx.close()
    return cert


def with_root(stack: Stack, settings: dict[str, object], ca: CrlCA, name: str) -> None:
    roots = stack.dir / f"roots-{name}.pem"
    roots.write_text(stack.trusted_roots().read_text() + ca.root_pem)
    settings["deploy"]["trusted_roots"] = str(roots)  # type: ignore[index]


def test_a_crl_that_lists_the_served_certificate_is_critical_and_the_next_issue_renews_within_the_backoff(
    stack: Stack, gateway: Gateway, crl_server: CrlCA, tmp_path: Path
) -> None:
    # The set came from a fallback CA with no ARI (one that is down now): only its CRL can say it is revoked.
    fallback = f"https://127.0.0.1:{free_port()}/dir"
    settings = stack.settings()
    settings["acme"]["fallback"] = [{"directory": fallback}]
    with_root(stack, settings, crl_server, "issuer")
    issuer = stack.write_config(settings, "issuer.toml")
    gateway.settings["acme"]["fallback"] = [{"directory": fallback}]
    with_root(stack, gateway.settings, crl_server, "gateway")
    plain_issue(issuer)
    cert = put_crl_set(stack, crl_server, fallback)
    watcher = watching(stack, gateway)
    try:
        # The CRL server down, then trickling: OK, with a note, within the check's own bound.
        crl_server.mode = "down"
        code, line = check(gateway)
        assert code == OK, line
        assert "could not be fetched" in line
        crl_server.mode = "trickle"
        started = time.monotonic()
        code, line = check(gateway)
        assert code == OK, line
        assert "no complete answer" in line
        assert time.monotonic() - started < 8 + 5  # guard's --timeout for check, and a start-up's margin
        # The CA revokes it: CRITICAL, "revoked" on the first line; status and the metric say so.
        crl_server.mode = "serve"
        crl_server.revoke(cert)
        textfile = tmp_path / "textfile"
        textfile.mkdir()
        code, line = check(gateway, "--textfile", str(textfile))
        assert code == CRITICAL, line
        first = line.split("\n")[0]
        assert first.startswith("RGWTLS CRITICAL - cog.example.org: the served certificate is revoked: listed in")
        assert f"CRL {crl_server.url}" in first
        assert "reason keyCompromise" in first
        prom = (textfile / "rgwtls_check.prom").read_text()
        assert f'rgwtls_certificate_revoked{{certificate="{ZONE}"}} 1' in prom
        table = run_cli(gateway.config(), "status")
        assert "  REVOKED   listed in its CA's CRL" in table.stdout
        # The cached CRL answers the next check: the CA's server is asked once until its nextUpdate.
        fetched = crl_server.fetches
        assert check(gateway)[0] == CRITICAL
        assert crl_server.fetches == fetched
        # The hourly issue, while the retry schedule holds ordinary renewals back, renews at once.
        hold_back(stack, issuer)
        res = plain_issue(issuer)
        assert "renewed (revoked: listed in its CA's CRL" in res.stderr
        wait_for("the watcher serving the replacement", lambda: serves_pool(stack, gateway), watcher)
        code, line = check(gateway)
        assert code == OK, line
    finally:
        assert watcher.stop() == 0


def test_the_pools_record_of_a_revoked_certificate_is_critical_and_the_next_issue_replaces_it(
    stack: Stack, gateway: Gateway
) -> None:
    from rgwtls.config import load
    from rgwtls.revoked import REVOKED_OBJECT, Revoked, RevokedList, serial_hex, spki_sha256
    from rgwtls.store import Pool

    issuer = stack.write_config(stack.settings(), "issuer.toml")
    plain_issue(issuer)
    assert run_cli(gateway.config(), "deploy").code == 0
    served = x509.load_pem_x509_certificate(str(current(stack)["cert_pem"]).encode())
    entry = Revoked(ZONE, serial_hex(served), spki_sha256(served), "superseded", "2026-12-07T06:00:00+00:00")
    with Pool(load(issuer).ceph) as pool:  # as the issuer's user writes it
        pool.write("", REVOKED_OBJECT, RevokedList((entry,)).to_bytes())
    code, line = check(gateway)
    assert code == CRITICAL, line
    assert line.startswith(
        "RGWTLS CRITICAL - cog.example.org: the served certificate is revoked: the pool records that it was revoked "
        "(superseded, 2026-12-07T06:00:00+00:00)"
    )
    hold_back(stack, issuer)
    res = plain_issue(issuer)
    assert "renewed (revoked: the pool records that it was revoked" in res.stderr
    assert current(stack)["generation"] == 2
