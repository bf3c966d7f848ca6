"""deploy.activate with the boundary faked: HAProxy's runtime API as a UNIX socket answering scripted text."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from rgwtls import activate, config, deploy, metrics, restart, scrub
from rgwtls.config import DeployConfig
from rgwtls.errors import ConfigError, DeployDeferred, DeployError, Interrupted, LockHeld, StoreError
from rgwtls.haproxy import Runtime, payload_lines
from rgwtls.status import Report, render
from rgwtls.store import CertSet
from rgwtls.targets import PemFile
from tests.runtime import FakeSocket, read_command
from tests.test_config import MINIMAL, write
from tests.test_scrub import key_pem

Answer = Callable[[str], str | None]  # the command text received -> the answer, or None to hang


class FakeRuntime(FakeSocket):
    """A stats socket: each connection gets one answer, as HAProxy's non-interactive CLI gives."""

    def __init__(self, path: Path, answer: Answer) -> None:
        self.answer = answer
        self.received: list[str] = []
        super().__init__(path)

    def handle(self, conn: socket.socket) -> bool:
        conn.settimeout(None)
        text = read_command(conn).decode()
        self.received.append(text)
        reply = self.answer(text)
        if reply is None:
            return True
        conn.sendall(reply.encode() + b"\n\n")
        return False


def haproxy_like(level: str = "admin", loaded: str = "/etc/haproxy/rgw.pem", refuse: str = "") -> Answer:
    def answer(text: str) -> str | None:
        if text.startswith("show cli level"):
            return level
        if text.startswith("show ssl cert"):
            return f"# filename\n{loaded}"
        if text.startswith("set ssl cert"):
            return refuse or f"Transaction created for certificate {loaded}!"
        if text.startswith("commit ssl cert"):
            return f"Committing {loaded}.\nSuccess!"
        if text.startswith("abort ssl cert"):
            return f"Transaction aborted for certificate '{loaded}'!"
        return "Unknown command"

    return answer


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Callable[[Answer], FakeRuntime]]:
    made: list[FakeRuntime] = []

    def make(answer: Answer) -> FakeRuntime:
        made.append(FakeRuntime(tmp_path / f"admin{len(made)}.sock", answer))
        return made[-1]

    yield make
    for f in made:
        f.close()


def deploy_cfg(sock: Path, **kw: object) -> DeployConfig:
    return DeployConfig(activate="haproxy", haproxy_socket=str(sock), path="/etc/haproxy/rgw.pem", **kw)  # type: ignore[arg-type]


def test_the_payload_loses_its_blank_lines_since_an_empty_line_ends_it() -> None:
    pem = "-----BEGIN X-----\nAAAA\n\n-----END X-----\n\n\n-----BEGIN Y-----\nBBBB\n-----END Y-----\n"
    assert "\n\n" not in payload_lines(pem)
    assert payload_lines(pem).count("\n") == 5


def test_a_swap_sends_set_then_commit_with_the_pem_as_payload(fake: Callable[[Answer], FakeRuntime]) -> None:
    f = fake(haproxy_like())
    activate.swap(Runtime(str(f.path), 5), "/etc/haproxy/rgw.pem", "KEY\n\nCERT\n")
    assert f.received[0] == "set ssl cert /etc/haproxy/rgw.pem <<\nKEY\nCERT\n\n"
    assert f.received[1] == "commit ssl cert /etc/haproxy/rgw.pem\n"


def test_a_refused_pem_is_one_line_and_the_transaction_is_aborted(fake: Callable[[Answer], FakeRuntime]) -> None:
    f = fake(haproxy_like(refuse="unable to load certificate from file '/x'.\nCan't load the payload"))
    with pytest.raises(DeployError) as e:
        activate.swap(Runtime(str(f.path), 5), "/etc/haproxy/rgw.pem", "KEY\nCERT\n")
    assert "HAProxy refused the new PEM" in str(e.value)
    assert "\n" not in str(e.value)
    assert "KEY" not in str(e.value)
    assert f.received[-1].startswith("abort ssl cert /etc/haproxy/rgw.pem")


