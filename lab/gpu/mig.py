"""Read-only MIG inventory through NVML: mode, GPU instances, compute instances and MIG device UUIDs.

Contract: `read_mig_inventory(nvml)` takes an initialised NVML module (pynvml, or a fake with the same
function names) and returns one `GpuMig` per physical GPU. It only calls NVML getters: it never sets
MIG mode and never creates or destroys instances; `lab.gpu.mig_plan` prints the commands an operator
would run for that. `mig_inventory()` imports pynvml lazily and returns () when NVML cannot start.
A GPU without MIG support has `mig_capable=False`; a query NVML refuses (old driver, no permission)
leaves its field None rather than failing the inventory, as `lab.gpu.nvml` does for telemetry.

Each compute instance is one MIG device: a process sees it alone when CUDA_VISIBLE_DEVICES holds its
`uuid` ("MIG-..."), which is what a replica per slice is started with.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from lab.gpu.nvml import _text


@dataclass(frozen=True)
class ComputeInstance:
    """One MIG device: a compute instance inside a GPU instance."""

    id: int
    profile: str  # "3g.40gb", or "1c.3g.40gb" when it holds fewer compute slices than its GI
    compute_slices: int | None
    sm_count: int | None
    uuid: str  # "MIG-..." for CUDA_VISIBLE_DEVICES
    mig_device_index: int  # NVML's index of this MIG device on its parent GPU


@dataclass(frozen=True)
class GpuInstance:
    id: int
    profile: str  # "3g.40gb"
    profile_id: int | None  # NVML GI profile ID (what `nvidia-smi mig -cgi` takes)
    placement_start: int | None  # first memory slice
    memory_slices: int | None
    compute_slices: int | None
    memory_mib: int | None
    copy_engines: int | None
    compute_instances: tuple[ComputeInstance, ...]


@dataclass(frozen=True)
class GpuMig:
    index: int
    name: str
    uuid: str
    memory_total_mib: int
    mig_capable: bool
    mig_current: bool  # MIG mode now
    mig_pending: bool  # MIG mode after the next GPU reset
    gpu_instances: tuple[GpuInstance, ...]

    @property
    def mode_change_pending(self) -> bool:
        return self.mig_capable and self.mig_current != self.mig_pending

    def device_uuids(self) -> tuple[str, ...]:
        """MIG device UUIDs in NVML order (empty when MIG is off)."""
        cis = [ci for gi in self.gpu_instances for ci in gi.compute_instances]
        return tuple(ci.uuid for ci in sorted(cis, key=lambda ci: ci.mig_device_index))


class _Reader:
    """NVML getters that turn NVMLError into None (a refused query is unknown, not fatal)."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml

    def get(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self.nvml, name)(*args)
        except self.nvml.NVMLError:
            return None


def _gi_profile_names(reader: _Reader, handle: Any) -> dict[int, str]:
    """GI profile ID -> name ("3g.40gb") from the card's own profile table."""
    names: dict[int, str] = {}
    for index in range(int(getattr(reader.nvml, "NVML_GPU_INSTANCE_PROFILE_COUNT", 0))):
        info = reader.get("nvmlDeviceGetGpuInstanceProfileInfo", handle, index)
        if info is not None and getattr(info, "name", None):
            names[int(info.id)] = _text(info.name).removeprefix("MIG ").strip()
    return names


def _field(struct: Any, name: str) -> int | None:
    return None if struct is None else int(getattr(struct, name))


def _profile_from_device_name(name: str) -> str | None:
    # MIG device names end with the profile: "NVIDIA H100 80GB HBM3 MIG 1g.10gb".
    head, sep, tail = name.rpartition("MIG ")
    return tail.strip() if sep else None


