"""Where radosgw reads its certificate: a PEM file, a key and a cert file, or the mon config-key store.

Each target builds the bytes radosgw reads from a set, says what is
installed now, installs, restores and, where the store cannot tell, records
what this host was restarted onto. The orchestration is deploy's; `status`
reads what is installed through the same targets.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from rgwtls import files
from rgwtls.config import DeployConfig
from rgwtls.store import CertSet, Pool

log = logging.getLogger(__name__)


class Target:
    def describe(self) -> str:
        raise NotImplementedError

    def build(self, s: CertSet) -> bytes:
        raise NotImplementedError

    def installed(self) -> bytes | None:
        raise NotImplementedError

    def previous(self) -> bytes | None:
        """What a rollback restores when the installed set itself is not served."""
        return None

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
    """beast's single file: key, then certificate, then chain."""
    return _joined(s.key_pem, s.cert_pem, s.chain_pem)


def _loads(key: bool, cert: bool) -> Callable[[bytes], None]:
    """A check that the bytes read back are what radosgw can load: a key, certificates, a key for the leaf."""

    def check(data: bytes) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        from rgwtls.certs import same_public_key

        try:
            k = serialization.load_pem_private_key(data, password=None) if key else None
            leaf = x509.load_pem_x509_certificates(data)[0] if cert else None
        except (ValueError, TypeError, IndexError):
            raise ValueError(
                "does not parse back as "
                + ("a key and " if key and cert else "a ")
                + ("certificate" if cert else "key")
            ) from None
        if k is not None and leaf is not None and not same_public_key(k, leaf):
            raise ValueError("holds a key that does not match its certificate")

    return check


class _Files:
    """Shared by the file layouts: the site's access kept, .previous beside the real file."""

    def __init__(self, d: DeployConfig) -> None:
        self.d = d

    def access(self, path: Path) -> files.Access:
        return files.access_for(path, self.d.file_mode, self.d.owner, self.d.group, lambda m: log.warning("%s", m))

    @staticmethod
    def previous_of(path: Path) -> Path:
        return path.with_name(path.name + ".previous")

    def write(self, path: Path, data: bytes, previous: bytes | None, check: Callable[[bytes], None]) -> None:
        real = files.real_path(path)
        files.remove_stale_temporaries(real)
        access = self.access(real)
        if previous is not None:
            files.atomic_write(self.previous_of(real), previous, access)
        files.atomic_write(real, data, access, check)


class PemFile(Target, _Files):
    def __init__(self, d: DeployConfig) -> None:
        _Files.__init__(self, d)
        self.path = Path(d.path)

    def describe(self) -> str:
        return str(self.path)

    def build(self, s: CertSet) -> bytes:
        return _pem(s)

    def installed(self) -> bytes | None:
        return files.read(self.path)

    def previous(self) -> bytes | None:
        return files.read(self.previous_of(files.real_path(self.path)))

    def install(self, data: bytes, previous: bytes | None) -> None:
        self.write(self.path, data, previous, _loads(key=True, cert=True))

    def restore(self, previous: bytes | None) -> None:
        if previous is None:
            files.remove(files.real_path(self.path))
        else:
            real = files.real_path(self.path)
            files.atomic_write(real, previous, self.access(real))


class SplitFiles(Target, _Files):
    """beast's ssl_private_key plus ssl_certificate (certificate and chain)."""

    SEP = b"\0"

    def __init__(self, d: DeployConfig) -> None:
        _Files.__init__(self, d)
        self.key, self.cert = Path(d.key_path), Path(d.cert_path)

    def describe(self) -> str:
        return f"{self.key} and {self.cert}"

    def build(self, s: CertSet) -> bytes:
        return _joined(s.cert_pem, s.chain_pem) + self.SEP + s.key_pem.encode()

    def _pair(self, cert: bytes | None, key: bytes | None) -> bytes | None:
        return None if cert is None or key is None else cert + self.SEP + key

    def installed(self) -> bytes | None:
        return self._pair(files.read(self.cert), files.read(self.key))

    def previous(self) -> bytes | None:
        return self._pair(
            files.read(self.previous_of(files.real_path(self.cert))),
            files.read(self.previous_of(files.real_path(self.key))),
        )

    def install(self, data: bytes, previous: bytes | None) -> None:
        # radosgw reads both only at its restart, which comes after both renames.
        cert, _, key = data.partition(self.SEP)
        old_cert, old_key = previous.partition(self.SEP)[::2] if previous is not None else (None, None)
        self.write(self.key, key, old_key, _loads(key=True, cert=False))
        self.write(self.cert, cert, old_cert, _loads(key=False, cert=True))

    def restore(self, previous: bytes | None) -> None:
        if previous is None:
            for p in (self.cert, self.key):
                files.remove(files.real_path(p))
            return
        cert, _, key = previous.partition(self.SEP)
        for path, data in ((self.key, key), (self.cert, cert)):
            real = files.real_path(path)
            files.atomic_write(real, data, self.access(real))


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
        if files.read(self.state) == _digest(current):
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
            files.atomic_write(self.state, _digest(self._built), files.Access(0o600, os.getuid(), os.getgid()))


def _digest(data: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(data).hexdigest().encode()


def make_target(d: DeployConfig, pool: Pool, name: str) -> Target:
    if d.layout == "split":
        return SplitFiles(d)
    if d.layout == "config-key":
        return ConfigKey(d, pool, name)
    return PemFile(d)
