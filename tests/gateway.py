"""A supervised radosgw with its own PEM, and a deploy config for it: one "host" of a fleet."""

from __future__ import annotations

from pathlib import Path

from rgwtls.deploy import served_fingerprint
from tests.certmaker import pem_file
from tests.stack.ceph import RadosGW, start_radosgw
from tests.stack.site import DOMAINS, ZONE, Stack


class Gateway:
    """One supervised radosgw with its own PEM, and a deploy config for it."""

    def __init__(self, stack: Stack, keyring: Path, workdir: Path, name: str = "a") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.stack = stack
        self.pem = workdir / "rgw.pem"
        # What the gateway served before rgwtls: a certificate from elsewhere, a month old.
        self.pem.write_text(pem_file(DOMAINS, days_before=30))
        self.pem.chmod(0o600)
        self.rgw: RadosGW = start_radosgw(stack.ceph, workdir, self.pem, name=name, supervised=True)
        self.settings = stack.settings()
        self.settings["ceph"]["user"] = "client.rgwtls-deploy"
        self.settings["ceph"]["keyring"] = str(keyring)
        self.settings["deploy"] = {
            "path": str(self.pem),
            "restart_command": self.rgw.restart_command,
            "verify_endpoint": f"127.0.0.1:{self.rgw.port}",
            "verify_timeout": 20.0,
            "restart_wait": 60.0,
            "state_dir": str(workdir / "state"),
        }
        self.name = name

    def config(self) -> Path:
        return self.stack.write_config(self.settings, f"deploy-{self.name}.toml")

    def served(self, host: str = f"anybucket.{ZONE}") -> str:
        return served_fingerprint(f"127.0.0.1:{self.rgw.port}", host, 5)

    def restarts(self) -> int:
        return int(self.rgw.supervisor("count"))

    def stop(self) -> None:
        self.rgw.stop()
        self.stack.ceph.gateways.remove(self.rgw)
