"""`rgwtls issue` through the CLI, against real Pebble, BIND, Ceph and the WAPI emulator."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from rgwtls.certs import key_matches_cert
from tests.conftest import DOMAINS, POOL, ZONE, Result, Stack, run_cli

CLI = Callable[..., Result]


def stored(stack: Stack, obj: str, ns: str = "") -> bytes | None:
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    try:
        ioctx.set_namespace(ns)
        try:
            return bytes(ioctx.read(obj, 1 << 20))
        except Exception:
            return None
    finally:
        ioctx.close()


def account_of(stack: Stack, staging: bool = False) -> str:
    """The pool object (namespace acme) of the account at the stack's Pebble, production or staging side."""
    from rgwtls.issue import account_object

    return account_object(stack.pebble.directory_url + ("?staging" if staging else ""))


def stored_account(stack: Stack, staging: bool = False) -> bytes | None:
    return stored(stack, account_of(stack, staging), ns="acme")


def stored_set(stack: Stack, which: str = "current", ns: str = "") -> dict[str, object] | None:
    raw = stored(stack, f"{ZONE}/{which}", ns)
    return json.loads(raw) if raw else None


def verify_against_pebble(stack: Stack, cert_pem: str, chain_pem: str, host: str) -> None:
    root = x509.load_pem_x509_certificate(stack.pebble.roots_pem().encode())
    leaf = x509.load_pem_x509_certificate(cert_pem.encode())
    chain = x509.load_pem_x509_certificates(chain_pem.encode())
    verifier = PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName(host))
    verifier.verify(leaf, chain)


def no_challenge_records(stack: Stack) -> bool:
    return not stack.bind.txt(f"_acme-challenge.{ZONE}") and not stack.wapi.records()


def assert_one_error_line(res: Result, *needles: str) -> None:
    assert res.code == 1, res.stderr
    errors = [line for line in res.lines if line.startswith("ERROR:")]
    assert len(errors) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n in errors[0], errors[0]


# -- the happy path --------------------------------------------------------------


def test_issue_stores_a_wildcard_and_apex_certificate_that_pebbles_root_verifies(stack: Stack, cli: CLI) -> None:
    res = cli(stack.write_config(stack.settings()), "issue")
    assert res.code == 0, res.stderr
    s = stored_set(stack)
    assert s is not None
    assert s["generation"] == 1
    assert tuple(s["domains"]) == DOMAINS  # type: ignore[arg-type]
    assert key_matches_cert(str(s["key_pem"]), str(s["cert_pem"]))
    verify_against_pebble(stack, str(s["cert_pem"]), str(s["chain_pem"]), f"anybucket.{ZONE}")
    verify_against_pebble(stack, str(s["cert_pem"]), str(s["chain_pem"]), ZONE)
    # The legacy objects, for `rados get` and old scripts.
    assert stored(stack, "privkey.pem") == str(s["key_pem"]).encode()
    assert stored(stack, "cert.pem") == str(s["cert_pem"]).encode()
    assert stored(stack, "chain.pem") == str(s["chain_pem"]).encode()
    assert no_challenge_records(stack)
    # The Infoblox path really was used, with one Basic login and the cookie after it.
    assert stack.wapi.basic_logins == 1
    assert "stored generation 1" in res.stderr


def test_second_run_does_nothing_and_force_renews_keeping_the_previous(stack: Stack, cli: CLI) -> None:
    config = stack.write_config(stack.settings())
    assert cli(config, "issue").code == 0
    first = stored_set(stack)
    quiet = cli(config, "issue")
    assert quiet.code == 0, quiet.stderr
    assert quiet.stderr == ""  # cron mails nothing when nothing happened
    again = cli(config, "-v", "issue")
    assert again.code == 0, again.stderr
    assert len(again.lines) == 1, again.stderr
    assert "nothing to do" in again.lines[0]
    assert stored_set(stack) == first
    forced = cli(config, "issue", "--force")
    assert forced.code == 0, forced.stderr
    second = stored_set(stack)
    assert second is not None
    assert first is not None
    assert second["generation"] == 2
    assert second["key_pem"] != first["key_pem"]
    assert stored_set(stack, "previous") == first


