"""The demo: the whole design, end to end, on one machine, in well under a minute."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509

from devsite.local import LocalSite, local_site
from devsite.site import DOMAINS, ZONE

T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:5.1f}s] {text}", flush=True)


def run(argv: list[str], env: dict[str, str]) -> None:
    print("        $ " + " ".join(argv), flush=True)
    res = subprocess.run(argv, env={**os.environ, **env}, text=True, capture_output=True, check=False)
    for line in (res.stdout + res.stderr).splitlines():
        print("        " + line)
    if res.returncode != 0:
        raise SystemExit(f"demo: {argv[1]} failed (exit {res.returncode})")


def main() -> None:
    rgwtls = str(Path(sys.executable).with_name("rgwtls"))
    with tempfile.TemporaryDirectory(prefix="rgwtls-demo-") as tmp:
        work = Path(tmp)
        say(f"starting the local stack in {work}")
        with local_site(work, say) as site:
            show(site, work, rgwtls)
        say("stopped everything the demo started")
    say("done")


def show(site: LocalSite, work: Path, rgwtls: str) -> None:
    issuer_cfg, deploy_cfg, rgw = site.issuer_config, site.gateway_config, site.rgw
    say(f"rgwtls issue: ACME DNS-01 for {' and '.join(DOMAINS)} through the WAPI, into the pool")
    run([rgwtls, "-v", "issue"], {"RGWTLS_CONFIG": str(issuer_cfg)})
    say("rgwtls deploy: from the pool onto the gateway, restart, verify")
    run([rgwtls, "-v", "deploy"], {"RGWTLS_CONFIG": str(deploy_cfg)})
    say("rgwtls deploy again: nothing changed, so nothing is printed and nothing restarts")
    run([rgwtls, "deploy"], {"RGWTLS_CONFIG": str(deploy_cfg)})

    say("rgwtls status and rgwtls check: what an operator and the monitoring see")
    run([rgwtls, "status"], {"RGWTLS_CONFIG": str(deploy_cfg)})
    run([rgwtls, "check"], {"RGWTLS_CONFIG": str(deploy_cfg)})
    say("what the gateway serves now:")
    cert = x509.load_der_x509_certificate(rgw.certificate())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    print(f"        subject: {cert.subject.rfc4514_string() or '(empty)'}")
    print(f"        names:   {', '.join(san.get_values_for_type(x509.DNSName))}")
    print(f"        issuer:  {cert.issuer.rfc4514_string()}")
    print(f"        expires: {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    root = work / "pebble-root.pem"
    root.write_text(site.stack.pebble.roots_pem())
    bucket = f"anybucket.{ZONE}"
    say(f"an S3 request to a bucket host name, trusting only Pebble's root: https://{bucket}/")
    curl = [
        "curl",
        "-sS",
        "--resolve",
        f"{bucket}:{rgw.port}:127.0.0.1",
        "--cacert",
        str(root),
        "-o",
        "/dev/null",
        "-w",
        "HTTP %{http_code}, TLS verified: %{ssl_verify_result} (0 = ok)\\n",
        f"https://{bucket}:{rgw.port}/",
    ]
    run(curl, {})


if __name__ == "__main__":
    main()
