"""How a parallel run is cut into units of work, and in which order the workers take them.

The suite is wait-bound in parts (a radosgw restart, a lease that must lapse)
and CPU-bound in others (Ansible converges), and a few units are long: the
watcher's soak, the Ansible fleets, the package builds. Handed out in
collection order, a long unit taken last runs alone at the end while the
other workers idle; so the longest go first (longest-processing-time-first,
which keeps the finish within 4/3 of the best possible), by the durations a
whole run measured and recorded in tests/durations.json. A unit it does not
know counts one second a test: a new test, or a renamed one, is at worst
scheduled late, never lost.

`RGWTLS_WRITE_DURATIONS=1` makes a complete, passing parallel run write that
file again (scripts/durations does it); any other run leaves the tree as it
found it.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Protocol, TypeVar

DURATIONS = Path(__file__).with_name("durations.json")
UNKNOWN = 1.0  # seconds a test the file does not know is taken to need
# Units shorter than this are left out of the file: their order hardly matters.
RECORDED = 5.0

# A module that declares a fixture wider than a test (its own Pebble or Ceph,
# the Ansible fleet and its converges, a wheelhouse) goes whole to one worker:
# split, each worker would build it again, and a module fixture again after
# each test of another module.
_MODULE_FIXTURE = re.compile(r"""scope\s*=\s*["'](?:session|package|module|class)["']""")


class Located(Protocol):
    @property
    def nodeid(self) -> str: ...


T = TypeVar("T", bound=Located)


@functools.cache
def _whole_module(path: str) -> bool:
    try:
        return bool(_MODULE_FIXTURE.search(Path(path).read_text()))
    except OSError:
        return False


def scope_of(nodeid: str, rootdir: Path) -> str:
    """The unit of work one worker takes: the whole module if it builds something per module, else the test."""
    module = nodeid.split("::", 1)[0]
    return module if _whole_module(str(rootdir / module)) else nodeid


def recorded(path: Path = DURATIONS) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def longest_first(items: list[T], rootdir: Path, known: dict[str, float]) -> list[T]:
    """`items` with their units in decreasing measured length; a unit's own tests keep their order.

    Every worker sorts its collection the same way (the same file, the same
    collection), so xdist's scheduler, told not to reorder, hands the units
    out in this order.
    """
    units: dict[str, list[T]] = {}
    for item in items:
        units.setdefault(scope_of(item.nodeid, rootdir), []).append(item)
    cost = {unit: known.get(unit, UNKNOWN * len(tests)) for unit, tests in units.items()}
    ordered = sorted(units, key=lambda unit: -cost[unit])  # stable: equal costs keep collection order
    return [item for unit in ordered for item in units[unit]]


def asked() -> bool:
    return os.environ.get("RGWTLS_WRITE_DURATIONS") == "1"


def write(seconds: dict[str, float], rootdir: Path, path: Path = DURATIONS) -> None:
    """Each unit's measured time (setup, call and teardown of its tests), the long ones only."""
    units: dict[str, float] = {}
    for nodeid, took in seconds.items():
        unit = scope_of(nodeid, rootdir)
        units[unit] = units.get(unit, 0.0) + took
    kept = {unit: round(took, 1) for unit, took in sorted(units.items()) if took >= RECORDED}
    path.write_text(json.dumps(kept, indent=1) + "\n")