@pytest.mark.parametrize("kind", ["rsa-pkcs8", "ec-traditional"])
@pytest.mark.parametrize("echo", ["everything", "the key's lines without the markers"])
def test_a_socket_that_echoes_the_pem_puts_no_key_line_and_no_control_byte_into_the_error(
    fake: Callable[[Answer], FakeRuntime], kind: str, echo: str
) -> None:
    """Finding 4: what listens may be no HAProxy; one that echoed put all 26 lines of the key into the line."""
    scrub.forget_keys()
    key = key_pem(kind)
    lines = [line for line in key.splitlines() if not line.startswith("-----")]

    def answer(text: str) -> str | None:
        if not text.startswith("set ssl cert"):
            return haproxy_like()(text)
        said = text if echo == "everything" else "\n".join(lines)
        return f"\x1b]0;owned\x07{said}\x1b[2J\x9b"

    f = fake(answer)
    try:
        with pytest.raises(DeployError) as e:
            activate.swap(Runtime(str(f.path), 5), "/etc/haproxy/rgw.pem", key + "CERT\n")
    finally:
        scrub.forget_keys()
    said = str(e.value)
    assert said.startswith("HAProxy refused the new PEM for /etc/haproxy/rgw.pem: ")
    assert not [line for line in lines if line[:20] in said], said
    assert not re.search(r"[\x00-\x1f\x7f-\x9f]", said), said
    assert "[key removed]" in said
    assert len(said) < 500


def test_a_socket_below_level_admin_says_cephadm_writes_operator_and_what_to_change(
    fake: Callable[[Answer], FakeRuntime],
) -> None:
    f = fake(haproxy_like(level="operator"))
    with pytest.raises(DeployError) as e:
        activate.preflight(deploy_cfg(f.path))
    assert "level operator" in str(e.value)
    assert f"stats socket {f.path} mode 600 level admin" in str(e.value)
    assert "nothing was changed" in str(e.value)
    assert not any(r.startswith("set ") for r in f.received)


def test_a_path_haproxy_has_not_loaded_names_the_crt_line_to_add(fake: Callable[[Answer], FakeRuntime]) -> None:
    f = fake(haproxy_like(loaded="/etc/haproxy/other.pem"))
    with pytest.raises(DeployError) as e:
        activate.preflight(deploy_cfg(f.path))
    assert "'crt /etc/haproxy/rgw.pem'" in str(e.value)
    assert "/etc/haproxy/other.pem" in str(e.value)


def test_a_missing_socket_is_one_line_naming_the_stats_socket_line(tmp_path: Path) -> None:
    with pytest.raises(DeployError) as e:
        Runtime(str(tmp_path / "none.sock"), 5).level()
    assert "no such socket" in str(e.value)
    assert "level admin" in str(e.value)


def test_a_socket_this_user_may_not_open_is_permission_denied(tmp_path: Path) -> None:
    listener, path = sock_file(tmp_path)
    with listener:
        connect_as_another_user(path)


def connect_as_another_user(path: Path) -> None:
    if os.geteuid() == 0:
        # root passes any mode: drop to nobody in a child, as a deploy run by the wrong user would be.
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                Runtime(str(path), 5).level()
            except DeployError as e:
                code = 0 if "permission denied" in str(e) else 2
            finally:
                os._exit(code)
        assert os.waitpid(pid, 0)[1] == 0
    else:
        with pytest.raises(DeployError, match="permission denied"):
            Runtime(str(path), 5).level()


def sock_file(tmp_path: Path) -> tuple[socket.socket, Path]:
    path = tmp_path / "admin.sock"
    os.chmod(tmp_path, 0o755)  # the directory is open, the socket is not
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen(1)
    os.chmod(path, 0o600)
    return s, path


def test_a_haproxy_that_never_answers_is_cut_at_the_total_deadline(fake: Callable[[Answer], FakeRuntime]) -> None:
    f = fake(lambda text: None)
    started = time.monotonic()
    with pytest.raises(DeployError, match=r"no answer to 'show cli level' within 0\.5s"):
        Runtime(str(f.path), 0.5).level()
    assert time.monotonic() - started < 2


def test_an_open_transaction_left_by_a_killed_run_is_aborted_before_the_swap(
    fake: Callable[[Answer], FakeRuntime],
) -> None:
    base = haproxy_like()

    def answer(text: str) -> str | None:
        if text.startswith("show ssl cert"):
            return "# transaction\n*/etc/haproxy/rgw.pem\n# filename\n/etc/haproxy/rgw.pem"
        return base(text)

    f = fake(answer)
    activate.preflight(deploy_cfg(f.path))
    assert f.received[-1].startswith("abort ssl cert /etc/haproxy/rgw.pem")


