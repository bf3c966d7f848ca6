"""`rgwtls deploy` through the CLI, onto a real radosgw, from a pool filled by a real `issue`."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devsite.certmaker import make_cert, pem_file, site_ca
from devsite.gateway import Gateway
from tests.conftest import DOMAINS, POOL, ZONE, Result, Stack, run_cli
from tests.test_issue_e2e import account_of, assert_one_error_line, stored_set

CLI = Callable[..., Result]


def issue(stack: Stack, *args: str) -> None:
    res = run_cli(stack.write_config(stack.settings(), "issuer.toml"), "issue", *args)
    assert res.code == 0, res.stderr


def fingerprint_of_pool(stack: Stack) -> str:
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    s = stored_set(stack)
    assert s is not None
    cert = x509.load_pem_x509_certificate(str(s["cert_pem"]).encode())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def tls_client_trusting_pebble(stack: Stack, port: int, host: str) -> dict[str, Any]:
    """A real TLS client that trusts only Pebble's root, as an S3 client trusts Let's Encrypt's."""
    ctx = ssl.create_default_context(cadata=stack.pebble.roots_pem())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname=host) as tls,
    ):
        cert = tls.getpeercert()
        assert cert is not None
        return dict(cert)


# -- the happy path ------------------------------------------------------------------


def test_issue_then_deploy_serves_the_wildcard_certificate_to_a_real_client(stack: Stack, gateway: Gateway) -> None:
    issue(stack)
    res = run_cli(gateway.config(), "deploy")
    assert res.code == 0, res.stderr
    assert "NOTICE:" in res.stderr
    peer = tls_client_trusting_pebble(stack, gateway.rgw.port, f"anybucket.{ZONE}")
    assert ("DNS", f"*.{ZONE}") in peer["subjectAltName"]
    assert gateway.served() == fingerprint_of_pool(stack)
    assert gateway.restarts() == 1
    # Key, then certificate, then chain; the site's root:ceph 0640 kept; the old file kept.
    text = gateway.pem.read_text()
    assert text.index("PRIVATE KEY") < text.index("BEGIN CERTIFICATE")
    assert text.count("BEGIN CERTIFICATE") >= 2
    assert gateway.pem.stat().st_mode & 0o777 == 0o640
    assert gateway.readable_by_gateway(gateway.pem)
    assert gateway.pem.with_name("rgw.pem.previous").exists()


def test_second_deploy_changes_nothing_and_does_not_restart(stack: Stack, gateway: Gateway) -> None:
    issue(stack)
    config = gateway.config()
    assert run_cli(config, "deploy").code == 0
    mtime = gateway.pem.stat().st_mtime_ns
    pid = gateway.rgw.supervisor("pid")
    res = run_cli(config, "deploy")
    assert res.code == 0, res.stderr
    assert res.stderr == ""  # quiet for cron: no mail when nothing happened
    assert gateway.restarts() == 1
    assert gateway.rgw.supervisor("pid") == pid
    assert gateway.pem.stat().st_mtime_ns == mtime
    verbose = run_cli(config, "-v", "deploy")
    assert "nothing to do" in verbose.stderr


def test_renew_then_deploy_serves_the_new_certificate(stack: Stack, gateway: Gateway) -> None:
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    first = gateway.served()
    issue(stack, "--force")
    res = run_cli(gateway.config(), "deploy")
    assert res.code == 0, res.stderr
    assert gateway.served() == fingerprint_of_pool(stack) != first
    assert gateway.restarts() == 2


def test_dry_run_says_what_would_change_and_changes_nothing(stack: Stack, gateway: Gateway) -> None:
    issue(stack)
    before = gateway.pem.read_bytes()
    res = run_cli(gateway.config(), "deploy", "--dry-run")
    assert res.code == 0, res.stderr
    assert "would install" in res.stderr
    assert gateway.pem.read_bytes() == before
    assert gateway.restarts() == 0


