"""A real single-node Ceph cluster for the tests: one mon, one memstore OSD, and radosgw.

Everything lives in one work directory: ceph.conf, keyrings, mon and OSD data,
admin sockets, logs. Every daemon runs in the foreground under `Server`, so the
stack holds its handle and stops exactly the processes it started.

- One mon on `[v2:127.0.0.1:PORT]` (msgr2 only), `paxos propose interval` short
  so that pool and auth changes commit fast.
- One OSD on memstore. `osd fast shutdown = false` makes it write its store to
  disk on SIGTERM, so `stop_osd`/`start_osd` keep the data.
- No mgr: nothing here needs one.
- `RadosGW`: radosgw with the beast frontend, HTTPS only (Debian's 16.2 civetweb
  cannot do SSL on OpenSSL 3). Ready means a TLS handshake completes, because
  with a key that does not match its certificate radosgw listens but fails
  every handshake. It runs as Debian's unit runs it: started as root with
  `--setuser ceph --setgroup ceph`, so it reads its keyring and certificate as
  root and serves as `ceph`, and its own files are laid out as on a site.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import os
import pwd
import shlex
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rados

from devsite.ports import free_port
from devsite.proc import START_BOUND, Server, run, state_of

RGWSUP = Path(__file__).with_name("rgwsup.py")

MON_ID = "a"
OSD_ID = 0
# Osd data is saved to disk by memstore on a clean shutdown: give it time.
OSD_STOP_TIMEOUT = 30.0
_PROBE_OBJECT = "stack-probe.nonexistent"
# Stats that did not end in time, with their handle and I/O context: kept, never closed nor freed, for as
# long as the process lives (librados calls back into a completion when its operation ends).
_IN_FLIGHT: list[tuple[Any, Any, Stat]] = []


def cephx_key() -> str:
    """A new cephx secret, made by the cluster's own `ceph-authtool`, in its release's key type.

    Pacific makes AES-128 keys; Tentacle makes a newer type (`AgA...`, 32-byte
    secrets) and its mon refuses AES-128 service keys
    (AUTH_INSECURE_SERVICE_KEY_TYPE), so no key is ever made by hand here.
    """
    return run(["ceph-authtool", "--gen-print-key"]).strip()


def _osd_class_dir() -> Path:
    """Where this release's OSD finds its object classes (cls_lock for the pool's lock), absolute.

    Debian sid's 20.2.4 is built with a relative default
    (`lib/x86_64-linux-gnu/rados-classes`), which the OSD would look up from
    its working directory and then answer every lock with EOPNOTSUPP: such a
    path is one below the install prefix, /usr.
    """
    out = run(["ceph-osd", "--no-mon-config", "--show-config-value", "osd_class_dir"]).strip()
    return Path("/usr", out)  # an absolute `out` stays as it is


def _keyring_entry(name: str, key: str, caps: Mapping[str, str]) -> str:
    lines = [f"[{name}]", f"\tkey = {key}"]
    lines += [f'\tcaps {svc} = "{cap}"' for svc, cap in caps.items()]
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> Path:
    """Write a secret file created 0600 (never readable by others, even for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)
    return path


