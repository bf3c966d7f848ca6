"""The demo: the whole design, end to end, on one machine, in well under a minute."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509

from tests.certmaker import pem_file
from tests.stack.bind import bind_server
from tests.stack.ceph import ceph_cluster, start_radosgw
from tests.stack.pebble import pebble_server
from tests.stack.site import DEPLOY_CAPS, DOMAINS, ISSUER_CAPS, POOL, ZONE, Stack
from tests.stack.tlsca import TestCA
from tests.stack.wapi import wapi_emulator

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
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="rgwtls-demo-") as tmp:
        work = Path(tmp)
        say(f"starting the local stack in {work}")
        ca = TestCA(work / "ca")
        bind = stack.enter_context(bind_server(work / "bind", zones=(ZONE,)))
        say(f"  BIND 9, authoritative for {ZONE}, on 127.0.0.1:{bind.port}")
        pebble = stack.enter_context(pebble_server(work / "pebble", ca, bind.port))
        say(f"  Pebble (the ACME test CA), validating against that BIND: {pebble.directory_url}")
        wapi = stack.enter_context(wapi_emulator(work / "wapi", bind))
        say(f"  Infoblox WAPI emulator, writing into that BIND: {wapi.url}/wapi/v2.11/")
        ceph = stack.enter_context(ceph_cluster(work / "ceph", pools=(POOL,)))
        say(f"  Ceph: one mon, one memstore OSD, pool {POOL}")
        pem = work / "rgw.pem"
        pem.write_text(pem_file(DOMAINS))  # what the gateway served before: some other certificate
        pem.chmod(0o600)
        rgw = start_radosgw(ceph, work / "rgw", pem, supervised=True)
        say(f"  radosgw (beast) serving HTTPS on 127.0.0.1:{rgw.port} from {pem}")

        site = Stack(work, bind, pebble, ceph, wapi, ceph.create_user("client.rgwtls-issuer", ISSUER_CAPS))
        settings = site.settings()
        issuer_cfg = site.write_config(settings, "issuer.toml")
        settings["ceph"].update(
            user="client.rgwtls-deploy", keyring=str(ceph.create_user("client.rgwtls-deploy", DEPLOY_CAPS))
        )
        settings["deploy"] = {
            "path": str(pem),
            "restart_command": rgw.restart_command,
            "verify_endpoint": f"127.0.0.1:{rgw.port}",
        }
        deploy_cfg = site.write_config(settings, "gateway.toml")

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
        root.write_text(pebble.roots_pem())
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
        say("stopping everything the demo started")
    say("done")


if __name__ == "__main__":
    main()
