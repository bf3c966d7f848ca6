"""A wall clock a test can step while a process runs, with every other clock left alone.

`WallJump.env()` preloads a small library into a child process: its wall
clock (clock_gettime's CLOCK_REALTIME and _COARSE, gettimeofday, time) reads
the kernel's plus the offset, in seconds, that the file `WallJump.path` holds
at that moment; CLOCK_MONOTONIC, CLOCK_BOOTTIME and every sleep and timed
wait stay the kernel's. That is a clock stepped by NTP or by hand.

Debian 12's libfaketime (0.9.10) was the first choice and cannot do this:
by default it moves CLOCK_MONOTONIC with the wall clock (a timed wait then
hangs for the whole jump), and with FAKETIME_DONT_FAKE_MONOTONIC=1 it shifts
the deadline of an absolute CLOCK_MONOTONIC clock_nanosleep by the wall
clock's value, so Python's time.sleep() fails with EINVAL at every call.
The library is built with the system's C compiler, once per test session.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* The offset in whole seconds, read afresh at every call: the test steps it at any moment. */
static long long offset(void) {
    const char *path = getenv("RGWTLS_WALLJUMP_FILE");
    char buf[32];
    ssize_t n;
    int fd;
    if (path == NULL || (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) return 0;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    return strtoll(buf, NULL, 10);
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    int r = (int)syscall(SYS_clock_gettime, clock, ts);
    if (r == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) ts->tv_sec += offset();
    return r;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    struct timespec ts;
    (void)tz;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return -1;
    if (tv != NULL) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return 0;
}

time_t time(time_t *t) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (t != NULL) *t = ts.tv_sec;
    return ts.tv_sec;
}
"""


def _library() -> Path:
    """The built library, cached by its source's digest in the system's temp dir (root-owned, 0700)."""
    digest = hashlib.sha256(_SOURCE.encode()).hexdigest()[:16]
    where = Path(tempfile.gettempdir()) / f"rgwtls-walljump-{os.getuid()}"
    where.mkdir(mode=0o700, exist_ok=True)
    lib = where / f"walljump-{digest}.so"
    if not lib.exists():
        src = where / f"walljump-{digest}.c"
        src.write_text(_SOURCE)
        part = lib.with_suffix(f".{os.getpid()}.part")
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(part), str(src)], check=True)
        part.rename(lib)
    return lib


class WallJump:
    """The offset file of one test, and the environment that puts a child process on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.set(0)

    def set(self, seconds: int) -> None:
        """Step the wall clock of every process on this file to the kernel's + `seconds`, at once."""
        part = self.path.with_suffix(".part")
        part.write_text(f"{seconds}\n")
        part.rename(self.path)

    def env(self) -> dict[str, str]:
        preload = " ".join(x for x in (str(_library()), os.environ.get("LD_PRELOAD", "")) if x)
        return {"LD_PRELOAD": preload, "RGWTLS_WALLJUMP_FILE": str(self.path)}

    def shell_step(self, seconds: int) -> str:
        """A shell command that steps it, for a hook or a restart command to run in the middle of a run."""
        return f"echo {seconds} > {self.path}.part && mv {self.path}.part {self.path}"