def test_staging_result_is_stored_apart_with_its_own_account(stack: Stack, cli: CLI) -> None:
    res = cli(stack.write_config(stack.settings()), "issue", "--staging")
    assert res.code == 0, res.stderr
    assert stored_set(stack) is None
    assert stored(stack, "privkey.pem") is None
    assert stored_set(stack, ns="staging") is not None
    assert stored_account(stack, staging=True) is not None
    assert stored_account(stack) is None


def test_rfc2136_back_end_issues_a_certificate(stack: Stack, cli: CLI) -> None:
    res = cli(stack.write_config(stack.settings("rfc2136")), "issue")
    assert res.code == 0, res.stderr
    assert stored_set(stack) is not None
    assert not stack.bind.txt(f"_acme-challenge.{ZONE}")


def write_hook(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_hook_back_end_issues_a_certificate_with_a_dehydrated_style_hook(stack: Stack, cli: CLI) -> None:
    # A hook as dehydrated calls it: operation first, unknown operations ignored.
    secret = stack.secret_file("hook-tsig", stack.bind.tsig_secret)
    calls = stack.dir / "calls"
    hook = write_hook(
        stack.dir / "hook.sh",
        f"""echo "$@" >> {calls}
case "$1" in
  deploy_challenge) op=add ;;
  clean_challenge) op=delete ;;
  *) exit 0 ;;
esac
printf 'server 127.0.0.1 {stack.bind.port}\\nupdate %s _acme-challenge.%s. 60 TXT "%s"\\nsend\\n' \\
  "$op" "$2" "$4" | nsupdate -y "{stack.bind.tsig_algorithm}:{stack.bind.tsig_name}:$(cat {secret})"
""",
    )
    settings = stack.settings("hook")
    settings["dns"]["hook"] = {"command": str(hook)}
    res = cli(stack.write_config(settings), "issue")
    assert res.code == 0, res.stderr
    assert stored_set(stack) is not None
    ops = [line.split()[:2] for line in calls.read_text().splitlines()]
    assert ops.count(["deploy_challenge", ZONE]) == 2  # apex and wildcard: two values, one name
    assert ops.count(["clean_challenge", ZONE]) == 2
    assert not stack.bind.txt(f"_acme-challenge.{ZONE}")


def test_two_concurrent_issuers_produce_one_certificate_and_both_exit_0(stack: Stack) -> None:
    """Two issuer hosts whose cron fires in the same minute: one issues, the other finds the lock held and is done."""
    config = stack.write_config(stack.settings())
    env = {"RGWTLS_CONFIG": str(config)}
    import os

    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "rgwtls", "-v", "issue"],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        for _ in range(2)
    ]
    outs = [(p.wait(120), p.stderr.read() if p.stderr else "") for p in procs]
    for p in procs:
        if p.stderr:
            p.stderr.close()
    codes = sorted(code for code, _ in outs)
    text = "\n".join(err for _, err in outs)
    assert codes == [0, 0], text
    assert "ERROR" not in text
    # The second either found the lock held, or took it after the first and found the set fresh.
    assert "this issuer has nothing to do" in text or text.count("nothing to do") == 1, text
    s = stored_set(stack)
    assert s is not None
    assert s["generation"] == 1


# -- failures: one line, nothing stored, no record left ----------------------------


@pytest.mark.parametrize(
    ("status", "needle"),
    [(401, "authentication failed"), (503, "HTTP 503"), (500, "HTTP 500")],
)
def test_wapi_error_fails_cleanly(stack: Stack, cli: CLI, status: int, needle: str) -> None:
    stack.wapi.fail(status)
    res = cli(stack.write_config(stack.settings()), "issue")
    stack.wapi.fail(None)
    assert_one_error_line(res, "infoblox:", needle)
    assert stored_set(stack) is None
    assert no_challenge_records(stack)