def _mig_device(reader: _Reader, parent: Any, index: int,
                gi_names: dict[int, str]) -> tuple[GpuInstance, ComputeInstance] | None:
    mig = reader.get("nvmlDeviceGetMigDeviceHandleByIndex", parent, index)
    if mig is None:  # an empty slot: NVML numbers MIG devices sparsely up to the max count
        return None
    attrs = reader.get("nvmlDeviceGetAttributes", mig)
    gi_id = reader.get("nvmlDeviceGetGpuInstanceId", mig)
    ci_id = reader.get("nvmlDeviceGetComputeInstanceId", mig)
    if gi_id is None or ci_id is None:  # cannot place the device in the GI/CI tree; keep its UUID alone
        gi_id, ci_id = -1 - index, 0
    gi_info = None
    gi = reader.get("nvmlDeviceGetGpuInstanceById", parent, gi_id)
    if gi is not None:
        gi_info = reader.get("nvmlGpuInstanceGetInfo", gi)
    profile_id = None if gi_info is None else int(gi_info.profileId)
    name = _text(reader.get("nvmlDeviceGetName", mig) or "")
    gi_profile = gi_names.get(profile_id) if profile_id is not None else None
    gi_profile = gi_profile or _profile_from_device_name(name) or "unknown"
    gi_slices = _field(attrs, "gpuInstanceSliceCount")
    ci_slices = _field(attrs, "computeInstanceSliceCount")
    ci_profile = gi_profile if ci_slices == gi_slices else f"{ci_slices}c.{gi_profile}"
    ci = ComputeInstance(int(ci_id), ci_profile, ci_slices, _field(attrs, "multiprocessorCount"),
                         _text(reader.get("nvmlDeviceGetUUID", mig) or ""), index)
    gpu_instance = GpuInstance(
        id=int(gi_id), profile=gi_profile, profile_id=profile_id,
        placement_start=None if gi_info is None else int(gi_info.placement.start),
        memory_slices=None if gi_info is None else int(gi_info.placement.size),
        compute_slices=gi_slices, memory_mib=_field(attrs, "memorySizeMB"),
        copy_engines=_field(attrs, "sharedCopyEngineCount"), compute_instances=(ci,),
    )
    return gpu_instance, ci


def _gpu_instances(reader: _Reader, handle: Any) -> tuple[GpuInstance, ...]:
    gi_names = _gi_profile_names(reader, handle)
    by_gi: dict[int, GpuInstance] = {}
    for index in range(int(reader.get("nvmlDeviceGetMaxMigDeviceCount", handle) or 0)):
        found = _mig_device(reader, handle, index, gi_names)
        if found is None:
            continue
        gi, ci = found
        known = by_gi.get(gi.id)
        # Several compute instances may share one GPU instance: merge them under it.
        by_gi[gi.id] = gi if known is None else _with_ci(known, ci)
    return tuple(sorted(by_gi.values(), key=lambda gi: (gi.placement_start or 0, gi.id)))


def _with_ci(gi: GpuInstance, ci: ComputeInstance) -> GpuInstance:
    return replace(gi, compute_instances=(*gi.compute_instances, ci))


def read_gpu(nvml: Any, index: int) -> GpuMig:
    reader = _Reader(nvml)
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = reader.get("nvmlDeviceGetMemoryInfo", handle)
    mode = reader.get("nvmlDeviceGetMigMode", handle)  # [current, pending]; NOT_SUPPORTED -> None
    capable = mode is not None
    current = capable and int(mode[0]) == nvml.NVML_DEVICE_MIG_ENABLE
    return GpuMig(
        index=index,
        name=_text(reader.get("nvmlDeviceGetName", handle) or "unknown"),
        uuid=_text(reader.get("nvmlDeviceGetUUID", handle) or ""),
        memory_total_mib=0 if memory is None else int(memory.total // 2**20),
        mig_capable=capable,
        mig_current=current,
        mig_pending=capable and int(mode[1]) == nvml.NVML_DEVICE_MIG_ENABLE,
        gpu_instances=_gpu_instances(reader, handle) if current else (),
    )


def read_mig_inventory(nvml: Any) -> tuple[GpuMig, ...]:
    """MIG state of every GPU an initialised NVML module sees (see module docstring)."""
    return tuple(read_gpu(nvml, i) for i in range(int(nvml.nvmlDeviceGetCount())))


def mig_inventory() -> tuple[GpuMig, ...]:
    """The inventory of this machine, or () when NVML cannot start (no driver, no GPU, no pynvml)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - ImportError, NVMLError_LibraryNotFound, DriverNotLoaded...
        return ()
    try:
        return read_mig_inventory(pynvml)
    finally:
        pynvml.nvmlShutdown()


def format_inventory(gpus: tuple[GpuMig, ...]) -> str:
    """A short text table: one line per GPU, one indented line per MIG device."""
    lines = []
    for g in gpus:
        mode = "n/a" if not g.mig_capable else ("on" if g.mig_current else "off")
        pending = " (pending change at next reset)" if g.mode_change_pending else ""
        lines.append(f"GPU {g.index} {g.name} {g.memory_total_mib} MiB  MIG {mode}{pending}")
        for gi in g.gpu_instances:
            for ci in gi.compute_instances:
                lines.append(f"  GI {gi.id} {gi.profile} @{gi.placement_start}  CI {ci.id} {ci.profile} "
                             f"{ci.sm_count} SMs {gi.memory_mib} MiB {gi.copy_engines} CE  {ci.uuid}")
    return "\n".join(lines)
