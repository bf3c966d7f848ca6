"""`rgwtls deploy`: from the pool to a certificate served by this gateway, safely.

Reads top to bottom: read, validate, build, compare, install, restart,
verify, and roll back if the gateway does not serve the new certificate.
It runs from cron every few minutes on every gateway, so the no-change path
is one RADOS read and one file read, and it never imports the ACME stack.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rgwtls.config import Config, DeployConfig
from rgwtls.errors import DeployError
from rgwtls.log import notice
from rgwtls.store import CertSet, Pool

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger(__name__)


def deploy(cfg: Config, dry_run: bool = False, staging: bool = False, allow_older: bool = False) -> bool:
    """Deploy the pool's current set if it differs from the installed one; True if it changed."""
    d = cfg.deploy
    cert_cfg = cfg.certificate(d.certificate or cfg.certificates[0].name)[0]
    names = d.names or cert_cfg.domains
    with Pool(cfg.ceph) as pool:
        # 1. Read the set in one atomic read.
        new = pool.read_set(cert_cfg.name, staging)
        if new is None:
            kind = "staging " if staging else ""
            raise DeployError(
                f"no {kind}certificate {cert_cfg.name} in pool {cfg.ceph.pool} yet; "
                f"run 'rgwtls issue{' --staging' if staging else ''}' on the issuer"
            )
        target = make_target(d, pool, cert_cfg.name)
        installed = target.installed()
        # 2. Build what radosgw reads, and 3. compare: nothing changed, nothing
        # to do. This is every cron run but one, so it needs no cryptography:
        # what is installed was validated when it was installed.
        built = target.build(new)
        if built == installed:
            log.info("%s: generation %d is installed; nothing to do", cert_cfg.name, new.generation)
            return False
        # 4. Validate before touching anything.
        from rgwtls.validate import check_set

        checked = check_set(new, names, dt.datetime.now(dt.UTC), _first_cert(installed), allow_older)
        expires = checked.cert.not_valid_after_utc
        what = f"{cert_cfg.name} generation {new.generation} (expires {expires:%Y-%m-%d})"
        if dry_run:
            notice(log, "dry run: would install %s to %s and run: %s", what, target.describe(), _restart_argv(d))
            return False
        if d.splay > 0:
            import random

            time.sleep(random.uniform(0, d.splay))  # noqa: S311 - spreading load, not secrecy
        hold = d.restart_timeout + 2 * d.verify_timeout + 60
        with pool.restart_slot(d.max_parallel_restarts, d.restart_wait, hold):
            # 5. Install atomically, keeping the previous for rollback.
            try:
                target.install(built, installed)
            except DeployError:
                with contextlib.suppress(DeployError):
                    target.restore(installed)
                raise
            # 6. Restart, and 7. verify the new certificate is served.
            try:
                _restart(d)
                _verify_served(d, names, checked.fingerprint)
            except DeployError as e:
                _roll_back(d, target, installed, names, e)
        target.commit()
        notice(
            log,
            "%s: installed %s to %s, restarted radosgw, and it serves it",
            cert_cfg.name,
            what,
            target.describe(),
        )
        return True


def _first_cert(blob: bytes | None) -> x509.Certificate | None:
    if not blob:
        return None
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(blob)[0]
    except (ValueError, IndexError):
        return None


def _roll_back(
    d: DeployConfig, target: Target, previous: bytes | None, names: tuple[str, ...], cause: DeployError
) -> None:
    """Put the previous certificate back, restart, and check it is served again."""
    target.restore(previous)
    old = _first_cert(previous)
    if old is None:
        raise DeployError(f"{cause}; removed the new file again (there was none before)") from None
    try:
        _restart(d)
        from rgwtls.probe import fingerprint

        _verify_served(d, names, fingerprint(old))
    except DeployError as again:
        raise DeployError(
            f"{cause}; restored the previous certificate, but the gateway does not serve it either "
            f"({again}): this gateway needs attention now"
        ) from None
    raise DeployError(f"{cause}; restored the previous certificate and restarted: it is served again") from None


