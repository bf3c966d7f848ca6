"""`python -m devsite up`: the local site, running until Ctrl-C, for trying rgwtls by hand."""

from __future__ import annotations

import signal
import sys
import tempfile
from pathlib import Path

from devsite.local import local_site

USAGE = "usage: python -m devsite up   (start the local site; Ctrl-C stops it)"


def up() -> int:
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell that starts this in the background hands it SIGINT ignored.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, stop)
    with tempfile.TemporaryDirectory(prefix="rgwtls-site-") as tmp:
        print(f"devsite: starting the local site in {tmp}", flush=True)
        try:
            with local_site(Path(tmp), lambda text: print(text, flush=True)) as site:
                print(
                    "devsite: up. Try:\n"
                    f"  RGWTLS_CONFIG={site.issuer_config} rgwtls -v issue\n"
                    f"  RGWTLS_CONFIG={site.gateway_config} rgwtls -v deploy\n"
                    f"  RGWTLS_CONFIG={site.gateway_config} rgwtls status\n"
                    "Ctrl-C stops everything.",
                    flush=True,
                )
                while True:
                    signal.pause()
        except KeyboardInterrupt:
            print("devsite: stopping", flush=True)
    return 0


def main(argv: list[str]) -> int:
    if argv == ["up"]:
        return up()
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