def test_wrong_wapi_password_says_which_user_failed(stack: Stack, cli: CLI) -> None:
    settings = stack.settings()
    settings["dns"]["infoblox"]["password_file"] = str(stack.secret_file("bad-pw", "wrong"))
    res = cli(stack.write_config(settings), "issue")
    assert_one_error_line(res, "authentication failed for user", "HTTP 401")
    assert "wrong" not in res.stderr
    assert stack.wapi.password not in res.stderr


def test_unknown_wapi_view_is_reported_in_wapis_words(stack: Stack, cli: CLI) -> None:
    settings = stack.settings()
    settings["dns"]["infoblox"]["view"] = "nosuchview"
    res = cli(stack.write_config(settings), "issue")
    assert_one_error_line(res, "infoblox: could not create TXT record", "Client.Ibap.Data.NotFound")
    assert no_challenge_records(stack)


def test_slow_wapi_times_out_with_a_clear_line(stack: Stack, cli: CLI) -> None:
    settings = stack.settings()
    settings["dns"]["infoblox"]["timeout"] = 0.5
    settings["dns"]["infoblox"]["retries"] = 2
    stack.wapi.slow(2.0)
    started = time.monotonic()
    res = cli(stack.write_config(settings), "issue")
    stack.wapi.slow(None)
    assert_one_error_line(res, "answer from", "within 0.5s")
    assert time.monotonic() - started < 30
    assert stored_set(stack) is None


def test_transient_wapi_503_is_retried(stack: Stack, cli: CLI) -> None:
    stack.wapi.fail(503, count=1, methods={"POST"})
    res = cli(stack.write_config(stack.settings()), "issue")
    assert res.code == 0, res.stderr
    assert stored_set(stack) is not None
    assert no_challenge_records(stack)


def test_dns_that_never_propagates_fails_and_removes_the_records(stack: Stack, cli: CLI, tmp_path: Path) -> None:
    from devsite.bind import bind_server

    # A second authoritative server that never receives the update.
    with bind_server(tmp_path / "lagging", zones=(ZONE,)) as lagging:
        settings = stack.settings()
        settings["dns"]["nameservers"] = [f"127.0.0.1:{stack.bind.port}", f"127.0.0.1:{lagging.port}"]
        settings["dns"]["propagation_timeout"] = 1.0
        res = cli(stack.write_config(settings), "issue")
    assert_one_error_line(res, "DNS did not propagate within 1s", f"127.0.0.1:{lagging.port}")
    assert stored_set(stack) is None
    assert no_challenge_records(stack)


def test_hook_that_publishes_a_wrong_value_fails_cleanly(stack: Stack, cli: CLI) -> None:
    secret = stack.secret_file("hook-tsig", stack.bind.tsig_secret)
    hook = write_hook(
        stack.dir / "bad-hook.sh",
        f"""[ "$1" = deploy_challenge ] || exit 0
printf 'server 127.0.0.1 {stack.bind.port}\\nupdate add _acme-challenge.%s. 60 TXT "wrong-%s"\\nsend\\n' \\
  "$2" "$4" | nsupdate -y "{stack.bind.tsig_algorithm}:{stack.bind.tsig_name}:$(cat {secret})"
""",
    )
    settings = stack.settings("hook")
    settings["dns"]["hook"] = {"command": str(hook)}
    settings["dns"]["propagation_timeout"] = 1.0
    res = cli(stack.write_config(settings), "issue")
    assert_one_error_line(res, "DNS did not propagate")
    assert stored_set(stack) is None
    # Clean up behind the faulty hook, which left its wrong values.
    for value in stack.bind.txt(f"_acme-challenge.{ZONE}"):
        stack.bind.delete_txt(f"_acme-challenge.{ZONE}", value)


def test_failing_hook_is_reported_with_its_own_words(stack: Stack, cli: CLI) -> None:
    hook = write_hook(stack.dir / "fail-hook.sh", 'echo "zone is locked by change freeze" >&2; exit 3\n')
    settings = stack.settings("hook")
    settings["dns"]["hook"] = {"command": str(hook)}
    res = cli(stack.write_config(settings), "issue")
    assert_one_error_line(res, "hook:", "failed (exit 3): zone is locked by change freeze")


