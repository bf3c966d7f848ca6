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

Workers share a core (three to one), so a unit that mostly waits (a deploy frozen until
its slot's lease lapses, the watcher's soak) leaves its core to one that
computes, but only while one does: longest-first put the frozen deploys next
to each other, and for a minute and more all four workers waited at once with
the cores idle. So the file keeps each unit's CPU time beside its duration,
and a unit that spends under WAITING of its time on the CPU is handed out
after one that does not, one to one, while both last.

`RGWTLS_WRITE_DURATIONS=1` makes a complete, passing parallel run write that
file again (scripts/durations does it); any other run leaves the tree as it
found it.
"""

from __future__ import annotations

import functools
import json
import os
import re
from itertools import chain, zip_longest
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar

DURATIONS = Path(__file__).with_name("durations.json")
UNKNOWN = 1.0  # seconds a test the file does not know is taken to need
# Units shorter than this are left out of the file: their order hardly matters.
RECORDED = 5.0
# A unit on the CPU for less than this share of its duration mostly waits.
WAITING = 0.2

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


class Cost(NamedTuple):
    """A unit's measured duration and CPU time (its own and its children's), in seconds."""

    seconds: float
    cpu: float

    @property
    def waits(self) -> bool:
        return self.cpu < WAITING * self.seconds


def recorded(path: Path = DURATIONS) -> dict[str, Cost]:
    """The file's units; one with a duration alone (the file before CPU times) counts as busy."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    known = {}
    for unit, v in data.items():
        try:
            seconds, cpu = (float(v), float(v)) if isinstance(v, int | float) else (float(v[0]), float(v[1]))
        except (TypeError, ValueError, IndexError):
            continue
        known[str(unit)] = Cost(seconds, cpu)
    return known


def order(items: list[T], rootdir: Path, known: dict[str, Cost]) -> list[T]:
    """`items` with their units longest first, each waiting unit after a busy one; a unit's tests keep their order.

    Every worker sorts its collection the same way (the same file, the same
    collection), so xdist's scheduler, told not to reorder, hands the units
    out in this order.
    """
    units: dict[str, list[T]] = {}
    for item in items:
        units.setdefault(scope_of(item.nodeid, rootdir), []).append(item)
    cost = {unit: known.get(unit, Cost(UNKNOWN * len(tests), UNKNOWN * len(tests))) for unit, tests in units.items()}
    longest = sorted(units, key=lambda unit: -cost[unit].seconds)  # stable: equal costs keep collection order
    busy = [unit for unit in longest if not cost[unit].waits]
    waiting = [unit for unit in longest if cost[unit].waits]
    ordered = [unit for unit in chain.from_iterable(zip_longest(busy, waiting)) if unit is not None]
    return [item for unit in ordered for item in units[unit]]


def asked() -> bool:
    return os.environ.get("RGWTLS_WRITE_DURATIONS") == "1"


def write(seconds: dict[str, float], cpu: dict[str, float], rootdir: Path, path: Path = DURATIONS) -> None:
    """Each unit's measured time and CPU time (setup, call and teardown of its tests), the long ones only."""
    units: dict[str, list[float]] = {}
    for nodeid, took in seconds.items():
        unit = units.setdefault(scope_of(nodeid, rootdir), [0.0, 0.0])
        unit[0] += took
        unit[1] += cpu.get(nodeid, took)
    kept = [(unit, took, used) for unit, (took, used) in sorted(units.items()) if took >= RECORDED]
    lines = [f" {json.dumps(unit)}: [{took:.1f}, {used:.1f}]" for unit, took, used in kept]  # a unit a line
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")
