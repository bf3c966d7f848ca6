"""A supervised radosgw with its own PEM, and a deploy config for it: one "host" of a fleet."""

from __future__ import annotations

import os
from pathlib import Path

from devsite.ceph import RadosGW, give, start_radosgw
from devsite.certmaker import pem_file
from devsite.site import DEPLOY_CAPS, DOMAINS, ZONE, Stack
from rgwtls.probe import served_fingerprint


class Gateway:
    """One supervised radosgw with its own PEM, and a deploy config for it.

    radosgw runs as `user`/`group` after reading its PEM as root, as Debian's
    unit runs it. The PEM starts as sites commonly keep it, root:ceph 0640;
    `mode`, `owner` and `group` choose another start, for a deploy test that
    must keep what it finds.
    """

    def __init__(
        self,
        stack: Stack,
        keyring: Path,
        workdir: Path,
        name: str = "a",
        *,
        mode: int = 0o640,
        owner: str = "root",
        group: str = "ceph",
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.stack = stack
        self.pem = workdir / "rgw.pem"
        # What the gateway served before rgwtls: a certificate from elsewhere, a
        # month old. Created 0600: the key is never readable by others, even for a moment.
        fd = os.open(self.pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(pem_file(DOMAINS, days_before=30))
        give(self.pem, mode, owner, group)
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
            "trusted_roots": self.settings["deploy"]["trusted_roots"],
        }
        self.name = name

    @property
    def user(self) -> str:
        """The user radosgw runs as once it dropped root."""
        return self.rgw.user

    @property
    def group(self) -> str:
        """radosgw's group once it dropped root: the group a PEM is shared with."""
        return self.rgw.group

    def readable_by_gateway(self, path: Path) -> bool:
        """Whether radosgw's user and group can read `path`, by really reading it as them."""
        return self.rgw.readable_by_gateway(path)

    def _serve(self, setting: str) -> None:
        """Restart radosgw with `setting` in place of `ssl_certificate=<its PEM>`."""
        self.rgw.stop()
        self.rgw.server.argv = [a.replace(f"ssl_certificate={self.pem}", setting) for a in self.rgw.server.argv]
        self.rgw.start()

    def serve_from(self, pem: Path) -> None:
        """radosgw reads `pem` (a symlink, another filesystem), and deploy writes there."""
        self._serve(f"ssl_certificate={pem}")
        self.settings["deploy"]["path"] = str(pem)

    def use_split(self, key: Path, crt: Path) -> None:
        """beast's ssl_private_key plus ssl_certificate (certificate and chain), as the site had them."""
        old = pem_file(DOMAINS, days_before=30)
        for path, text in (
            (key, old[: old.index("-----BEGIN CERTIFICATE")]),
            (crt, old[old.index("-----BEGIN CERTIFICATE") :]),
        ):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        self._serve(f"ssl_certificate={crt} ssl_private_key={key}")
        self.settings["deploy"].update(layout="split", key_path=str(key), cert_path=str(crt))

    def use_config_key(self, key: str) -> None:
        """radosgw reads config://KEY, as cephadm sets it up; deploy writes there as a narrowly capped user."""
        ceph = self.stack.ceph
        # radosgw's user needs `config-key get` on rgw/cert/.
        ceph.create_user(
            self.rgw.name,
            {"mon": 'allow rw, allow command "config-key get" with key prefix rgw/cert/', "osd": "allow rwx"},
        )
        ceph.mon_command({"prefix": "config-key set", "key": key}, pem_file(DOMAINS, days_before=30).encode())
        self._serve(f"ssl_certificate=config://{key}")
        # The deploy user may read and set exactly that prefix.
        keyring = ceph.create_user(
            "client.rgwtls-deploy-ck",
            {
                "mon": 'allow r, allow command "config-key get" with key prefix rgw/cert/, '
                'allow command "config-key set" with key prefix rgw/cert/',
                "osd": DEPLOY_CAPS["osd"],
            },
        )
        self.settings["ceph"].update(user="client.rgwtls-deploy-ck", keyring=str(keyring))
        self.settings["deploy"].update(layout="config-key", config_key=key)

    def config(self) -> Path:
        return self.stack.write_config(self.settings, f"deploy-{self.name}.toml")

    def served(self, host: str = f"anybucket.{ZONE}") -> str:
        return served_fingerprint(f"127.0.0.1:{self.rgw.port}", host, 5)

    def restarts(self) -> int:
        return int(self.rgw.supervisor("count"))

    def stop(self) -> None:
        self.rgw.stop()
        self.stack.ceph.gateways.remove(self.rgw)
