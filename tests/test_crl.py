"""Reading a CA's CRL: found, bounded, verified against the issuer, cached until its nextUpdate.

The CRL server is devsite's own CA on 127.0.0.1 (devsite/crlca.py), which
can also misbehave as a hostile or broken server does.
"""

from __future__ import annotations

import datetime as dt
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from devsite.crlca import CrlCA, crl_ca
from rgwtls import crl
from rgwtls.proxy import Route

NAMES = ("cog.example.org", "*.cog.example.org")
DIRECT = Route("acme.proxy", "")


@pytest.fixture
def ca() -> Iterator[CrlCA]:
    with crl_ca() as c:
        yield c


def leaf(ca: CrlCA, crl_url: str | None = None) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca.issue(NAMES, crl_url=crl_url)[1].encode())


def lookup(ca: CrlCA, cert: x509.Certificate, state: Path, timeout: float = crl.TIMEOUT) -> crl.Listed | None:
    return crl.lookup(cert, ca.issuer, DIRECT, state, timeout=timeout)


def test_a_certificate_its_crl_lists_is_revoked_with_its_reason(ca: CrlCA, tmp_path: Path) -> None:
    cert, other = leaf(ca), leaf(ca)
    ca.revoke(ca.issue(NAMES)[1])  # a third one, so the CRL is not empty
    assert lookup(ca, cert, tmp_path) is None
    ca.revoke(_pem(cert))
    listed = lookup(ca, cert, tmp_path / "fresh")
    assert listed is not None
    assert listed.reason == "keyCompromise"
    assert listed.url == ca.url
    assert "listed in its CA's CRL" in listed.describe()
    assert lookup(ca, other, tmp_path / "fresh") is None


