"""MIG layout planning: check that a requested cut of a card fits, and print what an operator would run.

Contract: `parse_layout(spec, table)` turns "3x2g+1x1g", "2x3g", "1x7g" or a list such as
["3g.40gb", "2g.20gb", "2g.20gb"] (items may carry a count: "2x2g.20gb") into profiles;
`plan_layout(spec, table)` returns a `MigPlan` with one memory placement per instance, or raises
`LabError` naming the problem (unknown profile, more instances than the profile allows, more than 7
compute slices, no placement that fits). `operator_commands(plan, gpu_index, ...)` returns the
`nvidia-smi` lines to create it. The lab never runs them: its MIG path is read-only (issue 18).

Fit rules, from NVIDIA's "Supported MIG Profiles" page (placement diagrams) and "Getting Started with
MIG" (`nvidia-smi mig -lgipp`): each GPU instance takes `memory_slices` consecutive memory slices
starting at one of its profile's placement starts; instances may not overlap; the compute slices add
up to at most 7; each profile has a maximum instance count. A depth-first search over placements gives
each instance its memory slices (a greedy first-fit can strand a 1g.10gb: it has no start at slice 7)
and refuses a layout no placement fits. On the A100/H100 tables the count and slice rules already
refuse every such layout; the search still decides where each instance lands.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from lab.errors import LabError
from lab.gpu.mig_profiles import COMPUTE_SLICES, MEMORY_SLICES, MigProfile, MigProfileTable


@dataclass(frozen=True)
class PlannedInstance:
    profile: MigProfile
    placement_start: int  # first memory slice

    @property
    def memory_range(self) -> range:
        return range(self.placement_start, self.placement_start + self.profile.memory_slices)


@dataclass(frozen=True)
class MigPlan:
    gpu: str
    instances: tuple[PlannedInstance, ...]  # in creation order: largest first, then by placement

    @property
    def compute_slices_used(self) -> int:
        return sum(i.profile.compute_slices for i in self.instances)

    @property
    def memory_slices_used(self) -> int:
        return sum(i.profile.memory_slices for i in self.instances)

    def describe(self) -> str:
        parts = [f"{i.profile.name}@{i.placement_start}" for i in self.instances]
        return (f"{self.gpu}: {' + '.join(parts)} ({self.compute_slices_used}/{COMPUTE_SLICES} compute, "
                f"{self.memory_slices_used}/{MEMORY_SLICES} memory slices)")


def _items(spec: str | Iterable[str]) -> list[str]:
    if not isinstance(spec, str):
        return [str(item) for item in spec]
    items: list[str] = []
    for part in spec.replace(",", "+").split("+"):
        # "+" joins items but also ends "1g.10gb+me": glue a bare "me" back onto its profile.
        if part.strip().lower() == "me" and items:
            items[-1] += "+me"
        elif part.strip():
            items.append(part)
    return items


def parse_layout(spec: str | Iterable[str], table: MigProfileTable) -> list[MigProfile]:
    """Profiles of a layout spec, one entry per instance (see module docstring for the forms)."""
    profiles: list[MigProfile] = []
    for item in _items(spec):
        token = item.strip()
        count = 1
        head, sep, tail = token.partition("x")
        if sep and head.strip().isdigit():
            count, token = int(head), tail
        if count < 1:
            raise LabError(f"layout item {item!r}: the count must be at least 1")
        profiles.extend([table.profile(token)] * count)
    if not profiles:
        raise LabError("empty MIG layout; give e.g. '7x1g', '3x2g+1x1g', '2x3g' or '1x7g'")
    return profiles


def _place(todo: list[MigProfile], used: frozenset[int]) -> list[int] | None:
    """Placement starts for `todo` (largest first) on the free memory slices, or None (depth-first search)."""
    if not todo:
        return []
    first, rest = todo[0], todo[1:]
    for start in first.placement_starts:
        span = set(range(start, start + first.memory_slices))
        if span & used:
            continue
        placed = _place(rest, used | span)
        if placed is not None:
            return [start, *placed]
    return None


def plan_layout(spec: str | Iterable[str], table: MigProfileTable) -> MigPlan:
    profiles = parse_layout(spec, table)
    counts = Counter(p.name for p in profiles)
    for p in table.profiles:
        if counts[p.name] > p.max_instances:
            raise LabError(f"layout does not fit {table.gpu}: {counts[p.name]} x {p.name} asked, "
                           f"the profile allows at most {p.max_instances} per card")
    media = sum(counts[p.name] for p in table.profiles if p.media_extensions)
    if media > 1:
        raise LabError(f"layout does not fit {table.gpu}: only one +me profile per card (asked {media})")
    compute = sum(p.compute_slices for p in profiles)
    if compute > COMPUTE_SLICES:
        raise LabError(f"layout does not fit {table.gpu}: {compute} compute slices asked, "
                       f"the card has {COMPUTE_SLICES}")
    memory = sum(p.memory_slices for p in profiles)
    if memory > MEMORY_SLICES:
        raise LabError(f"layout does not fit {table.gpu}: {memory} memory slices asked, "
                       f"the card has {MEMORY_SLICES}")
    # Largest first: the order NVIDIA advises creating instances in, and the search's fastest order.
    ordered = sorted(profiles, key=lambda p: (-p.memory_slices, -p.compute_slices, p.name))
    starts = _place(ordered, frozenset())
    if starts is None:
        names = " + ".join(p.name for p in ordered)
        raise LabError(f"layout does not fit {table.gpu}: no placement of {names} avoids overlapping "
                       f"memory slices (placements per profile: "
                       + "; ".join(f"{p.name} at {list(p.placement_starts)}" for p in dict.fromkeys(ordered))
                       + ")")
    return MigPlan(table.gpu, tuple(PlannedInstance(p, s) for p, s in zip(ordered, starts, strict=True)))


def operator_commands(plan: MigPlan, gpu_index: int, *, mig_enabled: bool = True,
                      has_instances: bool = False) -> list[str]:
    """The shell lines an operator runs (as root, on an idle GPU) to build `plan`; the lab never runs them.

    `-cgi` takes the profile IDs in creation order and `-C` adds the default compute instance to each,
    so every GPU instance becomes one MIG device with a `MIG-<uuid>`. The driver picks the placement;
    creating the largest instances first is what lets it find the planned one.
    """
    lines: list[str] = []
    if not mig_enabled:
        lines.append(f"sudo nvidia-smi -i {gpu_index} -mig 1  # enable MIG mode (GPU must be idle; may need a reset)")
    if has_instances:
        lines.append(f"sudo nvidia-smi mig -i {gpu_index} -dci  # destroy existing compute instances")
        lines.append(f"sudo nvidia-smi mig -i {gpu_index} -dgi  # destroy existing GPU instances")
    ids = ",".join(str(i.profile.profile_id) for i in plan.instances)
    names = ",".join(i.profile.name for i in plan.instances)
    lines.append(f"sudo nvidia-smi mig -i {gpu_index} -cgi {ids} -C  # {names}")
    lines.append("nvidia-smi -L  # the MIG-<uuid> of each slice, for CUDA_VISIBLE_DEVICES")
    return lines