def test_activate_must_be_a_known_method_and_haproxy_wants_the_pem_layout(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"deploy\.activate.*restart, haproxy or self"):
        config.load(write(tmp_path, MINIMAL + '[deploy]\nactivate = "hup"\n'))
    with pytest.raises(ConfigError, match='haproxy needs layout = "pem"'):
        config.load(write(tmp_path, MINIMAL + '[deploy]\nactivate = "haproxy"\nlayout = "split"\n'))
    with pytest.raises(ConfigError, match=r"deploy\.haproxy_socket"):
        config.load(write(tmp_path, MINIMAL + '[deploy]\nactivate = "haproxy"\nhaproxy_socket = "admin.sock"\n'))
    cfg = config.load(write(tmp_path, MINIMAL))
    assert (cfg.deploy.activate, cfg.deploy.haproxy_socket, cfg.deploy.self_reload_wait) == (
        "restart",
        "/run/haproxy/admin.sock",
        30.0,
    )


def test_activations_are_counted_by_method_in_the_state_dir(tmp_path: Path) -> None:
    d = DeployConfig(state_dir=str(tmp_path / "state"), activate="haproxy")
    assert activate.recorded(d) == {}
    activate.record(d, "haproxy")
    activate.record(d, "haproxy")
    activate.record(d, "self-then-restart")
    assert activate.recorded(d) == {"haproxy": 2, "self-then-restart": 1}
    (tmp_path / "state" / activate.RECORD).write_text("not json")
    assert activate.recorded(d) == {}


def test_status_shows_how_the_host_activates_and_the_metrics_count_by_method() -> None:
    report = Report("rgw0", [], activate="haproxy: swapped in memory", activations={"haproxy": 3, "restart": 1})
    assert "activates haproxy: swapped in memory; activations: 3 haproxy, 1 restart" in render(report)
    text = metrics.render(metrics.samples("deploy", True, 0.1, report))
    assert 'rgwtls_activations_total{method="haproxy"} 3' in text
    assert "rgwtls_activations_total" not in metrics.render(metrics.samples("issue", True, 0.1, report))


def test_a_dry_run_says_how_each_method_would_activate() -> None:
    restart = "systemctl restart ceph-radosgw@rgw.gw1"
    assert activate.plan(DeployConfig(), restart) == restart
    hx = activate.plan(DeployConfig(activate="haproxy", path="/etc/haproxy/rgw.pem"), restart)
    assert "commit ssl cert /etc/haproxy/rgw.pem on /run/haproxy/admin.sock (no restart)" in hx
    assert activate.plan(DeployConfig(activate="self"), restart).endswith(
        f"30s while the server re-reads its file, then: {restart}"
    )


def test_a_signal_while_self_waits_puts_the_previous_file_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from rgwtls.errors import Interrupted

    def interrupted(*args: object) -> str | None:
        raise Interrupted("interrupted by SIGTERM")

    monkeypatch.setattr(activate, "served_within", interrupted)
    put_back: list[bool] = []
    from devsite.certmaker import pem_file

    new = pem_file(("example.org",)).encode()
    with pytest.raises(DeployError, match="put the previous file back, which the server re-reads"):
        activate.without_restart(
            DeployConfig(activate="self"), ("example.org",), new, b"old", lambda: put_back.append(True)
        )
    assert put_back == [True]


# -- deploy's steps around the activation, with the cluster, the CA's checks and the restart faked --------------


class FakePool:
    """The cluster as deploy's restart step sees it: a restart slot, and a mon that answers or not."""

    def __init__(self, slot: bool = True, mon: bool = True) -> None:
        self.slot, self.mon = slot, mon
        self.slots_taken = 0

    @contextlib.contextmanager
    def restart_slot(self, slots: int, wait: float, hold: float) -> Iterator[Callable[[], None]]:
        if not self.slot:
            raise LockHeld(
                f"no restart slot free within {wait:g}s: 1 gateway(s) restarting (rgw-b); "
                "nothing changed here, the next run tries again"
            )
        self.slots_taken += 1
        yield lambda: None

    def confirm_mon(self) -> None:
        if not self.mon:
            raise StoreError("ceph: no mon answered within 2s (timed out)")


