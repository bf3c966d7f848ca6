"""Every file rgwtls writes, written so that no reader ever sees half of one.

The one writer of files in the package: what radosgw reads, the state and
kept sets under `deploy.state_dir`, and the metrics in node_exporter's
textfile directory, which a site often shares with a group (`root:ceph
0775`). So the temporary file has a name nobody can guess, and is opened
with O_EXCL|O_NOFOLLOW: a link planted there by a member of that group is
never written through, and its mode is set on the open descriptor, never
through a path.

A private key is involved, and a site chose who may read it: a replaced file
keeps its mode, owner and group (less any access for others), a new one gets
`deploy.mode` and `deploy.owner`/`deploy.group`. Every write goes to a
temporary file beside the target, every byte is checked as written and read
back, then fsynced and renamed over it: a full disk or a signal leaves the old
file whole. A symlinked target keeps its link: the file it points at is
replaced, as certbot's live/ links keep pointing into archive/.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rgwtls.errors import DeployError

TMP_MARK = ".rgwtls-"


@dataclass(frozen=True)
class Access:
    """Mode, owner and group a file is written with."""

    mode: int
    uid: int
    gid: int


def real_path(path: Path) -> Path:
    """Where the bytes go: a symlink's target (a chain of them), so the link itself stays."""
    return Path(os.path.realpath(path))


def read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DeployError(f"cannot read {path}: {e.strerror}") from None


def access_for(path: Path, mode: int, owner: str, group: str, warn: Callable[[str], None]) -> Access:
    """Keep what the site gave an existing file; a new one gets the configured access.

    An existing file that others may read loses that access: it holds a
    private key, and keeping a mistake would repeat it on every rotation.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise DeployError(f"cannot inspect {path}: {e.strerror}; nothing was changed") from None
    else:
        kept = stat.S_IMODE(st.st_mode) & 0o770
        if stat.S_IMODE(st.st_mode) & 0o007:
            warn(
                f"{path} was accessible to every user (mode {stat.S_IMODE(st.st_mode):04o}) although it "
                f"holds a private key; it is written with mode {kept:04o} from now on"
            )
        return Access(kept, st.st_uid, st.st_gid)
    import grp
    import pwd

    try:
        uid = pwd.getpwnam(owner).pw_uid if owner else os.getuid()
    except KeyError:
        raise DeployError(f"deploy.owner: no user {owner!r} on this host; nothing was changed") from None
    try:
        gid = grp.getgrnam(group).gr_gid if group else os.getgid()
    except KeyError:
        raise DeployError(f"deploy.group: no group {group!r} on this host; nothing was changed") from None
    return Access(mode, uid, gid)


def remove_stale_temporaries(path: Path) -> None:
    """Temporary files a killed run left beside `path`: they may hold a private key.

    Called under the host lock, so no live run of ours owns one.
    """
    with contextlib.suppress(OSError):
        for p in path.parent.glob(f".{path.name}{TMP_MARK}*"):
            with contextlib.suppress(OSError):
                p.unlink()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - os.write raises rather than return 0 on a regular file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def _read_back(fd: int, size: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    parts: list[bytes] = []
    left = size + 1  # one more than expected: a longer file shows too
    while left > 0:
        chunk = os.read(fd, left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def atomic_write(path: Path, data: bytes, access: Access, check: Callable[[bytes], None] | None = None) -> None:
    """Replace `path` (already resolved) whole, or leave it as it was and raise DeployError.

    `check` gets the bytes read back from the temporary file and raises
    ValueError if they are not what radosgw can load; a short or wrong file is
    never renamed into place. A link at `path` itself is replaced, not
    followed: callers that mean to keep a link resolve it first (real_path).
    """
    # The pid says who left it; the random part makes it unguessable.
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(8)}")
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            if (access.uid, access.gid) != (os.getuid(), os.getgid()):
                os.fchown(fd, access.uid, access.gid)
            os.fchmod(fd, access.mode)
            _write_all(fd, data)
            os.fsync(fd)
            back = _read_back(fd, len(data))
            if back != data:
                raise DeployError(
                    f"cannot write {path}: read back {len(back)} of {len(data)} bytes; nothing was changed"
                )
            if check is not None:
                try:
                    check(back)
                except ValueError as e:
                    raise DeployError(f"cannot write {path}: what was written {e}; nothing was changed") from None
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
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def host_lock(state_dir: Path, name: str, wait: float) -> Iterator[bool]:
    """One run per host: an flock in the state directory; yields False if another run kept it for `wait` s.

    The kernel drops an flock with its process, so a killed run never
    leaves it taken.
    """
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(state_dir / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise DeployError(
            f"cannot use the state directory {state_dir} ({e.strerror}); check deploy.state_dir"
        ) from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.1)
        yield True
    finally:
        os.close(fd)