def test_staging_set_is_deployed_only_with_staging(stack: Stack, gateway: Gateway) -> None:
    issue(stack, "--staging")
    res = run_cli(gateway.config(), "deploy")
    assert_one_error_line(res, "no certificate cog.example.org in pool rgwtls yet")
    assert gateway.restarts() == 0
    res = run_cli(gateway.config(), "deploy", "--staging")
    assert res.code == 0, res.stderr
    assert gateway.restarts() == 1


def test_split_layout_serves_the_certificate(stack: Stack, gateway: Gateway, tmp_path: Path) -> None:
    # beast with ssl_certificate (cert and chain) plus ssl_private_key.
    key, crt = tmp_path / "rgw.key", tmp_path / "rgw.crt"
    gateway.use_split(key, crt)
    issue(stack)
    res = run_cli(gateway.config(), "deploy")
    assert res.code == 0, res.stderr
    assert gateway.served() == fingerprint_of_pool(stack)
    assert "PRIVATE KEY" not in crt.read_text()
    assert run_cli(gateway.config(), "deploy").code == 0
    assert gateway.restarts() == 1


def loaded_by_a_deploy(gateway: Gateway, top: tuple[str, ...], ours: tuple[str, ...] = ()) -> list[str]:
    """The modules a whole `rgwtls deploy` process loaded, of these packages and of these rgwtls modules."""
    code = (
        "import json, sys\n"
        "from rgwtls.cli import main\n"
        "try:\n"
        "    main(['deploy'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {top!r} or m.startswith({ours!r}))))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "RGWTLS_CONFIG": str(gateway.config())},
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    loaded: list[str] = json.loads(res.stdout)
    return loaded


def test_deploy_does_not_import_the_acme_stack(stack: Stack, gateway: Gateway) -> None:
    issue(stack)
    assert loaded_by_a_deploy(gateway, ("acme", "josepy")) == []


def test_a_deploy_with_nothing_to_do_loads_no_cryptography_acme_or_dns_back_end(stack: Stack, gateway: Gateway) -> None:
    """Cron runs it every few minutes on every gateway: it reads, compares and asks the gateway, nothing more."""
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    heavy = ("acme", "josepy", "cryptography", "requests", "dns", "OpenSSL")
    ours = ("rgwtls.dns", "rgwtls.issue", "rgwtls.acmeflow", "rgwtls.validate", "rgwtls.status")
    assert loaded_by_a_deploy(gateway, heavy, ours) == []
    assert gateway.restarts() == 1


# -- the deploy-only user ------------------------------------------------------------


def test_deploy_only_user_can_deploy_but_cannot_read_the_account_key(
    stack: Stack, gateway: Gateway, deploy_keyring: Path
) -> None:
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    import rados

    r = stack.ceph.connect("client.rgwtls-deploy", deploy_keyring, timeout=5)
    try:
        ioctx = r.open_ioctx(POOL)
        ioctx.set_namespace("acme")
        with pytest.raises(rados.PermissionError):
            ioctx.read(account_of(stack), 1 << 20)
        ioctx.set_namespace("")
        assert ioctx.read(f"{ZONE}/current", 1 << 20)
        ioctx.close()
    finally:
        r.shutdown()


# -- bad sets: one line, the old certificate still served ---------------------------


def _put_set(stack: Stack, data: bytes) -> None:
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    try:
        ioctx.write_full(f"{ZONE}/current", data)
    finally:
        ioctx.close()


def _mutated(stack: Stack, **fields: Any) -> bytes:
    s = stored_set(stack)
    assert s is not None
    s.update(fields)
    return json.dumps(s).encode()


def _bad_set(kind: str, stack: Stack) -> bytes:
    now = dt.datetime.now(dt.UTC)
    ca_key, ca_pem = site_ca()  # trusted, so that only the fault named is refused
    good = stored_set(stack)
    assert good is not None
    raw = json.dumps({"format": "rgwtls-set/1", **good}).encode()
    if kind == "corrupt":
        return b"\x00garbage, not a set"
    if kind == "truncated":
        return raw[: len(raw) // 2]
    if kind == "mismatched key":
        other_key, _ = make_cert(DOMAINS, now, now + dt.timedelta(days=1))
        return _mutated(stack, format="rgwtls-set/1", key_pem=other_key)
    if kind == "expired":
        key, cert = make_cert(DOMAINS, now - dt.timedelta(days=100), now - dt.timedelta(days=10), ca_key)
        return _mutated(stack, format="rgwtls-set/1", key_pem=key, cert_pem=cert, chain_pem=ca_pem)
    if kind == "wrong names":
        key, cert = make_cert(("other.example.org",), now, now + dt.timedelta(days=60), ca_key)
        return _mutated(stack, format="rgwtls-set/1", key_pem=key, cert_pem=cert, chain_pem=ca_pem)
    if kind == "older":
        key, cert = make_cert(DOMAINS, now - dt.timedelta(days=20), now + dt.timedelta(days=60), ca_key)
        return _mutated(stack, format="rgwtls-set/1", key_pem=key, cert_pem=cert, chain_pem=ca_pem)
    if kind == "key stored as a number":
        return _mutated(stack, format="rgwtls-set/1", key_pem=5)
    if kind == "chain from another CA":
        return _mutated(stack, format="rgwtls-set/1", chain_pem=ca_pem)
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("corrupt", "is not a valid rgwtls certificate set"),
        ("truncated", "is not a valid rgwtls certificate set"),
        ("mismatched key", "the private key does not match the certificate"),
        ("expired", "expired at"),
        ("wrong names", "does not cover"),
        ("older", "refusing to roll back"),
        ("chain from another CA", "the chain does not issue the certificate"),
        ("key stored as a number", "key_pem is int"),
    ],
)
def test_bad_set_in_the_pool_leaves_the_old_certificate_served(
    stack: Stack, gateway: Gateway, kind: str, needle: str
) -> None:
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    served, pem, pid = gateway.served(), gateway.pem.read_bytes(), gateway.rgw.supervisor("pid")
    _put_set(stack, _bad_set(kind, stack))
    res = run_cli(gateway.config(), "deploy")
    assert_one_error_line(res, needle)
    assert gateway.served() == served
    assert gateway.pem.read_bytes() == pem
    assert gateway.rgw.supervisor("pid") == pid
    assert gateway.restarts() == 1


