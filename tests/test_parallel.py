"""The suite on every core: each xdist worker its own ports, a module that builds its own servers on one worker."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devsite import ports
from tests import plan

ROOT = Path(__file__).resolve().parent.parent


def test_outside_xdist_ports_come_from_the_whole_range_of_the_host_s_run() -> None:
    assert ports.port_range({}) == (10000, 25000)


def test_the_tentacle_root_s_run_draws_from_a_range_the_host_s_run_never_touches() -> None:
    # scripts/tentacle sets the variable in the root, so both runs can go at once (.ci/run).
    tentacle = Path(ROOT, "scripts/tentacle").read_text()
    found = re.search(r"RGWTLS_TEST_PORTS=(\d+)-(\d+)", tentacle)
    assert found, "scripts/tentacle sets no RGWTLS_TEST_PORTS"
    low, high = ports.port_range({"RGWTLS_TEST_PORTS": found[0].split("=")[1]})
    host_high = ports.port_range({})[1]
    assert host_high <= low
    assert high <= 32768
    for i in range(4):
        worker = {"PYTEST_XDIST_WORKER": f"gw{i}", "PYTEST_XDIST_WORKER_COUNT": "4"}
        assert low <= ports.port_range({**worker, "RGWTLS_TEST_PORTS": f"{low}-{high}"})[0]
        assert ports.port_range(worker)[1] <= host_high


@pytest.mark.parametrize("text", ["", "x", "25000", "900-2000", "30000-20000", "30000-40000"])
def test_a_port_range_outside_1024_to_32768_or_not_low_high_is_refused(text: str) -> None:
    if not text:
        assert ports.run_range({ports.RANGE_VAR: text}) == (10000, 25000)  # unset: the host's
        return
    with pytest.raises(ValueError, match="RGWTLS_TEST_PORTS"):
        ports.run_range({ports.RANGE_VAR: text})


def test_each_xdist_worker_draws_its_ports_from_a_slice_of_its_own() -> None:
    slices = [ports.port_range({"PYTEST_XDIST_WORKER": f"gw{i}", "PYTEST_XDIST_WORKER_COUNT": "3"}) for i in range(3)]
    assert slices[0][0] == 10000
    assert all(high <= 25000 for _, high in slices)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(slices))  # disjoint, in order
    assert all(high - low > 4000 for low, high in slices)


def test_a_port_handed_out_here_is_in_this_worker_s_slice() -> None:
    low, high = ports.port_range()
    assert low <= ports.free_port() < high


def test_a_module_with_a_module_fixture_goes_whole_to_one_worker_and_the_others_test_by_test() -> None:
    # test_ansible.py converges one fleet per module; test_config.py has nothing per module.
    assert plan.scope_of("tests/test_ansible.py::test_second_run_changes_nothing", ROOT) == "tests/test_ansible.py"
    one = "tests/test_config.py::test_x"
    assert plan.scope_of(one, ROOT) == one


class _Item:
    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid


def test_the_longest_units_go_first_and_a_module_s_tests_keep_their_order() -> None:
    ids = [
        "tests/test_config.py::test_a",
        "tests/test_ansible.py::test_converge",
        "tests/test_ansible.py::test_second_run",
        "tests/test_config.py::test_b",
        "tests/test_config.py::test_new",
    ]
    known = {
        "tests/test_ansible.py": plan.Cost(300.0, 200.0),
        "tests/test_config.py::test_b": plan.Cost(20.0, 20.0),
        "tests/test_config.py::test_a": plan.Cost(0.5, 0.5),
    }
    ordered = [item.nodeid for item in plan.order([_Item(i) for i in ids], ROOT, known)]
    assert ordered == [
        "tests/test_ansible.py::test_converge",
        "tests/test_ansible.py::test_second_run",
        "tests/test_config.py::test_b",
        "tests/test_config.py::test_new",  # unknown: one second
        "tests/test_config.py::test_a",
    ]


def test_units_that_mostly_wait_are_handed_out_each_after_one_that_computes() -> None:
    # Longest first, the three frozen deploys would go out together, and four workers wait with idle cores.
    known = {
        "tests/test_ansible.py": plan.Cost(500.0, 300.0),
        "tests/test_soak.py::test_soak": plan.Cost(300.0, 50.0),
        "tests/test_freeze.py::test_a": plan.Cost(80.0, 4.0),
        "tests/test_freeze.py::test_b": plan.Cost(80.0, 4.0),
        "tests/test_freeze.py::test_c": plan.Cost(80.0, 4.0),
        "tests/test_package.py": plan.Cost(60.0, 30.0),
        "tests/test_busy.py::test_x": plan.Cost(20.0, 10.0),
    }
    ids = sorted(f"{unit}::test_one" if "::" not in unit else unit for unit in known)
    ordered = [item.nodeid for item in plan.order([_Item(i) for i in ids], ROOT, known)]
    assert ordered == [
        "tests/test_ansible.py::test_one",
        "tests/test_soak.py::test_soak",
        "tests/test_package.py::test_one",
        "tests/test_freeze.py::test_a",
        "tests/test_busy.py::test_x",
        "tests/test_freeze.py::test_b",
        "tests/test_freeze.py::test_c",  # no computing unit left to put before it
    ]


def test_durations_keep_the_long_units_summed_per_module_with_their_cpu_and_drop_the_short(tmp_path: Path) -> None:
    seconds = {
        "tests/test_ansible.py::test_converge": 60.0,
        "tests/test_ansible.py::test_second_run": 20.0,
        "tests/test_config.py::test_a": 0.2,
        "tests/test_config.py::test_slow": 12.34,
    }
    cpu = {"tests/test_ansible.py::test_converge": 30.0, "tests/test_ansible.py::test_second_run": 10.0}
    path = tmp_path / "durations.json"
    plan.write(seconds, cpu, ROOT, path)
    assert plan.recorded(path) == {
        "tests/test_ansible.py": plan.Cost(80.0, 40.0),
        "tests/test_config.py::test_slow": plan.Cost(12.3, 12.3),  # no CPU time measured: taken as busy
    }
    assert json.loads(path.read_text())["tests/test_ansible.py"] == [80.0, 40.0]


def test_a_durations_file_of_durations_alone_counts_every_unit_busy(tmp_path: Path) -> None:
    (tmp_path / "old.json").write_text('{"tests/test_ansible.py": 80.0, "tests/test_x.py::test_y": "?"}')
    assert plan.recorded(tmp_path / "old.json") == {"tests/test_ansible.py": plan.Cost(80.0, 80.0)}


def test_a_missing_or_broken_durations_file_orders_by_collection(tmp_path: Path) -> None:
    assert plan.recorded(tmp_path / "none.json") == {}
    (tmp_path / "bad.json").write_text("[1, 2")
    assert plan.recorded(tmp_path / "bad.json") == {}


@pytest.mark.parametrize("off", [["-p", "no:xdist"], ["-n", "0"], ["-s"]])
def test_the_suite_still_runs_in_one_process_when_asked(off: list[str]) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *off, "tests/test_layers.py", "-k", "cli"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "workers" not in res.stdout + res.stderr


def test_cpu_hog_runs_the_command_beside_its_loops_and_stops_exactly_those_even_when_it_fails() -> None:
    res = subprocess.run(
        [str(ROOT / "scripts" / "cpu-hog"), "--", "sh", "-c", "exit 3"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "LOOPS": "2"},
        timeout=60,
        check=False,
    )
    assert res.returncode == 3, res.stderr
    m = re.search(r"\(PIDs ([\d ]+)\)", res.stderr)
    assert m, res.stderr
    pids = [int(p) for p in m.group(1).split()]
    assert len(pids) == 2
    # Reaped by the script before it exited: no such process any more.
    assert not [p for p in pids if Path(f"/proc/{p}").exists()]