@dataclass
class Host:
    """One gateway's deploy of a new set through deploy._install: a real PEM file, everything else faked."""

    cfg: config.Config
    pem: Path
    old: bytes
    new: bytes
    restarts: list[str]
    runtime: FakeRuntime | None = None

    def received(self) -> list[str]:
        """The runtime API commands HAProxy got, if it is HAProxy."""
        return list(self.runtime.received) if self.runtime else []

    def deploy(self, pool: FakePool, force: bool = False) -> None:
        target = PemFile(self.cfg.deploy)
        served = SimpleNamespace(result=lambda: fingerprint_of(self.old))
        a_set = CertSet("cog.example.org", 2, "", "", "", ("cog.example.org",), "", "", "")
        deploy._install(
            self.cfg,
            pool,  # type: ignore[arg-type]
            target,
            a_set,
            ("cog.example.org",),
            target.installed(),
            self.new,
            served,  # type: ignore[arg-type]
            dry_run=False,
            allow_older=False,
            force=force,
        )


def fingerprint_of(pem: bytes) -> str:
    from rgwtls.probe import pem_fingerprint

    return pem_fingerprint(pem.decode())


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: Callable[[Answer], FakeRuntime]) -> Callable[..., Host]:
    """A gateway whose endpoint never serves the new certificate, only the old one: "self" does not re-read, and
    HAProxy's VIP is held by a peer (or HAProxy, faked, answers as `haproxy` says: a PEM that HAProxy refuses)."""
    from devsite.certmaker import pem_file
    from rgwtls import validate

    pem = tmp_path / "rgw.pem"
    old, new = pem_file(("cog.example.org",)).encode(), pem_file(("cog.example.org",)).encode()

    def make(activate_as: str, haproxy: Callable[[str, bytes], Answer] | None = None) -> Host:
        pem.write_bytes(old)
        pem.chmod(0o600)
        (tmp_path / "state").mkdir(exist_ok=True)
        extra, runtime = "", None
        if activate_as == "haproxy":
            runtime = fake((haproxy or (lambda loaded, new: haproxy_like(loaded=loaded)))(str(pem), new))
            extra = f'haproxy_socket = "{runtime.path}"\n'
        conf = tmp_path / "rgwtls.toml"
        conf.write_text(
            f'[[certificate]]\nname = "cog.example.org"\ndomains = ["cog.example.org"]\n\n[deploy]\n'
            f'path = "{pem}"\nstate_dir = "{tmp_path / "state"}"\nactivate = "{activate_as}"\n'
            f"self_reload_wait = 0.2\nverify_timeout = 0.2\n{extra}"
        )
        conf.chmod(0o644)
        cfg = config.load(conf)
        checked = SimpleNamespace(
            cert=SimpleNamespace(not_valid_after_utc=dt.datetime(2030, 1, 1, tzinfo=dt.UTC)),
            fingerprint=fingerprint_of(new),
        )
        monkeypatch.setattr(validate, "check_set", lambda *a, **kw: checked)
        monkeypatch.setattr(validate, "trusted_roots", lambda cfg: None)
        # The endpoint goes on serving the old certificate, whatever is swapped or written.
        served = fingerprint_of(old)
        monkeypatch.setattr(
            activate,
            "served_within",
            lambda d, names, want, s: None if want == served else f"it serves certificate {served[:16]}",
        )
        restarts: list[str] = []
        monkeypatch.setattr(restart, "run", lambda *_: restarts.append("restart"))
        return Host(cfg, pem, old, new, restarts, runtime)

    return make