def _pem(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_the_crl_is_cached_until_its_next_update_and_verified_again_on_each_read(ca: CrlCA, tmp_path: Path) -> None:
    cert = leaf(ca)
    assert lookup(ca, cert, tmp_path) is None
    assert ca.fetches == 1
    cached = crl.cache_path(tmp_path, ca.url)
    mode = cached.stat().st_mode
    assert not mode & (stat.S_IWGRP | stat.S_IWOTH), oct(mode)
    assert not cached.parent.stat().st_mode & stat.S_IWOTH
    # Within its nextUpdate: no second fetch, whatever the CA published since (as the CA allows).
    ca.revoke(_pem(cert))
    assert lookup(ca, cert, tmp_path) is None
    assert ca.fetches == 1
    # A cached file that no longer verifies (damaged, or planted) is fetched again.
    cached.write_bytes(cached.read_bytes()[:-8] + b"\0" * 8)
    assert lookup(ca, cert, tmp_path) is not None
    assert ca.fetches == 2
    # Past its nextUpdate, the cached CRL is fetched again.
    later = dt.datetime.now(dt.UTC) + ca.next_update + dt.timedelta(minutes=1)
    with pytest.raises(crl.CrlError, match="stale"):
        crl.lookup(cert, ca.issuer, DIRECT, tmp_path, now=later)
    assert ca.fetches == 3


def test_a_missing_state_directory_is_not_made_and_only_costs_the_cache(ca: CrlCA, tmp_path: Path) -> None:
    cert = leaf(ca)
    assert lookup(ca, cert, tmp_path / "absent") is None
    assert lookup(ca, cert, tmp_path / "absent") is None
    assert ca.fetches == 2
    assert not (tmp_path / "absent").exists()


def test_a_crl_signed_by_another_key_is_a_warning_never_a_verdict(ca: CrlCA, tmp_path: Path) -> None:
    cert = leaf(ca)
    ca.revoke(_pem(cert))
    ca.mode = "bad-signature"
    with pytest.raises(crl.CrlError, match="does not verify against the issuer's key") as e:
        lookup(ca, cert, tmp_path)
    assert e.value.warn
    assert not crl.cache_path(tmp_path, ca.url).exists()


def test_a_stale_crl_is_a_warning(ca: CrlCA, tmp_path: Path) -> None:
    ca.mode = "stale"
    with pytest.raises(crl.CrlError, match=r"is stale: its nextUpdate passed at") as e:
        lookup(ca, leaf(ca), tmp_path)
    assert e.value.warn


def test_a_crl_of_another_issuer_at_the_distribution_point_is_a_warning(ca: CrlCA, tmp_path: Path) -> None:
    with crl_ca("another CA") as other:
        cert = leaf(ca, crl_url=other.url)  # ours, naming the other CA's CRL
        with pytest.raises(crl.CrlError, match="not by the certificate's issuer") as e:
            lookup(ca, cert, tmp_path)
    assert e.value.warn


def test_another_part_of_a_partitioned_crl_is_a_warning(ca: CrlCA, tmp_path: Path) -> None:
    """Signed and current, but the shard of other certificates: it would list none of ours."""
    cert = leaf(ca)
    ca.revoke(_pem(cert))
    ca.part = f"http://127.0.0.1:{ca.port}/other-shard.crl"
    with pytest.raises(crl.CrlError, match="is another part of its CA's CRL") as e:
        lookup(ca, cert, tmp_path)
    assert e.value.warn


def test_an_endless_answer_is_cut_at_the_byte_cap(ca: CrlCA, tmp_path: Path) -> None:
    ca.mode = "endless"
    started = time.monotonic()
    with pytest.raises(crl.CrlError, match=f"longer than the {crl.MAX_BYTES} bytes allowed") as e:
        lookup(ca, leaf(ca), tmp_path, timeout=10)
    assert e.value.warn
    assert time.monotonic() - started < 10


def test_a_trickling_server_is_cut_at_the_total_deadline_and_is_only_a_note(ca: CrlCA, tmp_path: Path) -> None:
    ca.mode = "trickle"
    started = time.monotonic()
    with pytest.raises(crl.CrlError, match=r"could not be fetched: no complete answer within 1.0s") as e:
        lookup(ca, leaf(ca), tmp_path, timeout=1.0)
    assert not e.value.warn
    assert time.monotonic() - started < 1.0 + 2.0  # the deadline, and a loaded machine's margin


def test_a_server_that_is_down_is_only_a_note(ca: CrlCA, tmp_path: Path) -> None:
    ca.mode = "down"
    with pytest.raises(crl.CrlError, match="could not be fetched") as e:
        lookup(ca, leaf(ca), tmp_path)
    assert not e.value.warn


def test_no_distribution_point_is_nothing_to_ask(ca: CrlCA, tmp_path: Path) -> None:
    from devsite.certmaker import make_cert

    now = dt.datetime.now(dt.UTC)
    cert = x509.load_pem_x509_certificate(make_cert(NAMES, now, now + dt.timedelta(days=1))[1].encode())
    assert crl.urls(cert) == []
    with pytest.raises(crl.CrlError, match="no CRL distribution point"):
        lookup(ca, cert, tmp_path)


def test_the_issuer_is_the_chain_certificate_that_signed_it(ca: CrlCA) -> None:
    cert = leaf(ca)
    with crl_ca() as other:
        assert crl.issuer_of(cert, [other.issuer, ca.root, ca.issuer]) == ca.issuer
        # The same name, another key: not the issuer.
        assert crl.issuer_of(cert, [other.issuer]) is None


def test_a_hostile_url_in_a_certificate_is_shown_escaped_and_bounded() -> None:
    text = crl.shown("http://x/\x1b[2J" + "a" * 500)
    assert "\x1b" not in text
    assert len(text) <= crl.MAX_URL + 3


def test_the_crl_goes_through_acme_proxy_with_its_password(ca: CrlCA, tmp_path: Path) -> None:
    """A CRL host only the proxy resolves: fetched through it, and a refused password is one note naming the proxy."""
    from devsite.proxy import tinyproxy
    from rgwtls.proxy import route

    host = "crl.only-via-proxy.test"
    ca.part = f"http://{host}:{ca.port}/issuer.crl"
    cert = leaf(ca, crl_url=ca.part)
    ca.revoke(_pem(cert))
    with tinyproxy(tmp_path / "proxy", user="rgwtls", password="pw-3c1d", hosts={host: "127.0.0.1"}) as p:
        url = crl.urls(cert)[0]
        listed = crl.lookup(cert, ca.issuer, route(p.url, "acme.proxy", url, "pw-3c1d"), tmp_path / "a")
        assert listed is not None
        assert f"GET {url}" in p.log_text() or host in p.log_text()
        with pytest.raises(crl.CrlError, match=f"could not be fetched: .*{p.bare_url}") as e:
            crl.lookup(cert, ca.issuer, route(p.url, "acme.proxy", url, "wrong"), tmp_path / "b")
        assert not e.value.warn
        with pytest.raises(crl.CrlError, match="could not be fetched"):
            crl.lookup(cert, ca.issuer, DIRECT, tmp_path / "c")  # directly, the name does not resolve


def test_the_pools_record_names_a_revoked_serial_and_any_certificate_of_a_compromised_key(ca: CrlCA) -> None:
    from rgwtls.revocation import in_record
    from rgwtls.revoked import Revoked, RevokedList, serial_hex, spki_sha256

    cert = leaf(ca)
    at = "2026-12-07T06:00:00+00:00"
    superseded = RevokedList((Revoked("c", serial_hex(cert), spki_sha256(cert), "superseded", at),))
    assert in_record(cert, superseded) == f"the pool records that it was revoked (superseded, {at})"
    assert in_record(leaf(ca), superseded) == ""
    compromised = RevokedList((Revoked("c", "ff", spki_sha256(cert), "keyCompromise", at, at_ca=at),))
    assert (
        in_record(cert, compromised)
        == f"the pool records that its key was revoked (keyCompromise, {at}, at the CA {at})"
    )


def test_a_slow_crl_server_and_a_slow_ca_cost_the_check_one_deadline_not_two(ca: CrlCA, tmp_path: Path) -> None:
    """`look` asks the CRL and the CA's window (ARI) at once: both trickling, it returns after about one deadline."""
    from rgwtls import config, revocation

    cfg_path = tmp_path / "rgwtls.toml"
    cfg_path.write_text(
        f'[acme]\ndirectory = "{ca.url}"\nproxy = "direct"\n[deploy]\nstate_dir = "{tmp_path}"\n'
        '[[certificate]]\nname = "cog.example.org"\ndomains = ["cog.example.org"]\n'
    )
    cfg_path.chmod(0o644)
    cfg = config.load(cfg_path)
    cert = leaf(ca)
    ca.mode = "trickle"  # the CRL, and the "CA's directory" (the same URL), one byte a second
    started = time.monotonic()
    seen = revocation.look(cfg, cert, [ca.issuer], None, ca.url)
    took = time.monotonic() - started
    assert seen.revoked == ""
    assert seen.renew_now == ""
    assert any("could not be fetched: no complete answer within 2.5s" in n for n in seen.notes), seen.notes
    assert any("renewal window (ARI) was not asked" in n for n in seen.notes), seen.notes
    assert took < crl.TIMEOUT + revocation.ARI_TIMEOUT - 1, took


def test_asking_about_revocation_loads_no_http_stack_until_a_crl_or_window_must_be_fetched() -> None:
    """`issue`'s hourly no-op asks rgwtls.revocation; requests alone was a tenth of that run (bench/ab.py)."""
    code = "import sys, rgwtls.revocation, rgwtls.crl; sys.exit('requests' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0
