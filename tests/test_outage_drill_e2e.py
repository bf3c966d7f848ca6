"""The outage drill: the primary issuer's host and the primary CA die; the fleet stays current, never served expired.

Through the real stack, with lifetimes compressed: Pebble's shortlived
profile issues certificates of LIFE seconds, so renewal falls due (a third
left: ARI cannot be asked, the CA is down) after two thirds of it and
`check` would turn WARNING at a fifth left. The primary issuer's cron is
stopped (its host is gone) and its CA with it; the standby's hourly cron,
compressed to every few seconds here, must renew from the fallback CA before
`check` would warn, and every gateway must deploy it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from devsite.bind import Bind
from devsite.ceph import peer_certificate
from devsite.gateway import Gateway
from devsite.pebble import Pebble, pebble_server
from devsite.tlsca import TestCA
from tests.conftest import Stack, run_cli
from tests.test_issue_e2e import stored_set

LIFE = 90  # seconds: renewal due at 60, check WARNING at 72
CRON = 3.0  # seconds between the standby's cron runs (hourly on a real site)


@pytest.fixture
def two_cas(tmp_path: Path, test_ca: TestCA, bind: Bind) -> Iterator[tuple[Pebble, Pebble]]:
    profiles = {"shortlived": LIFE}
    with (
        pebble_server(tmp_path / "primary-ca", test_ca, bind.port, profiles=profiles) as primary,
        pebble_server(tmp_path / "fallback-ca", test_ca, bind.port, profiles=profiles) as fallback,
    ):
        yield primary, fallback


def served_not_after(gw: Gateway) -> dt.datetime:
    return x509.load_der_x509_certificate(peer_certificate(gw.rgw.port)).not_valid_after_utc


def test_standby_renews_from_the_fallback_ca_before_check_warns_and_nothing_is_served_expired(
    stack: Stack, deploy_keyring: Path, tmp_path: Path, two_cas: tuple[Pebble, Pebble]
) -> None:
    primary_ca, fallback_ca = two_cas
    settings = stack.settings()
    bundle = settings["acme"]["ca_bundle"]
    settings["acme"].update(directory=primary_ca.directory_url, profile="shortlived", retries=1, retry_backoff=0.1)
    settings["acme"]["fallback"] = [
        {"directory": fallback_ca.directory_url, "ca_bundle": bundle, "profile": "shortlived"}
    ]
    settings["deploy"]["state_dir"] = str(tmp_path / "primary-host")
    primary = stack.write_config(settings, "primary-issuer.toml")
    settings["deploy"]["state_dir"] = str(tmp_path / "standby-host")
    standby = stack.write_config(settings, "standby-issuer.toml")

    assert run_cli(primary, "issue").code == 0
    first = stored_set(stack)
    assert first is not None
    assert first["directory"] == primary_ca.directory_url
    gateways = [Gateway(stack, deploy_keyring, tmp_path / f"rgw{i}", name=f"drill{i}") for i in range(2)]
    try:
        for gw in gateways:
            res = run_cli(gw.config(), "deploy")
            assert res.code == 0, res.stderr
        # The primary issuer's host dies (its cron never runs again), and the primary CA goes down.
        primary_ca.stop()
        started = time.monotonic()
        renewed_at = None
        while True:
            now = dt.datetime.now(dt.UTC)
            res = run_cli(standby, "issue")
            assert res.code == 0, res.stderr
            assert "ERROR" not in res.stderr
            current = stored_set(stack)
            assert current is not None
            if current["generation"] == 2 and renewed_at is None:
                renewed_at = time.monotonic() - started
                assert current["directory"] == fallback_ca.directory_url
                assert "issued by fallback CA" in res.stderr
            for gw in gateways:
                assert run_cli(gw.config(), "deploy").code == 0
                # Never served expired, at any moment of the drill.
                assert served_not_after(gw) > dt.datetime.now(dt.UTC)
                check = run_cli(gw.config(), "check")
                assert check.code == 0, check.stdout
            if renewed_at is not None and all(gw.served() == gateways[0].served() for gw in gateways):
                fresh = x509.load_der_x509_certificate(peer_certificate(gateways[0].rgw.port))
                if fresh.not_valid_after_utc > now + dt.timedelta(seconds=LIFE / 2):
                    break
            assert time.monotonic() - started < LIFE, "the fleet was not renewed within the first certificate's life"
            time.sleep(CRON)
        status = run_cli(gateways[0].config(), "status")
        assert f"CA {fallback_ca.directory_url}" in status.stdout
    finally:
        for gw in gateways:
            gw.stop()