def test_records_left_by_a_crashed_run_are_removed_and_foreign_ones_kept(stack: Stack, cli: CLI) -> None:
    name = f"_acme-challenge.{ZONE}"
    # What a run killed after presenting leaves: a journal entry and a marked record.
    stack.wapi.add_record(name, "left-by-crash", comment="rgwtls acme-challenge by rgw1")
    stack.wapi.add_record(name, "someone-elses", comment="made by hand")
    journal = json.dumps([{"domain": ZONE, "token": "t", "value": "left-by-crash"}]).encode()
    ioctx = stack.ceph.admin().open_ioctx(POOL)
    ioctx.set_namespace("acme")
    ioctx.write_full("challenges.journal", journal)
    ioctx.close()
    res = cli(stack.write_config(stack.settings()), "issue")
    assert res.code == 0, res.stderr
    assert "left by an earlier run" in res.stderr
    texts = {r["text"] for r in stack.wapi.records()}
    assert texts == {"someone-elses"}
    assert stack.bind.txt(name) == {"someone-elses"}
    assert stored(stack, "challenges.journal", ns="acme") is None
    stack.wapi.records()  # the foreign record stays; remove it for the next tests
    for r in stack.wapi.records():
        stack.wapi.delete_record(r["_ref"])


def test_stopped_mon_fails_within_seconds_and_touches_nothing(stack: Stack, cli: CLI) -> None:
    settings = stack.settings()
    settings["ceph"]["timeout"] = 2.0
    config = stack.write_config(settings)
    with stack.ceph.mon_stopped():
        started = time.monotonic()
        res = cli(config, "issue")
        took = time.monotonic() - started
    assert_one_error_line(res, "cannot connect to the Ceph cluster", "check that the mons are up")
    assert took < 10, took
    assert no_challenge_records(stack)


def test_stopped_osd_fails_within_seconds_and_touches_nothing(stack: Stack, cli: CLI) -> None:
    settings = stack.settings()
    settings["ceph"]["timeout"] = 2.0
    config = stack.write_config(settings)
    with stack.ceph.osd_stopped():
        started = time.monotonic()
        res = cli(config, "issue")
        took = time.monotonic() - started
    assert_one_error_line(res, "timed out")
    assert took < 10, took
    assert no_challenge_records(stack)


def test_unknown_certificate_name_is_one_line(stack: Stack, cli: CLI) -> None:
    res = cli(stack.write_config(stack.settings()), "issue", "--cert", "nope")
    assert_one_error_line(res, "no certificate named 'nope'")


def test_debug_shows_the_traceback(stack: Stack) -> None:
    res = run_cli(stack.write_config(stack.settings()), "--debug", "issue", "--cert", "nope")
    assert res.code == 1
    assert "Traceback" in res.stderr


def test_ec_p256_certificate_is_issued_when_configured(stack: Stack, cli: CLI) -> None:
    settings = stack.settings()
    settings["acme"]["key_type"] = "ec256"
    res = cli(stack.write_config(settings), "issue")
    assert res.code == 0, res.stderr
    s = stored_set(stack)
    assert s is not None
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(str(s["key_pem"]).encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    verify_against_pebble(stack, str(s["cert_pem"]), str(s["chain_pem"]), f"anybucket.{ZONE}")


@pytest.mark.parametrize("provider", ["infoblox", "rfc2136"])
def test_no_secret_reaches_the_output_even_with_debug(stack: Stack, provider: str) -> None:
    res = run_cli(stack.write_config(stack.settings(provider)), "--debug", "issue")
    assert res.code == 0, res.stderr
    s = stored_set(stack)
    assert s is not None
    key_body = str(s["key_pem"]).splitlines()[1]
    account = stored_account(stack)
    assert account is not None
    account_key_body = json.loads(account)["key"].splitlines()[1]
    cephx = stack.keyring.read_text().split("key = ")[1].split()[0]
    out = res.stdout + res.stderr
    for secret in (stack.wapi.password, stack.bind.tsig_secret, key_body, account_key_body, cephx):
        assert secret not in out
