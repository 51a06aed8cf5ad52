"""One replica per MIG slice: a service replica's `mig:` field resolved against this machine's MIG devices.

Contract: `select_slices(selector, inventory, path) -> tuple[MigSlice, ...]` in NVML order (GPU index, then MIG
device index). `selector` is "all" (every MIG device of every GPU), a profile name ("1g.10gb", "3g.40gb": a MIG
device matches by its compute-instance or its GPU-instance profile), or a list of MIG device UUIDs ("MIG-...",
each must exist). `inventory` is `lab.gpu.mig.read_mig_inventory`'s answer (a fake NVML's in tests). Nothing
matching, an unknown UUID or a malformed selector is a `LabError` that names `path`, says what the machine has,
and points at `lab mig show` / `lab mig plan` (the lab never partitions a card itself).
`slice_env(slice)` is what the replica's process gets: CUDA_VISIBLE_DEVICES=<uuid>, so the slice is its only
device (cuda:0), and LAB_MIG_PROFILE / LAB_MIG_GPU, so logs and records can say which slice served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lab.errors import LabError
from lab.gpu.mig import GpuMig


@dataclass(frozen=True)
class MigSlice:
    gpu_index: int
    profile: str  # the compute instance's profile ("1g.10gb"; "1c.3g.40gb" for a CI smaller than its GI)
    uuid: str  # "MIG-..."


def _slices(inventory: Sequence[GpuMig]) -> list[tuple[MigSlice, str]]:
    """Every MIG device with its GPU instance's profile, in NVML order."""
    found = []
    for gpu in inventory:
        for gi in gpu.gpu_instances:
            for ci in gi.compute_instances:
                found.append((ci.mig_device_index, MigSlice(gpu.index, ci.profile, ci.uuid), gi.profile))
    found.sort(key=lambda item: (item[1].gpu_index, item[0]))
    return [(s, gi_profile) for _, s, gi_profile in found]


def _what_there_is(inventory: Sequence[GpuMig], slices: list[tuple[MigSlice, str]]) -> str:
    if not inventory:
        return "NVML sees no GPU here"
    if not slices:
        return "MIG is off or unpartitioned on every GPU (`lab mig plan LAYOUT` prints the nvidia-smi commands)"
    profiles = sorted({s.profile for s, _ in slices})
    return f"this machine has {len(slices)} MIG device(s): {', '.join(profiles)} (`lab mig show` lists them)"


def select_slices(selector: object, inventory: Sequence[GpuMig], path: str) -> tuple[MigSlice, ...]:
    slices = _slices(inventory)
    if isinstance(selector, list):
        if not selector or not all(isinstance(u, str) for u in selector):
            raise LabError(f"{path}: expected 'all', a MIG profile name or a list of MIG device UUIDs, got {selector!r}")
        by_uuid = {s.uuid: s for s, _ in slices}
        unknown = [u for u in selector if u not in by_uuid]
        if unknown:
            raise LabError(f"{path}: no MIG device {', '.join(unknown)}; {_what_there_is(inventory, slices)}")
        if len(set(selector)) != len(selector):
            raise LabError(f"{path}: a MIG device is listed twice: two replicas cannot share one slice")
        return tuple(by_uuid[u] for u in selector)
    if not isinstance(selector, str) or not selector:
        raise LabError(f"{path}: expected 'all', a MIG profile name or a list of MIG device UUIDs, got {selector!r}")
    chosen = [s for s, gi_profile in slices if selector in ("all", s.profile, gi_profile)]
    if not chosen:
        wanted = "" if selector == "all" else f" of profile {selector!r}"
        raise LabError(f"{path}: found no MIG device{wanted}; {_what_there_is(inventory, slices)}")
    return tuple(chosen)


def slice_env(mig_slice: MigSlice) -> dict[str, str]:
    return {"CUDA_VISIBLE_DEVICES": mig_slice.uuid, "LAB_MIG_PROFILE": mig_slice.profile,
            "LAB_MIG_GPU": str(mig_slice.gpu_index)}
