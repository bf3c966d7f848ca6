"""`rgwtls check` through the CLI with many certificates, one of them issued by Pebble into the real pool."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import ZONE, Result, Stack

CLI = Callable[..., Result]
CRITICAL = 2


def test_check_of_many_certificates_prints_a_short_first_line_then_the_long_output(stack: Stack, cli: CLI) -> None:
    settings = stack.settings()
    others = [f"s{i}.{ZONE}" for i in range(5)]
    settings["certificate"] += [{"name": name, "domains": [name]} for name in others]
    config = stack.write_config(settings)
    issued = cli(config, "issue", "--cert", ZONE)
    assert issued.code == 0, issued.stderr
    res = cli(config, "check")
    assert res.code == CRITICAL, res.stdout + res.stderr
    assert res.stderr == ""
    first, *long_output = res.stdout.rstrip("\n").split("\n")
    assert len(first) < 200, first
    assert first == (
        f"RGWTLS CRITICAL - s0.{ZONE}: not in the pool; s1.{ZONE}: not in the pool; s2.{ZONE}: not in the pool; "
        "and 3 more | certificates=6;;;0 critical=6;;;0 warning=0;;;0"
    )
    assert long_output[:5] == [f"{n}: no certificate in the pool; run 'rgwtls issue' on the issuer" for n in others]
    # This host's gateway (deploy's certificate, the first) is not running: CRITICAL too, after the others.
    assert long_output[5].startswith(f"{ZONE}: no TLS handshake at 127.0.0.1:443")
    good, perf = long_output[6].split(" | ")
    assert good.startswith(f"{ZONE}: pool certificate good for ")
    assert perf.startswith(f"'{ZONE} days_left'=")
    assert len(long_output) == 7