def _restart_argv(d: DeployConfig) -> list[str]:
    return shlex.split(d.restart_command.format(host=os.uname().nodename.split(".")[0]))


def _restart(d: DeployConfig) -> None:
    from rgwtls.command import CommandFailed, run

    argv = _restart_argv(d)
    log.info("restarting radosgw: %s", shlex.join(argv))
    try:
        run(argv, d.restart_timeout)
    except CommandFailed as e:
        raise DeployError(f"the restart command {e.problem}") from None


def server_name(d: DeployConfig, names: tuple[str, ...]) -> str:
    if d.verify_server_name:
        return d.verify_server_name
    plain = [n for n in names if not n.startswith("*.")]
    return plain[0] if plain else "rgwtls-check." + names[0][2:]


def served_fingerprint(endpoint: str, sni: str, timeout: float) -> str:
    """SHA-256 of the certificate the endpoint serves for this name; raises OSError."""
    from rgwtls.probe import fingerprint, served_certificate

    return fingerprint(served_certificate(endpoint, sni, timeout))


def _verify_served(d: DeployConfig, names: tuple[str, ...], want: str) -> None:
    """Handshake until the wanted certificate is served; a live port alone proves nothing."""
    sni = server_name(d, names)
    deadline = time.monotonic() + d.verify_timeout
    seen = "no handshake tried"
    while True:
        try:
            got = served_fingerprint(d.verify_endpoint, sni, timeout=min(5.0, d.verify_timeout))
        except (OSError, ValueError) as e:
            seen = f"handshake failed: {e}"
        else:
            if got == want:
                log.info("%s serves certificate %s for %s", d.verify_endpoint, want[:16], sni)
                return
            seen = f"it serves certificate {got[:16]}"
        if time.monotonic() >= deadline:
            raise DeployError(
                f"{d.verify_endpoint} did not serve certificate {want[:16]} for {sni} within "
                f"{d.verify_timeout:g}s ({seen})"
            )
        time.sleep(0.1)


# -- targets: where radosgw reads its certificate --------------------------------------


class Target:
    def describe(self) -> str:
        raise NotImplementedError

    def build(self, s: CertSet) -> bytes:
        raise NotImplementedError

    def installed(self) -> bytes | None:
        raise NotImplementedError

    def install(self, data: bytes, previous: bytes | None) -> None:
        """Write `data`; `previous` is what `installed()` returned, kept beside it for a rollback."""
        raise NotImplementedError

    def restore(self, previous: bytes | None) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        """Record a verified deployment, where the target needs to."""


def _joined(*pems: str) -> bytes:
    return "".join(p if p.endswith("\n") else p + "\n" for p in pems).encode()


def _pem(s: CertSet) -> bytes:
    """civetweb's and beast's single file: key, then certificate, then chain."""
    return _joined(s.key_pem, s.cert_pem, s.chain_pem)


class PemFile(Target):
    def __init__(self, d: DeployConfig) -> None:
        self.path = Path(d.path)
        self.d = d

    def describe(self) -> str:
        return str(self.path)

    def build(self, s: CertSet) -> bytes:
        return _pem(s)

    def installed(self) -> bytes | None:
        return _read(self.path)

    def install(self, data: bytes, previous: bytes | None) -> None:
        if previous is not None:
            atomic_write(self.path.with_name(self.path.name + ".previous"), previous, self.d, like=self.path)
        atomic_write(self.path, data, self.d)

    def restore(self, previous: bytes | None) -> None:
        if previous is None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        else:
            atomic_write(self.path, previous, self.d)


