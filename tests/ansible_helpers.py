"""Run the Ansible role against a fleet of "hosts" on this one machine, and read what it left.

Every host of the inventory uses `ansible_connection=local` and has its own
install prefix (venv, config, keyrings, cron file) under the test's directory,
and its own supervised radosgw. Ansible itself keeps everything under the same
directory too: ANSIBLE_HOME, its temporary directories, HOME.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ANSIBLE_DIR = REPO / "ansible"
BYTECODE_DIR = REPO / "tests" / "ansible_bytecode"
ROLE_DIR = ANSIBLE_DIR / "roles" / "rgwtls"
SITE_YML = ANSIBLE_DIR / "site.yml"
VENV_BIN = Path(sys.executable).parent

_RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)",
    re.MULTILINE,
)


@dataclass
class Play:
    """One ansible-playbook run: its exit status, its whole output, and the PLAY RECAP per host."""

    code: int
    output: str
    recap: dict[str, dict[str, int]]

    def changed(self) -> dict[str, int]:
        return {host: counts["changed"] for host, counts in self.recap.items()}

    def failed(self) -> dict[str, int]:
        return {host: counts["failed"] + counts["unreachable"] for host, counts in self.recap.items()}


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    tail = output[output.rindex("PLAY RECAP") :] if "PLAY RECAP" in output else ""
    return {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"} for m in _RECAP.finditer(tail)}


def ansible_env(home: Path) -> dict[str, str]:
    """The environment of every ansible command: nothing of it outside `home`."""
    for sub in ("ansible", "tmp-local", "tmp-remote", "cache", "bytecode"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PIP_"))}
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / "cache"),
        PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        ANSIBLE_HOME=str(home / "ansible"),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp-local"),
        ANSIBLE_REMOTE_TEMP=str(home / "tmp-remote"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_STDOUT_CALLBACK="default",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        # Each module's compiled code kept from one task to the next (tests/ansible_bytecode).
        PYTHONPATH=str(BYTECODE_DIR),
        RGWTLS_TEST_BYTECODE=str(home / "bytecode"),
    )
    return env


@dataclass
class Host:
    """One inventory host: its name, its install prefix, and its own variables."""

    name: str
    prefix: Path
    vars: dict[str, Any] = field(default_factory=dict)

    @property
    def cron_file(self) -> Path:
        return self.prefix / "etc/cron.d/rgwtls"

    @property
    def config_dir(self) -> Path:
        return self.prefix / "etc/rgwtls"

    @property
    def keyring_dir(self) -> Path:
        return self.prefix / "etc/ceph"

    @property
    def issuer_state_dir(self) -> Path:
        return self.prefix / "var/lib/rgwtls-issuer"

    def cron_jobs(self) -> dict[str, CronJob]:
        return parse_cron_file(self.cron_file)

    def layout_vars(self) -> dict[str, Any]:
        """The role's paths, all under this host's prefix."""
        # As on a host, /var/lib and /opt are there, 0755: the role's `file` tasks would
        # make missing parents with the mode of the directory asked for (0700).
        for d in (self.cron_file.parent, self.keyring_dir, self.prefix / "var/lib", self.prefix / "opt"):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        return {
            "ansible_connection": "local",
            # Interpreter discovery picks a Python without the role's needs here.
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "rgwtls_install_dir": str(self.prefix / "opt/rgwtls"),
            "rgwtls_config_dir": str(self.config_dir),
            "rgwtls_state_dir": str(self.prefix / "var/lib/rgwtls"),
            "rgwtls_issuer_state_dir": str(self.issuer_state_dir),
            "rgwtls_ceph_keyring_dir": str(self.keyring_dir),
            "rgwtls_cron_file": str(self.cron_file),
            "rgwtls_systemd_unit_dir": str(self.prefix / "etc/systemd/system"),
        }


@dataclass
class CronJob:
    schedule: list[str]
    user: str
    command: str


def run_job(job: CronJob, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A cron job's command as cron runs it: by sh, as the job's user, with its groups and its HOME."""
    who = pwd.getpwnam(job.user)
    return subprocess.run(
        ["sh", "-c", job.command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        user=who.pw_uid,
        group=who.pw_gid,
        extra_groups=[] if who.pw_uid else None,
        env={**os.environ, "HOME": who.pw_dir, "USER": who.pw_name, "LOGNAME": who.pw_name},
    )


def client_ceph_conf(conf: Path, dest: Path) -> Path:
    """The test cluster's ceph.conf as a client host has one: where the mon is, how to authenticate.

    Without the daemons' paths (log file, admin socket, run dir, all in the
    cluster's own directory), so that a client that is not root starts without
    complaints, as on a gateway whose /etc/ceph/ceph.conf names none.
    """
    wanted = ("fsid", "mon host", "ms bind msgr1", "ms bind msgr2", "auth ")
    lines = [line for line in conf.read_text().splitlines() if line.startswith(wanted)]
    dest.write_text("[global]\n" + "\n".join(lines) + "\n")
    dest.chmod(0o644)
    return dest


def parse_cron_file(path: Path) -> dict[str, CronJob]:
    """The jobs of a cron.d file by their `#Ansible: NAME` marker: schedule, user, command."""
    jobs: dict[str, CronJob] = {}
    if not path.exists():
        return jobs
    name = None
    for line in path.read_text().splitlines():
        if line.startswith("#Ansible: "):
            name = line.removeprefix("#Ansible: ")
        elif line.strip() and not line.startswith("#") and name is not None:
            # MIN HOUR DOM MON DOW USER COMMAND: a cron.d line has a user field.
            *schedule, user, command = line.split(maxsplit=6)
            jobs[name] = CronJob(schedule, user, command)
            name = None
    return jobs


class Fleet:
    """An inventory of local hosts (group `rgws`, and `rgwloadbalancers`) and the playbook to run against it."""

    def __init__(self, workdir: Path, hosts: list[Host], group_vars: dict[str, Any], vault: dict[str, str]):
        self.workdir = workdir
        self.hosts = {h.name: h for h in hosts}
        self.home = workdir / "home"
        self.env = ansible_env(self.home)
        self.inventory = workdir / "inventory"
        self.vault_password_file = workdir / "vault-password"
        self.vault_password_file.write_text("a vault password for the tests\n")
        self.vault_password_file.chmod(0o600)
        group_dir = self.inventory / "group_vars" / "rgws"
        group_dir.mkdir(parents=True)
        (group_dir / "main.yml").write_text(json.dumps(group_vars, indent=2))
        # The secrets as a site keeps them: an ansible-vault encrypted file.
        vault_file = group_dir / "vault.yml"
        vault_file.write_text(json.dumps(vault, indent=2))
        self.run_tool(
            "ansible-vault", "encrypt", "--vault-password-file", str(self.vault_password_file), str(vault_file)
        )
        self.order: list[str] = []
        # The TLS hosts (rgwtls_tls_hosts), with group variables of their own: the group is always
        # in the inventory, empty unless a test adds one, as site.yml's pattern names it.
        self.tls_hosts: dict[str, Host] = {}
        self.write_inventory(list(self.hosts))

    def add_tls_host(self, host: Host, group_vars: dict[str, Any]) -> None:
        """A host of the group rgwloadbalancers, with these group variables (no vault: it needs no secret)."""
        group_dir = self.inventory / "group_vars" / "rgwloadbalancers"
        group_dir.mkdir(parents=True, exist_ok=True)
        (group_dir / "main.yml").write_text(json.dumps(group_vars, indent=2))
        self.tls_hosts[host.name] = host
        self.write_inventory(self.order)

    def remove_tls_host(self, name: str) -> None:
        del self.tls_hosts[name]
        self.write_inventory(self.order)

    def vars_file(self, name: str, values: dict[str, Any], vault: bool = False) -> Path:
        """Variables for `-e @FILE`; with `vault`, encrypted as the group's vault is (secrets go only there)."""
        path = self.workdir / name
        path.write_text(json.dumps(values, indent=2))
        if vault:
            self.run_tool("ansible-vault", "encrypt", "--vault-password-file", str(self.vault_password_file), str(path))
        return path

    def write_inventory(self, order: list[str]) -> None:
        """The group `rgws` in this order: its first host is the issuer."""
        hosts = {name: {**self.hosts[name].layout_vars(), **self.hosts[name].vars} for name in order}
        tls = {h.name: {**h.layout_vars(), **h.vars} for h in self.tls_hosts.values()}
        doc = {"all": {"children": {"rgws": {"hosts": hosts}, "rgwloadbalancers": {"hosts": tls}}}}
        (self.inventory / "hosts.yml").write_text(json.dumps(doc, indent=2))
        self.order = list(order)

    def run_tool(
        self, tool: str, *args: str, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [str(VENV_BIN / tool), *args],
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            cwd=self.workdir,
            timeout=timeout,
            check=False,
        )
        if res.returncode != 0 and tool != "ansible-playbook":
            raise AssertionError(f"{tool} {' '.join(args)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
        return res

    def ensure_order(self, order: list[str]) -> None:
        """Converge with the group in this order, unless the last run had it already."""
        if order != self.order:
            play = self.play(order=order)
            if play.code != 0:
                raise AssertionError(play.output)

    def play(
        self, *args: str, order: list[str] | None = None, timeout: float = 300, env: dict[str, str] | None = None
    ) -> Play:
        """ansible-playbook site.yml against this fleet, in this host order (`env`: more environment)."""
        if order is not None and order != self.order:
            self.write_inventory(order)
        res = self.run_tool(
            "ansible-playbook",
            "-i",
            str(self.inventory / "hosts.yml"),
            "--vault-password-file",
            str(self.vault_password_file),
            str(SITE_YML),
            *args,
            timeout=timeout,
            env=env,
        )
        output = res.stdout + res.stderr
        return Play(res.returncode, output, parse_recap(res.stdout))


def snapshot(root: Path, content: bool = True) -> dict[str, tuple[int, int, bytes]]:
    """Every file, directory and link under root: mode, mtime, and content (or link target)."""
    out: dict[str, tuple[int, int, bytes]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        data = b""
        if p.is_symlink():
            data = os.readlink(p).encode()
        elif content and p.is_file():
            data = p.read_bytes()
        out[str(p)] = (st.st_mode, st.st_mtime_ns, data)
    return out


def build_wheelhouse(dest: Path) -> Path:
    """rgwtls' wheel and its dependencies' wheels, built from a copy of the source tree.

    A copy, so that the build's build/ and egg-info land in the temporary directory.
    Never .cache/: it holds the Tentacle root, whose /dev/fd leads into /proc.
    """
    src = dest.parent / "rgwtls-src"
    shutil.copytree(
        REPO,
        src,
        ignore=lambda d, names: [
            n
            for n in names
            if n in {".git", ".venv", ".cache", "build", "dist", "tests", "bench", "ansible", "__pycache__"}
            or n.endswith((".egg-info", "_cache"))
        ],
    )
    subprocess.run(
        [str(VENV_BIN / "pip"), "wheel", "--quiet", "--no-cache-dir", "--wheel-dir", str(dest), str(src)],
        check=True,
        capture_output=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    return dest


# A systemctl for a machine whose PID 1 is not systemd: it keeps each unit's enablement and
# activity in a JSON file, loads units from the hosts' unit directories, and logs every call. It answers as
# much of the CLI as Ansible's systemd_service module asks (show, is-enabled, is-active, enable,
# disable, start, stop, restart, daemon-reload), and refuses anything else.
_FAKE_SYSTEMCTL = """#!{python}
import fcntl, json, os, sys
from pathlib import Path

state_file = Path(os.environ["FAKE_SYSTEMD_STATE"])
# The hosts of one play call it at once (both reload systemd): one call at a time reads and writes the state.
lock = open(str(state_file) + ".lock", "a")
fcntl.flock(lock, fcntl.LOCK_EX)
unit_dirs = [Path(d) for d in os.environ["FAKE_SYSTEMD_UNIT_DIRS"].split(os.pathsep)]
args = [a for a in sys.argv[1:] if not a.startswith("-")]
state = json.loads(state_file.read_text()) if state_file.exists() else {{"calls": [], "units": {{}}}}
state["calls"].append(args)
verb, units = args[0], args[1:]
code = 0
for unit in units or [""]:
    u = state["units"].setdefault(unit, {{"enabled": False, "active": False, "starts": 0}}) if unit else None
    loaded = bool(unit) and any((d / unit).is_file() for d in unit_dirs)
    if verb == "daemon-reload":
        pass
    elif verb == "show":
        print("Id=" + unit)
        print("LoadState=" + ("loaded" if loaded else "not-found"))
        print("ActiveState=" + ("active" if u["active"] else "inactive"))
        print("SubState=" + ("running" if u["active"] else "dead"))
        print("UnitFileState=" + ("enabled" if u["enabled"] else "disabled"))
    elif verb == "is-enabled":
        print("enabled" if u["enabled"] else "disabled")
        code = 0 if u["enabled"] else 1
    elif verb == "is-active":
        print("active" if u["active"] else "inactive")
        code = 0 if u["active"] else 3
    elif verb in ("enable", "disable", "start", "stop", "restart") and not loaded:
        print("Unit " + unit + " not found.", file=sys.stderr)
        code = 5
    elif verb in ("enable", "disable"):
        u["enabled"] = verb == "enable"
    elif verb in ("start", "restart"):
        u["starts"] += 1 if verb == "restart" or not u["active"] else 0
        u["active"] = True
    elif verb == "stop":
        u["active"] = False
    else:
        print("fake systemctl: no " + verb, file=sys.stderr)
        code = 1
state_file.with_suffix(".new").write_text(json.dumps(state))
os.replace(state_file.with_suffix(".new"), state_file)
sys.exit(code)
"""


class FakeSystemd:
    """A systemctl first on the PATH of the plays given `env()`, for the units of these hosts' unit directories.

    One state for all of them, by unit name: the hosts of one test must not share a unit name.

    With it, a fact cache says that the host's service manager is systemd, as
    on a Debian gateway: the role then goes where it goes on such a host.
    """

    def __init__(self, workdir: Path, unit_dirs: list[Path]) -> None:
        self.dir = workdir
        (workdir / "bin").mkdir(parents=True, exist_ok=True)
        (workdir / "facts").mkdir(exist_ok=True)
        self.state_file = workdir / "state.json"
        self.unit_dirs = unit_dirs
        for d in unit_dirs:
            d.mkdir(mode=0o755, parents=True, exist_ok=True)  # as every systemd host has it
        tool = workdir / "bin" / "systemctl"
        tool.write_text(_FAKE_SYSTEMCTL.format(python=sys.executable))
        tool.chmod(0o755)

    def env(self, fleet: Fleet) -> dict[str, str]:
        return {
            "PATH": f"{self.dir / 'bin'}:{fleet.env['PATH']}",
            "FAKE_SYSTEMD_STATE": str(self.state_file),
            "FAKE_SYSTEMD_UNIT_DIRS": os.pathsep.join(map(str, self.unit_dirs)),
            "ANSIBLE_CACHE_PLUGIN": "jsonfile",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(self.dir / "facts"),
            "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "0",
        }

    def cache_service_mgr(self, fleet: Fleet, host: str) -> None:
        """Put service_mgr=systemd into the fact cache of this host, as a gathering there would."""
        play = fleet.workdir / "facts.yml"
        play.write_text(
            json.dumps(
                [
                    {
                        "name": "A systemd host",
                        "hosts": host,
                        "gather_facts": False,
                        "tasks": [{"ansible.builtin.set_fact": {"service_mgr": "systemd", "cacheable": True}}],
                    }
                ]
            )
        )
        inventory = str(fleet.inventory / "hosts.yml")
        res = fleet.run_tool(
            "ansible-playbook",
            "-i",
            inventory,
            "--vault-password-file",
            str(fleet.vault_password_file),
            str(play),
            env=self.env(fleet),
        )
        if res.returncode != 0:
            raise AssertionError(res.stdout + res.stderr)

    def unit(self, name: str) -> dict[str, Any]:
        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {"units": {}}
        return dict(state["units"].get(name, {"enabled": False, "active": False, "starts": 0}))