def test_allow_older_deploys_an_older_set_on_purpose(stack: Stack, gateway: Gateway) -> None:
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    _put_set(stack, _bad_set("older", stack))
    res = run_cli(gateway.config(), "deploy", "--allow-older")
    assert res.code == 0, res.stderr
    assert gateway.restarts() == 2


# -- failures after install: rolled back ---------------------------------------------------


def test_failing_restart_command_rolls_back(stack: Stack, gateway: Gateway, tmp_path: Path) -> None:
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    served, pem = gateway.served(), gateway.pem.read_bytes()
    issue(stack, "--force")
    # The first restart fails (say, a unit that does not exist), the rollback's works.
    flag = tmp_path / "failed-once"
    script = tmp_path / "restart.sh"
    script.write_text(
        f'#!/bin/sh\nif [ ! -e {flag} ]; then touch {flag}; echo "Unit not found." >&2; exit 5; fi\n'
        f"exec {gateway.rgw.restart_command}\n"
    )
    script.chmod(0o755)
    gateway.settings["deploy"]["restart_command"] = str(script)
    res = run_cli(gateway.config(), "deploy")
    assert_one_error_line(
        res,
        "the restart command failed (exit 5): Unit not found.",
        "restored the previous certificate and restarted: it is served again",
    )
    assert gateway.served() == served
    assert gateway.pem.read_bytes() == pem


def test_gateway_serving_the_wrong_certificate_is_rolled_back(stack: Stack, gateway: Gateway, tmp_path: Path) -> None:
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    served, pem = gateway.served(), gateway.pem.read_bytes()
    issue(stack, "--force")
    # The gateway comes up serving another file (a wrong ssl_certificate path, say).
    other = tmp_path / "other.pem"
    other.write_text(pem_file(("other.example.org",)))
    flag = tmp_path / "wrong-once"
    script = tmp_path / "restart.sh"
    script.write_text(
        f"#!/bin/sh\nif [ ! -e {flag} ]; then touch {flag}; exec {gateway.rgw.restart_command} {other}; fi\n"
        f"exec {gateway.rgw.restart_command}\n"
    )
    script.chmod(0o755)
    gateway.settings["deploy"]["restart_command"] = str(script)
    gateway.settings["deploy"]["verify_timeout"] = 3.0
    res = run_cli(gateway.config(), "deploy")
    assert_one_error_line(res, "did not serve certificate", "restored the previous certificate")
    assert gateway.served() == served
    assert gateway.pem.read_bytes() == pem


