"""[deploy]: what a gateway installs, where, with which owner and mode, and how the server takes it."""

from __future__ import annotations

import shlex
import string
from collections.abc import Set
from dataclasses import dataclass

from rgwtls.config.values import Where


@dataclass(frozen=True)
class DeployConfig:
    """[deploy]: what this gateway installs, where, and how radosgw is restarted and checked."""

    # Which [[certificate]] this gateway serves; empty: the first one.
    certificate: str = ""
    # The names this gateway must be covered for; empty: the certificate's domains.
    names: tuple[str, ...] = ()
    # pem: key, cert and chain in one file (civetweb's and beast's ssl_certificate);
    # split: a key file and a cert+chain file (beast's ssl_private_key);
    # config-key: the mon config-key store, for ssl_certificate=config://KEY.
    layout: str = "pem"
    path: str = "/etc/ceph/rgw.pem"
    key_path: str = "/etc/ceph/rgw.key"
    cert_path: str = "/etc/ceph/rgw.crt"
    config_key: str = ""
    # Owner, group and mode (octal) of new files (existing files keep theirs);
    # empty owner or group: the caller's.
    owner: str = ""
    group: str = ""
    mode: str = "0640"
    # This host's own state: deploy's host lock, per-host records, and the
    # issuer's set kept when the pool could not store it.
    state_dir: str = "/var/lib/rgwtls"
    # A PEM bundle of roots trusted besides the system's store: a set whose
    # chain does not end at one of them is neither stored nor installed.
    # Set it for a private ACME CA (step-ca, Pebble); empty: the system's alone.
    trusted_roots: str = ""
    # Split like a shell would, then {host} (the short host name) is put into each word.
    restart_command: str = "systemctl restart ceph-radosgw@rgw.{host}"
    restart_timeout: float = 120.0
    # At most this many gateways of the fleet restart at the same moment.
    max_parallel_restarts: int = 1
    # How long to wait for a restart slot while other gateways restart.
    restart_wait: float = 900.0
    # Wait a random 0..splay seconds before installing, to spread the fleet.
    splay: float = 0.0
    verify_endpoint: str = "127.0.0.1:443"
    # SNI and name checked in the handshake; empty: the first non-wildcard name.
    verify_server_name: str = ""
    verify_timeout: float = 30.0
    # `deploy --watch`: besides every notify from the issuer, look at the pool this often.
    interval: float = 300.0
    # How the server takes a new certificate: restart (restart_command, under
    # a slot), haproxy (HAProxy's runtime API, no restart) or self (the server
    # re-reads its file, as radosgw's ssl_reload does; restarted if not served
    # within self_reload_wait seconds).
    activate: str = "restart"
    haproxy_socket: str = "/run/haproxy/admin.sock"
    self_reload_wait: float = 30.0
    # Pools a starting radosgw must reach (zone root, control pool): probed before
    # every restart, which waits while they do not answer; empty: no probe (health.py).
    rgw_pools: tuple[str, ...] = (".rgw.root", "default.rgw.control")

    def restart_argv(self, host: str) -> list[str]:
        """The restart command for this host; validated at load, so it cannot fail here.

        The command is split first and each word formatted after, so a host
        name can never add, remove or join words.
        """
        return [word.format(host=host) for word in _restart_words(self.restart_command)]

    @property
    def slot_hold(self) -> float:
        """How long a restart slot is held: a restart and its check, twice over (a rollback), and a margin.

        A slot outlives a gateway that died holding it by at most this long,
        and rollout takes a holder record older than this for a lapsed one.
        """
        return self.restart_timeout + 2 * self.verify_timeout + 60

    @property
    def file_mode(self) -> int:
        return int(self.mode, 8)


def _restart_words(command: str) -> list[str]:
    """The words of deploy.restart_command; ValueError says what is wrong with it, for the loader."""
    try:
        words = shlex.split(command)
    except ValueError as e:
        raise ValueError(f"cannot be split like a shell would ({e})") from None
    if not words:
        raise ValueError("must name a command")
    for word in words:
        try:
            fields = list(string.Formatter().parse(word))
        except ValueError as e:
            raise ValueError(f"{word!r}: {e}; write a literal brace as {{{{ or }}}}") from None
        for _, name, spec, conversion in fields:
            if name is None:
                continue
            if name != "host" or spec or conversion:
                shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
                raise ValueError(
                    f"{word!r}: {shown} is not allowed; the only placeholder is {{host}} "
                    "(write a literal brace as {{ or }})"
                )
    return words


def validate_deploy(d: DeployConfig, certificates: Set[str], where: Where) -> None:
    """What the types cannot say: a layout and activation that fit together, a command, a mode that keeps the key."""
    if d.layout not in ("pem", "split", "config-key"):
        raise where.error("deploy.layout", "must be pem, split or config-key")
    if d.layout == "config-key" and not d.config_key.startswith("rgw/cert/"):
        raise where.error("deploy.config_key", "must start with rgw/cert/ for the config-key layout")
    if d.certificate and d.certificate not in certificates:
        raise where.error("deploy.certificate", f"no [[certificate]] is named {d.certificate!r}")
    try:
        _restart_words(d.restart_command)
    except ValueError as e:
        raise where.error("deploy.restart_command", str(e)) from None
    _check_mode(d.mode, where)
    _check_activate(d, where)


def _check_activate(d: DeployConfig, where: Where) -> None:
    """deploy.activate: HAProxy loads one PEM per crt (key, cert, chain), so haproxy wants the pem layout."""
    if d.activate not in ("restart", "haproxy", "self"):
        raise where.error("deploy.activate", f"must be restart, haproxy or self, not {d.activate!r}")
    if d.activate == "haproxy" and d.layout != "pem":
        raise where.error("deploy.activate", 'haproxy needs layout = "pem": HAProxy\'s crt loads one file')
    if d.activate == "haproxy" and not d.haproxy_socket.startswith("/"):
        raise where.error("deploy.haproxy_socket", f"must be an absolute path, not {d.haproxy_socket!r}")
    if d.activate == "self" and d.layout == "config-key":
        raise where.error("deploy.activate", "self needs a file layout (pem or split): radosgw re-reads files")


def _check_mode(mode: str, where: Where) -> None:
    """deploy.mode: the file holds the private key, so others get no access at all."""
    if not mode or any(c not in "01234567" for c in mode):
        raise where.error("deploy.mode", f"{mode!r} is not an octal mode such as 0640")
    bits = int(mode, 8)
    if bits > 0o777:
        raise where.error("deploy.mode", f"{mode} sets more than the permission bits (0777); use 0640 or 0600")
    if bits & 0o004:
        raise where.error("deploy.mode", f"{mode} lets every user read the private key; use 0640 or 0600")
    if bits & 0o007:
        raise where.error("deploy.mode", f"{mode} gives every user access to the private key; use 0640 or 0600")
