"""docs/ceph-versions.md is written only when a run is asked to: a plain pytest leaves the tree clean."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from devsite import versions
from tests import conftest

ROOT = Path(__file__).resolve().parent.parent


def _tentacle_ids() -> list[str]:
    return [f"tests/{m}.py::t" for m in sorted(conftest.TENTACLE_MODULES)]


def _recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    written: list[dict[str, str]] = []
    monkeypatch.delenv("RGWTLS_WRITE_DURATIONS", raising=False)  # scripts/durations' run: not these sessions'
    monkeypatch.setattr(conftest, "record", written.append)
    monkeypatch.setattr(conftest, "current_row", lambda passed, skipped: {"passed": str(passed)})
    monkeypatch.setattr(conftest, "_tentacle_collected", set())
    return written


def finished_whole_run(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """Run the session hook as after a whole passing run; the rows it would have written."""
    written = _recorded(monkeypatch)
    items = [SimpleNamespace(path=Path(i.split("::")[0]), nodeid=i, keywords={"tentacle": 1}) for i in _tentacle_ids()]
    monkeypatch.setattr(conftest, "_tentacle_outcomes", dict.fromkeys(_tentacle_ids(), "passed"))
    session: Any = SimpleNamespace(items=items, config=SimpleNamespace())
    conftest.pytest_sessionfinish(session, 0)
    return written


def finished_parallel_run(monkeypatch: pytest.MonkeyPatch, deselected_on: str = "") -> list[dict[str, str]]:
    """The same run under xdist: two workers run half each; the controller gets every report."""
    monkeypatch.setenv(versions.WRITE_VAR, "1")
    written = _recorded(monkeypatch)
    ids = _tentacle_ids()
    items = [SimpleNamespace(path=Path(i.split("::")[0]), nodeid=i, keywords={"tentacle": 1}) for i in ids]
    outputs = []
    for name, mine in (("gw0", ids[::2]), ("gw1", ids[1::2])):
        # A worker collected all, ran its half, and writes nothing itself.
        outcomes = dict.fromkeys(mine, "passed") | ({"(deselected)": "deselected"} if name == deselected_on else {})
        monkeypatch.setattr(conftest, "_tentacle_outcomes", outcomes)
        config = SimpleNamespace(workerinput={"workerid": name}, workeroutput={})
        worker: Any = SimpleNamespace(items=items, config=config)
        conftest.pytest_sessionfinish(worker, 0)
        outputs.append(config.workeroutput)
    assert written == []
    # The controller: no items of its own, every worker's reports (pytest_runtest_logreport), then each one's end.
    monkeypatch.setattr(conftest, "_tentacle_outcomes", dict.fromkeys(ids, "passed"))
    for out in outputs:
        conftest.pytest_testnodedown(SimpleNamespace(workeroutput=out), None)
    controller: Any = SimpleNamespace(items=[], config=SimpleNamespace())
    conftest.pytest_sessionfinish(controller, 0)
    return written


def test_a_whole_passing_run_not_asked_writes_no_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(versions.WRITE_VAR, raising=False)
    assert finished_whole_run(monkeypatch) == []


@pytest.mark.parametrize("value", ["", "0", "yes"])
def test_only_the_value_1_asks(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(versions.WRITE_VAR, value)
    assert finished_whole_run(monkeypatch) == []


def test_a_whole_passing_run_asked_writes_its_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(versions.WRITE_VAR, "1")
    assert finished_whole_run(monkeypatch) == [{"passed": str(len(conftest.TENTACLE_MODULES))}]


def test_a_parallel_run_writes_one_row_on_the_controller_with_every_worker_s_tests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert finished_parallel_run(monkeypatch) == [{"passed": str(len(conftest.TENTACLE_MODULES))}]


def test_a_parallel_run_whose_worker_left_tentacle_tests_out_writes_no_row(monkeypatch: pytest.MonkeyPatch) -> None:
    assert finished_parallel_run(monkeypatch, deselected_on="gw1") == []


def test_ci_asks_both_runs_and_still_runs_exactly_the_readmes_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]

    def line_of(command: str) -> int:
        """Where CI runs it as written: alone, in the background (setsid ... &), or with its status kept."""
        found = [
            i for i, line in enumerate(ci) if re.fullmatch(rf"(setsid )?{re.escape(command)}( [|>].*| .*&)?", line)
        ]
        assert len(found) == 1, (command, found)
        return found[0]

    export = ci.index(f"export {versions.WRITE_VAR}=1")
    assert line_of(commands[0]) < export < line_of(commands[1])
    assert export < line_of(commands[2])
    # The Tentacle root's environment is cleared (env -i) but for a list, which must pass it on.
    keep = re.search(r"for v in ([^;]+); do", (ROOT / "scripts" / "tentacle").read_text())
    assert keep is not None
    assert versions.WRITE_VAR in keep.group(1).split()
    assert versions.WRITE_VAR in readme