@pytest.mark.parametrize("fault", ["no mon answers", "no slot is free"])
def test_self_not_reread_with_no_restart_after_all_puts_the_previous_file_back_and_says_so(
    host: Callable[..., Host], fault: str
) -> None:
    """ "self" installed the file before the wait: "nothing was installed" would be false, so the file goes back."""
    h = host("self")
    pool = FakePool(mon=fault != "no mon answers", slot=fault != "no slot is free")
    with pytest.raises(DeployError) as e:
        h.deploy(pool)
    line = str(e.value)
    assert "\n" not in line
    assert "nothing was installed" not in line
    assert line.endswith(f"; put the previous file back in {h.pem}, as radosgw had not re-read the new one")
    if fault == "no mon answers":
        assert line.startswith("ceph: no mon answered within 2s (timed out); radosgw would not come back after a ")
        assert "so it was not restarted; the gateway keeps serving certificate " in line
    else:
        assert line.startswith("no restart slot free within ")
    # What is on disk is what is served, and nothing restarted.
    assert h.pem.read_bytes() == h.old
    assert h.restarts == []


def test_restart_with_no_mon_still_installs_nothing(host: Callable[..., Host]) -> None:
    h = host("restart")
    with pytest.raises(DeployError, match="so nothing was installed; the gateway keeps serving certificate") as e:
        h.deploy(FakePool(mon=False))
    assert "put the previous file back" not in str(e.value)
    assert h.pem.read_bytes() == h.old
    assert h.restarts == []


# -- a haproxy swap that fails waits out the backoff, as a failed restart does ----------------------------------


def refusing_the_new_pem(loaded: str, new: bytes) -> Answer:
    """HAProxy that takes the new PEM's `set ssl cert` but refuses its commit; the previous one commits."""
    base, last_set = haproxy_like(loaded=loaded), [""]

    def answer(text: str) -> str | None:
        if text.startswith("set ssl cert"):
            last_set[0] = text
        if text.startswith("commit ssl cert") and payload_lines(new.decode()) in last_set[0]:
            return f"Committing {loaded}\nunable to load the certificate chain\nFailed!"
        return base(text)

    return answer


@pytest.mark.parametrize("fault", ["not served after the commit", "commit refused"])
def test_a_haproxy_swap_that_failed_and_was_swapped_back_waits_out_the_backoff_unless_forced(
    host: Callable[..., Host], fault: str
) -> None:
    h = host("haproxy", refusing_the_new_pem if fault == "commit refused" else None)
    with pytest.raises(DeployError) as e:
        h.deploy(FakePool())
    line = str(e.value)
    needle = {
        "not served after the commit": "of HAProxy's commit (it serves certificate ",
        "commit refused": "HAProxy refused to commit the new PEM for ",
    }[fault]
    assert needle in line
    assert f"; put the previous certificate back in {h.pem} and in HAProxy: it is served again; " in line
    assert "; failed 1 time(s) in a row on this host: the next attempt is after " in line
    assert line.endswith("(in 5 min), or now with rgwtls deploy --force")
    assert h.pem.read_bytes() == h.old
    record = json.loads((Path(h.cfg.deploy.state_dir) / "cog.example.org.deploy-failed").read_bytes())
    assert (record["generation"], record["fingerprint"], record["failures"]) == (2, fingerprint_of(h.new), 1)
    # The next cron run, inside the backoff, does not touch HAProxy nor the file.
    swaps = len(h.received())
    with pytest.raises(DeployDeferred, match=r"failed on this host 1 time\(s\) in a row"):
        h.deploy(FakePool())
    assert len(h.received()) == swaps
    assert h.pem.read_bytes() == h.old
    # --force tries again, and counts a second failure.
    with pytest.raises(DeployError, match=r"failed 2 time\(s\) in a row on this host"):
        h.deploy(FakePool(), force=True)
    assert h.restarts == []


def test_a_signal_during_a_haproxy_swap_swaps_it_back_and_records_no_failure(
    host: Callable[..., Host], monkeypatch: pytest.MonkeyPatch
) -> None:
    h = host("haproxy")
    served = fingerprint_of(h.old)

    def interrupted(d: DeployConfig, names: tuple[str, ...], want: str, seconds: float) -> str | None:
        if want == served:
            return None
        raise Interrupted("SIGTERM")

    monkeypatch.setattr(activate, "served_within", interrupted)
    with pytest.raises(DeployError) as e:
        h.deploy(FakePool())
    assert str(e.value) == (
        f"interrupted by SIGTERM; put the previous certificate back in {h.pem} and in HAProxy: it is served again"
    )
    assert h.pem.read_bytes() == h.old
    assert not (Path(h.cfg.deploy.state_dir) / "cog.example.org.deploy-failed").exists()