class SplitFiles(Target):
    """beast's ssl_private_key plus ssl_certificate (certificate and chain)."""

    SEP = b"\0"

    def __init__(self, d: DeployConfig) -> None:
        self.key, self.cert, self.d = Path(d.key_path), Path(d.cert_path), d

    def describe(self) -> str:
        return f"{self.key} and {self.cert}"

    def build(self, s: CertSet) -> bytes:
        return _joined(s.cert_pem, s.chain_pem) + self.SEP + s.key_pem.encode()

    def installed(self) -> bytes | None:
        cert, key = _read(self.cert), _read(self.key)
        return None if cert is None or key is None else cert + self.SEP + key

    def install(self, data: bytes, previous: bytes | None) -> None:
        # radosgw reads both only at its restart, which comes after both renames.
        cert, _, key = data.partition(self.SEP)
        if previous is not None:
            old_cert, _, old_key = previous.partition(self.SEP)
            atomic_write(self.cert.with_name(self.cert.name + ".previous"), old_cert, self.d, like=self.cert)
            atomic_write(self.key.with_name(self.key.name + ".previous"), old_key, self.d, like=self.key)
        atomic_write(self.key, key, self.d)
        atomic_write(self.cert, cert, self.d)

    def restore(self, previous: bytes | None) -> None:
        if previous is None:
            for p in (self.cert, self.key):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        else:
            self.install(previous, None)


class ConfigKey(Target):
    """The mon config-key store, for `ssl_certificate=config://KEY` as cephadm does.

    The store is shared by the whole fleet, so whether *this* gateway was
    restarted onto it is remembered in a local state file.
    """

    def __init__(self, d: DeployConfig, pool: Pool, name: str) -> None:
        self.d, self.pool = d, pool
        self.state = Path(d.state_dir) / f"{name}.config-key.deployed"
        self._built: bytes | None = None

    def describe(self) -> str:
        return f"config-key {self.d.config_key}"

    def build(self, s: CertSet) -> bytes:
        self._built = _pem(s)
        return self._built

    # Before a value this host has not restarted onto: it then differs from
    # any build, while the certificate in it still counts for the "older"
    # check and is what a rollback restores.
    UNVERIFIED = b"not restarted onto on this host:\n"

    def installed(self) -> bytes | None:
        current = self.pool.config_key_get(self.d.config_key)
        if current is None:
            return None
        if _read(self.state) == _digest(current):
            return current
        return self.UNVERIFIED + current

    def install(self, data: bytes, previous: bytes | None) -> None:
        # The store keeps no copy; `previous` stays in memory for a rollback.
        self.pool.config_key_set(self.d.config_key, data)

    def restore(self, previous: bytes | None) -> None:
        if previous is not None:
            self.pool.config_key_set(self.d.config_key, previous.removeprefix(self.UNVERIFIED))

    def commit(self) -> None:
        if self._built is not None:
            self.state.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.state, _digest(self._built), self.d)


def _digest(data: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(data).hexdigest().encode()


def make_target(d: DeployConfig, pool: Pool, name: str) -> Target:
    if d.layout == "split":
        return SplitFiles(d)
    if d.layout == "config-key":
        return ConfigKey(d, pool, name)
    return PemFile(d)


# -- files ----------------------------------------------------------------------------------


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DeployError(f"cannot read {path}: {e.strerror}") from None


def _owner(d: DeployConfig, existing: Path) -> tuple[int, int]:
    """Keep the installed file's owner; a new file gets the configured one."""
    try:
        st = existing.stat()
        return st.st_uid, st.st_gid
    except FileNotFoundError:
        pass
    import grp
    import pwd

    try:
        uid = pwd.getpwnam(d.owner).pw_uid if d.owner else os.getuid()
        gid = grp.getgrnam(d.group).gr_gid if d.group else os.getgid()
    except KeyError as e:
        raise DeployError(f"deploy.owner/group: no such user or group {e}") from None
    return uid, gid


def atomic_write(path: Path, data: bytes, d: DeployConfig, like: Path | None = None) -> None:
    """Write a temporary file beside it (0600, owner kept), fsync, rename over, fsync the directory."""
    uid, gid = _owner(d, like or path)
    tmp = path.with_name(f".{path.name}.rgwtls-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if (uid, gid) != (os.getuid(), os.getgid()):
                os.fchown(fd, uid, gid)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise DeployError(f"cannot write {path}: {e.strerror}; nothing was changed") from None
