"""How `make test TEST_WORKERS=N` spreads the suite over pytest-xdist workers (`-n N --dist loadgroup`), and why it is safe.

A work unit is a test file, or a named group of files (`pytest.mark.xdist_group(name)`): a unit runs whole, in
file order, on one worker, so module fixtures (a service, a replica, the smoke profile's run) start once and tests
that rely on file order keep it. Two kinds of files share a group:
- files whose tests share session replicas (tests/server: one set of `lab serve` processes for the package);
- files that create network namespaces (`ip netns`, the 10.231.X.0/30 subnets, the drill service's fixed
  namespace names), which must not run at the same time as each other.
Units go out longest first (`pytest.mark.long_running(seconds)`, an estimate on 2 CPU cores; unmarked units
after, in collection order), so the smoke profile's ten notebooks start at once instead of last.
Without `-n` none of this applies: the suite runs in collection order, as before.
"""

from __future__ import annotations

import pytest

LONG_RUNNING = "long_running"
# The files that create network namespaces (directly, through `lab up`, or through a drill's backend probe).
NETWORK_NAMESPACES = pytest.mark.xdist_group("network-namespaces")


def estimated_seconds(item: pytest.Item) -> float:
    mark = item.get_closest_marker(LONG_RUNNING)
    return float(mark.args[0]) if mark else 0.0


def longest_units_first(items: list[pytest.Item]) -> None:
    """Reorder whole units (file or group), longest estimate first; a unit's own order is kept."""
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(unit_of(item), []).append(item)
    ordered = sorted(units.values(), key=lambda unit: -max(estimated_seconds(i) for i in unit))  # stable
    items[:] = [item for unit in ordered for item in unit]


def unit_of(item: pytest.Item) -> str:
    group = item.get_closest_marker("xdist_group")
    return f"@{group.args[0]}" if group else item.nodeid.split("::", 1)[0]


def make_scheduler(config: pytest.Config, log):
    """Units as above, handed out in collection order (which `longest_units_first` made longest first)."""
    from xdist.scheduler import LoadGroupScheduling

    class FileOrGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            group = super()._split_scope(nodeid)  # the group's name, or the nodeid itself when it has none
            return group if group != nodeid else nodeid.split("::", 1)[0]

    config.option.loadscopereorder = False  # keep the longest-first order, not the largest-count-first one
    return FileOrGroupScheduling(config, log)