def test_stopped_cluster_fails_fast_and_touches_nothing(stack: Stack, gateway: Gateway) -> None:
    issue(stack)
    assert run_cli(gateway.config(), "deploy").code == 0
    issue(stack, "--force")
    served, pem = gateway.served(), gateway.pem.read_bytes()
    gateway.settings["ceph"]["timeout"] = 2.0
    config = gateway.config()
    with stack.ceph.mon_stopped():
        started = time.monotonic()
        res = run_cli(config, "deploy")
        took = time.monotonic() - started
    assert_one_error_line(res, "cannot connect to the Ceph cluster")
    assert took < 10, took
    assert gateway.served() == served
    assert gateway.pem.read_bytes() == pem
    assert gateway.restarts() == 1


# -- the fleet ------------------------------------------------------------------------


def test_three_gateways_deploying_at_once_never_restart_together(
    stack: Stack, deploy_keyring: Path, tmp_path: Path
) -> None:
    issue(stack)
    gateways = [Gateway(stack, deploy_keyring, tmp_path / f"rgw{i}", name=f"f{i}") for i in range(3)]
    try:
        spans = tmp_path / "spans"
        procs = []
        for gw in gateways:
            # Record when each restart starts and ends: the spans must not overlap.
            script = tmp_path / f"restart-{gw.name}.sh"
            script.write_text(
                f'#!/bin/sh\necho "start {gw.name} $(date +%s.%N)" >> {spans}\n'
                f"{gw.rgw.restart_command} >/dev/null || exit 1\n"
                f"sleep 0.3\n"
                f'echo "end {gw.name} $(date +%s.%N)" >> {spans}\n'
            )
            script.chmod(0o755)
            gw.settings["deploy"]["restart_command"] = str(script)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "rgwtls", "deploy"],
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "RGWTLS_CONFIG": str(gw.config())},
                )
            )
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        want = fingerprint_of_pool(stack)
        assert all(gw.served() == want for gw in gateways)
        events = sorted((float(t), kind) for kind, _, t in (line.split() for line in spans.read_text().splitlines()))
        depth = 0
        for _, kind in events:
            depth += 1 if kind == "start" else -1
            assert depth <= 1, events
        assert len(events) == 6
    finally:
        for gw in gateways:
            gw.stop()


def test_config_key_layout_serves_the_certificate_and_restarts_each_gateway_once(
    stack: Stack, gateway: Gateway, tmp_path: Path
) -> None:
    key = f"rgw/cert/rgw.test-{tmp_path.name[-12:]}"
    gateway.use_config_key(key)
    issue(stack)
    res = run_cli(gateway.config(), "deploy")
    assert res.code == 0, res.stderr
    assert gateway.served() == fingerprint_of_pool(stack)
    # The store is shared by the fleet; this host remembers it restarted onto it.
    assert run_cli(gateway.config(), "deploy").code == 0
    assert gateway.restarts() == 1
    # A failed restart puts the previous value back into the store.
    served, value = gateway.served(), stack.ceph.mon_command({"prefix": "config-key get", "key": key})
    issue(stack, "--force")
    flag = tmp_path / "failed-once"
    script = tmp_path / "restart.sh"
    script.write_text(
        f"#!/bin/sh\nif [ ! -e {flag} ]; then touch {flag}; exit 1; fi\nexec {gateway.rgw.restart_command}\n"
    )
    script.chmod(0o755)
    gateway.settings["deploy"]["restart_command"] = str(script)
    res = run_cli(gateway.config(), "deploy")
    assert_one_error_line(res, "restored the previous certificate and restarted: it is served again")
    assert stack.ceph.mon_command({"prefix": "config-key get", "key": key}) == value
    assert gateway.served() == served