def _port_open(port: int, addr: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((addr, port)) == 0


def _wait(what: str, ready: Callable[[], bool], timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout}s")
        time.sleep(interval)


def _conf_text(workdir: Path, fsid: str, mon_port: int, class_dir: Path, addr: str = "127.0.0.1") -> str:
    w = workdir
    return f"""\
# Test cluster made by devsite/ceph.py; every path is inside {w}
[global]
fsid = {fsid}
mon host = [v2:{addr}:{mon_port}]
ms bind msgr1 = false
ms bind msgr2 = true
public addr = {addr}
cluster addr = {addr}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
run dir = {w}/run
# Ceph's own default form: two processes of one user (two rgwtls runs, a
# test beside a cron job) each get their own socket, instead of the second
# printing "AdminSocket ... File exists" into the product's stderr.
admin socket = {w}/run/$cluster-$name.$pid.$cctid.asok
log file = {w}/log/$cluster-$name.log
mon cluster log file = default={w}/log/$cluster.$channel.log cluster={w}/log/$cluster.log
pid file = {w}/run/$cluster-$name.pid
crash dir = {w}/crash
log to stderr = false
err to stderr = true
mon data = {w}/mon/$cluster-$id
osd data = {w}/osd/$cluster-$id
# A single mon and a single OSD: size one, small pools, no redundancy warnings.
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 0
mon data avail crit = 0
mon max pg per osd = 1000
paxos propose interval = 0.1
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
osd crush initial weight = 1
osd objectstore = memstore
memstore device bytes = 536870912
osd fast shutdown = false
osd class dir = {class_dir}
# An OSD stopped while the mon is down waits this long for the mon's ack.
osd mon shutdown timeout = 1
# radosgw 20.2.4 waits on SIGTERM for its dedup thread, until this alarm
# ends it (120 s by default); a gateway here stops at once, as under Pacific.
rgw exit timeout secs = 1
# Clients find a restarted mon quickly.
mon client hunt interval = 0.5
mon client hunt interval max multiple = 2

[osd]
keyring = $osd_data/keyring

[client]
keyring = {w}/$name.keyring
"""


class Stat:
    """One `aio_stat`, its completion held until librados has called back.

    Freed while librados' finisher thread was about to call back into it, a
    completion crashed the process (a segfault in `fn_anonymous`, seen in CI
    runs under load); so is the I/O context closed under it. Whoever gives up
    waiting keeps the stat, and the context, for as long as it may still end.
    """

    def __init__(self, ioctx: Any, obj: str) -> None:
        self.answered = threading.Event()
        self._comp = ioctx.aio_stat(obj, lambda *_: self.answered.set())

    def result(self) -> int:
        """Once `answered`: the stat's return value, librados done with it."""
        self._comp.wait_for_complete_and_cb()
        return int(self._comp.get_return_value())


@dataclass
class CephCluster:
    workdir: Path
    conf: Path
    admin_keyring: Path
    mon_port: int
    fsid: str
    mon: Server = field(repr=False)
    osd: Server = field(repr=False)
    osd_uuid: str = ""
    # Where mon and OSD listen: 127.0.0.1, or a veth's address that a network namespace reaches (and can lose).
    addr: str = "127.0.0.1"
    pools: list[str] = field(default_factory=list)
    gateways: list[RadosGW] = field(default_factory=list, repr=False)
    _admin: Any = field(default=None, repr=False)

    # -- librados ------------------------------------------------------------

    def connect(
        self,
        name: str = "client.admin",
        keyring: Path | None = None,
        timeout: int = 10,
        conf: Mapping[str, str] | None = None,
    ) -> rados.Rados:
        """A new connected handle as `name` (the caller shuts it down)."""
        opts = {
            "keyring": str(keyring or self.workdir / f"{name}.keyring"),
            "client_mount_timeout": str(timeout),
            # A stopped daemon fails a test instead of hanging it.
            "rados_mon_op_timeout": "30",
            "rados_osd_op_timeout": "30",
        }
        opts.update(conf or {})
        handle = rados.Rados(conffile=str(self.conf), name=name, conf=opts)
        try:
            handle.connect(timeout=timeout)
        except BaseException:
            handle.shutdown()
            raise
        return handle

    def admin(self) -> rados.Rados:
        """The cached connected client.admin handle."""
        if self._admin is None:
            self._admin = self.connect(keyring=self.admin_keyring)
        return self._admin

    def _close_admin(self) -> None:
        handle, self._admin = self._admin, None
        # Not under a stat still in flight (wait_pools_active): it would call back into freed memory.
        if handle is not None and not any(h is handle for h, _, _ in _IN_FLIGHT):
            handle.shutdown()

    def mon_command(self, cmd: Mapping[str, Any], inbuf: bytes = b"") -> str:
        """Run a mon command as client.admin; its output, or RuntimeError with the error text."""
        ret, out, errs = self.admin().mon_command(json.dumps(dict(cmd)), inbuf)
        if ret != 0:
            reason = os.strerror(-ret) if ret < 0 else str(ret)
            raise RuntimeError(f"mon command {dict(cmd)} failed ({reason}): {errs}")
        return bytes(out).decode()

    # -- pools and users -----------------------------------------------------

    def create_pool(self, name: str, application: str = "rgwtls") -> None:
        """Create a replicated pool (pg_num 8, size 1) if missing, and enable its application."""
        self.mon_command(
            {"prefix": "osd pool create", "pool": name, "pg_num": 8, "pgp_num": 8, "pool_type": "replicated"}
        )
        self.mon_command(
            {
                "prefix": "osd pool application enable",
                "pool": name,
                "app": application,
                "yes_i_really_mean_it": True,
            }
        )
        if name not in self.pools:
            self.pools.append(name)

    def create_user(self, name: str, caps: Mapping[str, str]) -> Path:
        """Create (or re-cap) a cephx user; write its keyring, mode 0600, as workdir/<name>.keyring.

        The same name keeps the same key; different caps replace the old ones.
        """
        caps_list = [x for svc_cap in caps.items() for x in svc_cap]
        try:
            self.mon_command({"prefix": "auth get-or-create", "entity": name, "caps": caps_list})
        except RuntimeError as e:
            if "does not match" not in str(e):
                raise
            self.mon_command({"prefix": "auth caps", "entity": name, "caps": caps_list})
        # `auth get` gives the key with its caps, as `ceph auth get` writes a keyring.
        out = self.mon_command({"prefix": "auth get", "entity": name})
        return _write_private(self.workdir / f"{name}.keyring", out)

    def _osd_info(self) -> dict[str, Any]:
        dump = json.loads(self.mon_command({"prefix": "osd dump", "format": "json"}))
        for osd in dump["osds"]:
            if osd["osd"] == OSD_ID:
                return dict(osd)
        raise RuntimeError(f"osd.{OSD_ID} is not in the osdmap")

    def wait_pools_active(self, timeout: float = START_BOUND) -> None:
        """Wait until a read in each pool is answered (its PG is active).

        A stat that never ends keeps its I/O context and handle for the
        process's life (see `Stat`).
        """
        deadline = time.monotonic() + timeout
        handle = self.admin()
        for pool in self.pools:
            ioctx = handle.open_ioctx(pool)
            stat = Stat(ioctx, _PROBE_OBJECT)
            while not stat.answered.wait(0.02):
                why = ""
                if not self.osd.running():
                    why = f"ceph-osd exited:\n{self.osd.log_tail()}"
                elif time.monotonic() > deadline:
                    why = f"pool {pool} not active after {timeout}s:\n{self.osd.log_tail()}"
                if why:
                    _IN_FLIGHT.append((handle, ioctx, stat))
                    raise RuntimeError(why)
            ret = stat.result()
            ioctx.close()
            if ret not in (0, -errno.ENOENT):
                raise RuntimeError(f"probe read in pool {pool} failed: {os.strerror(-ret)}")

    # -- daemons -------------------------------------------------------------

    def start_mon(self, timeout: float = START_BOUND) -> None:
        if self.mon.running():
            return
        self.mon.start()
        self.mon.wait_until(lambda: _port_open(self.mon_port, self.addr), timeout, "listening")
        deadline = time.monotonic() + timeout
        while True:  # listening, now answering commands (quorum, auth)
            try:
                self.mon_command({"prefix": "mon stat"})
                return
            except (rados.Error, RuntimeError):
                self._close_admin()
                if not self.mon.running() or time.monotonic() > deadline:
                    raise RuntimeError(f"ceph-mon not answering:\n{self.mon.log_tail()}") from None
                time.sleep(0.05)

    def stop_mon(self) -> None:
        # The admin handle would hunt for the mon with growing intervals: drop it.
        self._close_admin()
        self.mon.stop()

    def start_osd(self, timeout: float = START_BOUND) -> None:
        """Start the OSD; return once it is up in the osdmap and every pool is active."""
        if self.osd.running():
            return
        before = int(self._osd_info()["up_from"])
        self.osd.start()

        def booted() -> bool:
            info = self._osd_info()
            return bool(info["up"]) and int(info["up_from"]) > before

        self.osd.wait_until(booted, timeout, "up in the osdmap")
        self.wait_pools_active(timeout)

    def stop_osd(self) -> None:
        """Stop the OSD cleanly (memstore saves its data) and wait until the mon knows."""
        self.osd.stop(OSD_STOP_TIMEOUT)
        if not self.mon.running():
            return
        with contextlib.suppress(RuntimeError, rados.Error):
            # A clean shutdown tells the mon at once; don't let a later start race it.
            _wait("osd marked down", lambda: not self._osd_info()["up"], 10.0)

    @contextlib.contextmanager
    def mon_stopped(self) -> Iterator[None]:
        """The mon down for the block, up again after it, also when the block fails."""
        self.stop_mon()
        try:
            yield
        finally:
            self.start_mon()

    @contextlib.contextmanager
    def osd_stopped(self) -> Iterator[None]:
        """The OSD down for the block (the mon answers, no operation does), up again after."""
        self.stop_osd()
        try:
            yield
        finally:
            self.start_osd()

    def stop(self) -> None:
        """Stop every gateway, the OSD and the mon, by handle. Safe to call twice."""
        for gw in list(self.gateways):
            gw.stop()
        self._close_admin()
        self.osd.stop(OSD_STOP_TIMEOUT)
        self.mon.stop()


def processes_using(conf: Path) -> list[int]:
    """Pids of live processes whose command line names `conf` (to check a stop left none)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = state_of(int(entry.name))
        except OSError:
            continue
        if str(conf).encode() in argv and state != "Z":
            pids.append(int(entry.name))
    return pids


def _bootstrap(workdir: Path, addr: str = "127.0.0.1") -> CephCluster:
    """Write conf and keyrings, make the mon and OSD stores; start nothing."""
    workdir.mkdir(parents=True, exist_ok=True)
    for sub in ("run", "log", "crash", f"mon/ceph-{MON_ID}", f"osd/ceph-{OSD_ID}"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    fsid = str(uuid.uuid4())
    mon_port = free_port()
    conf = workdir / "ceph.conf"
    conf.write_text(_conf_text(workdir, fsid, mon_port, _osd_class_dir(), addr))

    admin_key, osd_key = cephx_key(), cephx_key()
    admin_caps = {"mds": "allow *", "mgr": "allow *", "mon": "allow *", "osd": "allow *"}
    admin_keyring = _write_private(
        workdir / "client.admin.keyring", _keyring_entry("client.admin", admin_key, admin_caps)
    )
    osd_data = workdir / "osd" / f"ceph-{OSD_ID}"
    _write_private(osd_data / "keyring", _keyring_entry(f"osd.{OSD_ID}", osd_key, {}))
    # The mon's mkfs keyring fills its first auth database: the mon itself, admin, the OSD.
    mon_keyring = _write_private(
        workdir / "mon.keyring",
        _keyring_entry("mon.", cephx_key(), {"mon": "allow *"})
        + _keyring_entry("client.admin", admin_key, admin_caps)
        + _keyring_entry(
            f"osd.{OSD_ID}",
            osd_key,
            {"mgr": "allow profile osd", "mon": "allow profile osd", "osd": "allow *"},
        ),
    )
    monmap = workdir / "monmap"
    osd_uuid = str(uuid.uuid4())
    # The OSD's mkfs needs no mon: run it alongside the mon's.
    osd_mkfs = subprocess.Popen(
        ["ceph-osd", "-c", str(conf), "-i", str(OSD_ID), "--mkfs", "--osd-uuid", osd_uuid, "--no-mon-config"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        run(["monmaptool", "--create", "--fsid", fsid, "--addv", MON_ID, f"[v2:{addr}:{mon_port}]", monmap])
        run(["ceph-mon", "-c", conf, "-i", MON_ID, "--mkfs", "--monmap", monmap, "--keyring", mon_keyring])
    finally:
        out, _ = osd_mkfs.communicate(timeout=60)
    if osd_mkfs.returncode != 0:
        raise RuntimeError(f"ceph-osd --mkfs failed ({osd_mkfs.returncode}):\n{out.decode()}")
    mon_keyring.unlink()

    log = workdir / "log"
    return CephCluster(
        workdir=workdir,
        conf=conf,
        admin_keyring=admin_keyring,
        mon_port=mon_port,
        fsid=fsid,
        mon=Server("ceph-mon", ["ceph-mon", "-f", "-c", conf, "-i", MON_ID], log / "mon.out"),
        osd=Server("ceph-osd", ["ceph-osd", "-f", "-c", conf, "-i", str(OSD_ID)], log / "osd.out"),
        osd_uuid=osd_uuid,
        addr=addr,
    )


def start_cluster(workdir: Path, pools: tuple[str, ...] = ("rgwtls",), addr: str = "127.0.0.1") -> CephCluster:
    """Make and start a cluster, listening on `addr`; the caller must `stop()` it (see `ceph_cluster`)."""
    cluster = _bootstrap(workdir, addr)
    try:
        cluster.start_mon()
        cluster.mon_command({"prefix": "osd create", "uuid": cluster.osd_uuid, "id": OSD_ID})
        cluster.start_osd()
        for pool in pools:
            cluster.create_pool(pool)
        cluster.wait_pools_active()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def ceph_cluster(workdir: Path, pools: tuple[str, ...] = ("rgwtls",), addr: str = "127.0.0.1") -> Iterator[CephCluster]:
    """A running cluster with `pools` ready for I/O; stopped on exit, whatever happens."""
    cluster = start_cluster(workdir, pools, addr)
    try:
        yield cluster
    finally:
        cluster.stop()


# -- radosgw -------------------------------------------------------------------


def peer_certificate(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bytes:
    """Complete a TLS handshake (no verification) and return the served certificate, DER."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise ssl.SSLError("no peer certificate")
    return der


RGW_CAPS = {"mon": "allow rw", "osd": "allow rwx"}
# Debian's ceph-common creates them; its radosgw unit drops to them.
RGW_USER = "ceph"
RGW_GROUP = "ceph"


def _searchable_by(st: os.stat_result, uid: int, gid: int) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def let_through(path: Path, user: str = RGW_USER, group: str = RGW_GROUP) -> None:
    """Make `path` and every directory above it searchable by `user`/`group`, and nothing more.

    pytest's tmp dirs are 0700 root; a daemon that dropped to `user` could not
    reach its own files below them. A directory of group root or `group` gets
    `group` and g+x (search, no listing); any other one o+x. Called on every
    start, since each new pytest session sets its root tmp dir back to 0700.
    """
    uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    for d in [path, *path.parents]:
        st = d.stat()
        if _searchable_by(st, uid, gid):
            continue
        if st.st_gid in (0, gid):
            os.chown(d, -1, gid)
            d.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXGRP)
        else:
            d.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def _uid_of(pid: int) -> int | None:
    """The real uid of a live process, None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in status if line.startswith("Uid:")), None)


def give(path: Path, mode: int, user: str = "root", group: str = RGW_GROUP) -> Path:
    """Set owner, group and mode of `path`; chown first, so a wider mode never meets the old group."""
    os.chown(path, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
    path.chmod(mode)
    return path


def readable_by(path: Path, user: str, group: str) -> bool:
    """Whether `user` with only the primary group `group` can read `path`: really reading it.

    A child `cat`s it as that user, with no supplementary groups (as radosgw
    runs after `--setuser`/`--setgroup`). It starts in the file's directory,
    entered as root before dropping: the file and its own directory are what
    a deploy controls, while pytest's private tmp dirs above them are the test
    run's, and any new pytest session makes them 0700 again.
    """
    res = subprocess.run(
        ["cat", "--", path.name],
        cwd=path.parent,
        user=user,
        group=group,
        extra_groups=[],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=10,
        check=False,
    )
    return res.returncode == 0


class RadosGW:
    """One radosgw process: beast frontend, HTTPS only on 127.0.0.1:port."""

    def __init__(
        self,
        cluster: CephCluster,
        workdir: Path,
        pem: Path,
        name: str = "a",
        port: int | None = None,
        supervised: bool = False,
    ) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.pem = pem
        self.name = f"client.rgw.{name}"
        self.port = port if port is not None else free_port()
        self.user = RGW_USER
        self.group = RGW_GROUP
        workdir.mkdir(parents=True, exist_ok=True)
        self.keyring = cluster.workdir / f"{self.name}.keyring"
        # Its own dirs, ceph:ceph as Debian's /var/run/ceph, /var/log/ceph and
        # /var/lib/ceph/radosgw/ceph-rgw.NAME: after dropping, radosgw still
        # writes its log and reopens it (SIGHUP) there.
        self.run_dir = workdir / "run"
        self.log_dir = workdir / "log"
        self.data_dir = workdir / "data"
        self.log = self.log_dir / f"{self.name}.log"
        argv: list[str | os.PathLike[str]] = [
            "radosgw",
            "-f",
            "--cluster",
            "ceph",
            "-c",
            cluster.conf,
            "-n",
            self.name,
            "--keyring",
            self.keyring,
            "--rgw-frontends",
            f"beast ssl_endpoint=127.0.0.1:{self.port} ssl_certificate={pem}",
            "--rgw-data",
            self.data_dir,
            "--admin-socket",
            self.run_dir / f"{self.name}.asok",
            "--log-file",
            self.log,
            "--setuser",
            self.user,
            "--setgroup",
            self.group,
        ]
        # Supervised, it runs under rgwsup.py, whose `ctl SOCK restart` is the
        # restart command a `deploy` in another process can run.
        self.sup_sock = workdir / f"{self.name}.sup"
        self.supervised = supervised
        if supervised:
            argv = [sys.executable, RGWSUP, "serve", self.sup_sock, "--", *argv]
        # No supplementary groups, as systemd starts it: root's group 0 would
        # stay with radosgw after it drops to ceph.
        self.server = Server(f"radosgw {self.name}", argv, workdir / f"{self.name}.out", extra_groups=[])

    @property
    def pid(self) -> int:
        return self.server.pid

    def running(self) -> bool:
        return self.server.running()

    def _prepare_files(self) -> None:
        """What `ceph` needs after the drop, as on a site: its dirs, the way to them, its keyring.

        The workdir (where tests keep the PEM) becomes root:ceph 0750, so the
        gateway may read there but not write. Redone at every start: pytest
        resets its tmp root, and `create_user` rewrites the keyring 0600.
        """
        give(self.workdir, 0o750)
        for d in (self.run_dir, self.log_dir, self.data_dir):
            d.mkdir(exist_ok=True)
            give(d, 0o750, self.user, self.group)
        give(self.keyring, 0o640, "root", self.group)
        let_through(self.workdir, self.user, self.group)
        let_through(self.cluster.workdir, self.user, self.group)

    def readable_by_gateway(self, path: Path) -> bool:
        """Whether radosgw, once it dropped to its user and group, could read `path`."""
        return readable_by(path, self.user, self.group)

    def radosgw_pid(self) -> int:
        """The pid of radosgw itself (supervised, `pid` is the supervisor's)."""
        return int(self.supervisor("pid")) if self.supervised else self.pid

    def start(self, timeout: float = START_BOUND) -> None:
        """Start radosgw; return once a TLS handshake on its port completes and it runs as its user.

        radosgw 20 listens a moment before it drops from root, so a handshake
        alone does not mean it is done starting.
        """
        if self.server.running():
            return
        self._prepare_files()
        self.server.start()
        last: list[BaseException] = []

        uid = pwd.getpwnam(self.user).pw_uid

        def handshake() -> bool:
            try:
                peer_certificate(self.port, timeout=1.0)
            except (OSError, ssl.SSLError) as e:
                last[:] = [e]
                return False
            return _uid_of(self.radosgw_pid()) == uid

        try:
            self.server.wait_until(handshake, timeout, f"serving HTTPS on port {self.port}")
        except RuntimeError as e:
            running = self.server.running()
            self.stop()
            hint = f"last TLS attempt: {last[0]!r}" if last else "no TLS attempt made"
            if running and last and isinstance(last[0], ssl.SSLError):
                hint += " (does the key in the PEM match its certificate?)"
            raise RuntimeError(f"{e}\n{hint}\nlog {self.log}:\n{self._log_tail()}") from None

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        self.server.stop()

    @property
    def restart_command(self) -> str:
        """What `deploy.restart_command` should run for this gateway (supervised only)."""
        return f"{sys.executable} {RGWSUP} ctl {self.sup_sock} restart"

    def supervisor(self, request: str) -> str:
        """Ask the supervisor: `pid` of radosgw now, `count` of restarts.

        It answers one request at a time, so this waits out a restart in
        progress, which under load takes about as long as radosgw's start.
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(60)
            s.connect(str(self.sup_sock))
            s.sendall(request.encode())
            answer = s.recv(4096).decode().split()
        if answer[:1] != ["ok"]:
            raise RuntimeError(f"rgwsup {request}: {answer}")
        return answer[1]

    def restart(self, timeout: float = START_BOUND) -> None:
        self.stop()
        self.start(timeout)

    def timed_restart(self, timeout: float = 60.0) -> float:
        """Seconds from its restart command, as deploy runs it, to the first handshake after: the unit of a wave."""
        started = time.monotonic()
        subprocess.run(shlex.split(self.restart_command), check=True, capture_output=True, timeout=timeout)

        def serving() -> bool:
            try:
                peer_certificate(self.port, timeout=1.0)
            except (OSError, ssl.SSLError):
                return False
            return True

        _wait("serving after a restart", serving, timeout, 0.01)
        return time.monotonic() - started

    def certificate(self) -> bytes:
        """The certificate radosgw serves now, DER."""
        return peer_certificate(self.port)


def start_radosgw(
    cluster: CephCluster,
    workdir: Path,
    pem: Path,
    name: str = "a",
    port: int | None = None,
    timeout: float = START_BOUND,
    supervised: bool = False,
) -> RadosGW:
    """Create the gateway's cephx user, start it, wait for HTTPS. `cluster.stop()` stops it too."""
    gw = RadosGW(cluster, workdir, pem, name, port, supervised)
    cluster.create_user(gw.name, RGW_CAPS)
    cluster.gateways.append(gw)
    gw.start(timeout)
    return gw
