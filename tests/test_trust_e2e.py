"""Trusted roots through the real stack: an untrusted set is neither stored by `issue` nor installed by `deploy`."""

from __future__ import annotations

import datetime as dt
import json

from cryptography import x509

from devsite.certmaker import make_ca, make_cert
from devsite.gateway import Gateway
from tests.conftest import DOMAINS, POOL, ZONE, Stack, run_cli
from tests.test_deploy_e2e import issue
from tests.test_issue_e2e import assert_one_error_line, no_challenge_records, stored, stored_set


def put_current(stack: Stack, fields: dict[str, object]) -> None:
    good = stored_set(stack)
    assert good is not None
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    try:
        ioctx.write_full(f"{ZONE}/current", json.dumps({"format": "rgwtls-set/1", **good, **fields}).encode())
    finally:
        ioctx.close()


def test_deploy_refuses_a_self_consistent_set_from_a_ca_nobody_trusts_and_touches_nothing(
    stack: Stack, gateway: Gateway
) -> None:
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    served, pem, pid = gateway.served(), gateway.pem.read_bytes(), gateway.rgw.supervisor("pid")
    # Newer, valid, for the right names, its chain issuing it: only its root is unknown.
    deployed = x509.load_pem_x509_certificate(str((stored_set(stack) or {})["cert_pem"]).encode())
    not_before = deployed.not_valid_before_utc + dt.timedelta(seconds=1)
    ca_key, ca_pem = make_ca()  # a throwaway root, "test issuer", that no bundle names
    key, cert = make_cert(DOMAINS, not_before, not_before + dt.timedelta(days=60), ca_key)
    put_current(stack, {"generation": 2, "key_pem": key, "cert_pem": cert, "chain_pem": ca_pem})
    res = run_cli(gateway.config(), "deploy")
    assert_one_error_line(
        res,
        "the set cog.example.org (generation 2) in the pool: its chain ends at CN=test issuer, "
        "which is neither a trusted root nor issued by one; set deploy.trusted_roots to a PEM bundle with that root",
    )
    assert gateway.served() == served
    assert gateway.pem.read_bytes() == pem
    assert gateway.rgw.supervisor("pid") == pid
    assert gateway.restarts() == 1
    # Named in the gateway's deploy.trusted_roots, the same set is installed.
    roots = stack.dir / "with-rogue.pem"
    roots.write_text(stack.trusted_roots().read_text() + ca_pem)
    gateway.settings["deploy"]["trusted_roots"] = str(roots)
    assert run_cli(gateway.config(), "deploy").code == 0
    assert gateway.restarts() == 2


def test_deploy_without_the_test_cas_root_refuses_pebbles_set(stack: Stack, gateway: Gateway) -> None:
    issue(stack)
    pem = gateway.pem.read_bytes()
    gateway.settings["deploy"]["trusted_roots"] = ""
    root = x509.load_pem_x509_certificate(stack.pebble.roots_pem().encode())
    res = run_cli(gateway.config(), "deploy")
    assert_one_error_line(res, f"its chain ends at {root.subject.rfc4514_string()}, which is neither a trusted root")
    assert gateway.pem.read_bytes() == pem
    assert gateway.restarts() == 0


def test_issue_against_a_ca_whose_root_is_not_trusted_stores_nothing_and_leaves_nothing(stack: Stack) -> None:
    settings = stack.settings()
    other = stack.dir / "other-root.pem"
    other.write_text(make_ca("Some Private Root")[1])
    settings["deploy"]["trusted_roots"] = str(other)
    root = x509.load_pem_x509_certificate(stack.pebble.roots_pem().encode())
    res = run_cli(stack.write_config(settings), "issue")
    assert_one_error_line(
        res,
        f"{ZONE}: the CA's certificate is not stored: its chain ends at {root.subject.rfc4514_string()}",
        "set deploy.trusted_roots to a PEM bundle with that root",
    )
    assert stored(stack, f"{ZONE}/current") is None
    assert stored(stack, "cert.pem") is None
    record = json.loads(stored(stack, f"{ZONE}/last-issue") or b"{}")
    assert record["ok"] is False
    assert "its chain ends at" in record["error"]
    assert no_challenge_records(stack)
    # Neither a kept set nor an order note (with its key) is left for the next run.
    issued = stack.dir / "state" / "issued"
    assert not issued.exists() or list(issued.iterdir()) == []
    # With Pebble's root named, the next run orders and stores as usual.
    assert run_cli(stack.write_config(stack.settings()), "issue").code == 0
    assert stored_set(stack) is not None
