"""How a layout's slices are served: real MIG devices, emulated slices on one card, or CPU stand-ins.

Contract: `layout_profiles(layout, table)` checks a layout ("1x7g", "7x1g", "3x2g+1x1g", "2x3g") against the card's
profile table (`lab.gpu.mig_plan.plan_layout`: counts, compute slices, placements) and returns its profiles, largest
first. `slice_replicas(layout, table, mode, base, inventory)` gives one `SliceReplica` per slice: its name, label
and the `ReplicaProcess` that serves it (a `lab serve` command from `base`, a `lab.studies.launcher.ReplicaSpec`):
- "mig": each slice is a MIG device of this machine (`lab.service.mig_slices`: CUDA_VISIBLE_DEVICES=MIG-<uuid>);
  the machine's MIG devices must hold the layout's profiles, else `LabError` naming what is there (the lab never
  partitions a card: `lab mig plan LAYOUT` prints the commands);
- "emulated": every slice on the one visible card with `lab serve --emulate-mig <profile>` (green context SMs,
  memory share; `lab.gpu.mig_emulation` says what that cannot show);
- "emulated-mps": the same with `--emulate-mig-with mps`: each replica an MPS client of the daemon whose
  environment `mps_env` gives (`lab.gpu.mps`; the study starts that daemon), its share of the SMs the profile's;
- "cpu": plain CPU replicas, labelled "cpu stand-in, no partition": the road, no partition at all.
`FULL_CARD` is the calibration replica's label: the whole device, no partition.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lab.errors import LabError
from lab.gpu.mig import GpuMig
from lab.gpu.mig_plan import plan_layout
from lab.gpu.mig_profiles import MigProfile, MigProfileTable
from lab.service.mig_slices import select_slices, slice_env
from lab.service.spec import ReplicaProcess
from lab.studies.launcher import ReplicaSpec

MODES = ("mig", "emulated", "emulated-mps", "cpu")
CPU_LABEL = "cpu stand-in, no partition"
FULL_CARD = "full card, no partition"


@dataclass(frozen=True)
class SliceReplica:
    name: str  # "s0-3g.40gb": a process and log name
    profile: MigProfile  # what the model predicts for (a CPU stand-in keeps its profile's shares for the model)
    label: str  # "MIG 3g.40gb", "emulated 3g.40gb", CPU_LABEL
    process: ReplicaProcess


def layout_profiles(layout: str, table: MigProfileTable) -> tuple[MigProfile, ...]:
    return tuple(instance.profile for instance in plan_layout(layout, table).instances)


def slice_replicas(layout: str, table: MigProfileTable, mode: str, base: ReplicaSpec,
                   inventory: Sequence[GpuMig] = (), mps_env: Mapping[str, str] | None = None) -> tuple[SliceReplica, ...]:
    if mode not in MODES:
        raise LabError(f"mode must be one of {MODES}, got {mode!r}")
    profiles = layout_profiles(layout, table)
    if mode == "mig":
        return _mig_replicas(layout, profiles, base, inventory)
    if mode == "emulated-mps" and not mps_env:
        raise LabError("mode emulated-mps needs the environment of a running MPS daemon (lab.gpu.mps.MpsDaemon)")
    replicas = []
    for i, profile in enumerate(profiles):
        name, env = f"s{i}-{profile.name}", {}
        if mode == "emulated":
            spec = dataclasses.replace(base, extra_flags=(*base.extra_flags, "--emulate-mig", profile.name))
            label = f"emulated {profile.name}"
        elif mode == "emulated-mps":
            spec = dataclasses.replace(base, extra_flags=(*base.extra_flags, "--emulate-mig", profile.name,
                                                          "--emulate-mig-with", "mps"))
            label, env = f"emulated {profile.name} (mps)", dict(mps_env)
        else:
            spec, label = base, CPU_LABEL
        replicas.append(SliceReplica(name, profile, label, ReplicaProcess(name, spec.command(), env=env)))
    return tuple(replicas)


def _mig_replicas(layout: str, profiles: tuple[MigProfile, ...], base: ReplicaSpec,
                  inventory: Sequence[GpuMig]) -> tuple[SliceReplica, ...]:
    devices = select_slices("all", inventory, f"layout {layout}")
    wanted = Counter(p.name for p in profiles)
    have = Counter(d.profile for d in devices)
    if wanted != have:
        raise LabError(f"layout {layout} needs MIG devices {dict(wanted)}; this machine has {dict(have)} "
                       f"(`lab mig plan {layout}` prints the nvidia-smi commands; the lab never partitions a card)")
    by_profile = {p.name: p for p in profiles}
    return tuple(SliceReplica(f"s{i}-{d.profile}", by_profile[d.profile], f"MIG {d.profile}",
                              ReplicaProcess(f"s{i}-{d.profile}", base.command(), env=slice_env(d)))
                 for i, d in enumerate(devices))
