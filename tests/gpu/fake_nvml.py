"""A fake NVML module for the MIG inventory tests: A100-80GB and H100-80GB cards with MIG layouts.

Contract: `FakeNvml(gpus)` answers the pynvml getters `lab.gpu.mig` calls, with pynvml's names, and
logs every call in `calls`. It has no setters, so a write (nvmlDeviceSetMigMode,
nvmlDeviceCreateGpuInstance, ...) fails with AttributeError. Each test builds its own instance and
passes it in: nothing is patched into `pynvml` or any module global.

The layouts are written from NVIDIA's documented profile tables and `nvidia-smi mig -lgipp` placements
(`lab.gpu.mig_profiles`), shaped like NVML's answers; they are not recordings of a real card. Memory
sizes are the nominal GB of the profile name, GI/CI ids and UUIDs are made up (deterministic).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from lab.gpu.mig_profiles import MigProfile, profile_table

NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6

# pynvml's NVML_GPU_INSTANCE_PROFILE_* enum index -> GI profile ID on A100/H100 (nvidia-smi -lgip IDs).
_ENUM_TO_PROFILE_ID = {0: 19, 7: 20, 9: 15, 1: 14, 2: 9, 3: 5, 4: 0}

LAYOUTS: dict[str, tuple[tuple[str, int], ...]] = {  # (profile shorthand, placement start) in creation order
    "off": (),
    "7x1g": tuple(("1g", start) for start in range(7)),
    "3x2g+1x1g": (("2g", 0), ("2g", 2), ("2g", 4), ("1g", 6)),
    "2x3g": (("3g", 0), ("3g", 4)),
}
CARDS = {  # GPU model key -> (NVML device name, memory MiB)
    "A100-80GB": ("NVIDIA A100-SXM4-80GB", 81920),
    "H100-80GB": ("NVIDIA H100 80GB HBM3", 81559),
}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


@dataclass
class FakeGpu:
    model: str  # a key of CARDS, or "L4" for a card without MIG
    layout: str = "off"
    mig_pending: bool | None = None  # None: same as current
    instances: list[tuple[MigProfile, int]] = field(init=False)

    def __post_init__(self) -> None:
        table = profile_table(self.model) if self.model in CARDS else None
        self.instances = [] if table is None else [(table.profile(p), s) for p, s in LAYOUTS[self.layout]]

    @property
    def mig_capable(self) -> bool:
        return self.model in CARDS

    @property
    def mig_current(self) -> bool:
        return self.layout != "off"


def fake_uuid(*parts: object) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, "/".join(map(str, parts))))


class FakeNvml:
    """Module-like object: the subset of pynvml the MIG inventory reads (see module docstring)."""

    NVMLError = NVMLError
    NVML_DEVICE_MIG_DISABLE = 0
    NVML_DEVICE_MIG_ENABLE = 1
    NVML_GPU_INSTANCE_PROFILE_COUNT = 0x12

    def __init__(self, gpus: list[FakeGpu], deny: frozenset[str] = frozenset()) -> None:
        self.gpus = gpus
        self.deny = deny  # function names that answer NVML_ERROR_NO_PERMISSION
        self.calls: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("nvml"):
            object.__getattribute__(self, "calls").append(name)
            if name in object.__getattribute__(self, "deny"):
                def refuse(*_args: Any) -> Any:
                    raise NVMLError(NVML_ERROR_NO_PERMISSION)
                return refuse
        return object.__getattribute__(self, name)

    # -- physical GPUs; a handle is ("gpu", index)
    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> tuple:
        if not 0 <= index < len(self.gpus):
            raise NVMLError(2)  # NVML_ERROR_INVALID_ARGUMENT
        return ("gpu", index)

    def _gpu(self, handle: tuple) -> FakeGpu:
        return self.gpus[handle[1]]

    def nvmlDeviceGetName(self, handle: tuple) -> bytes:
        gpu = self._gpu(handle)
        name = CARDS[gpu.model][0] if gpu.mig_capable else "NVIDIA L4"
        if handle[0] == "mig":
            name += f" MIG {gpu.instances[handle[2]][0].name}"
        return name.encode()  # old pynvml returns bytes; the reader must decode

    def nvmlDeviceGetUUID(self, handle: tuple) -> str:
        if handle[0] == "mig":
            return "MIG-" + fake_uuid("gpu", handle[1], "mig", handle[2])
        return "GPU-" + fake_uuid("gpu", handle[1])

    def nvmlDeviceGetMemoryInfo(self, handle: tuple) -> SimpleNamespace:
        gpu = self._gpu(handle)
        mib = CARDS[gpu.model][1] if gpu.mig_capable else 23034
        return SimpleNamespace(total=mib * 2**20, used=0, free=mib * 2**20)

    def nvmlDeviceGetMigMode(self, handle: tuple) -> list[int]:
        gpu = self._gpu(handle)
        if not gpu.mig_capable:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        pending = gpu.mig_current if gpu.mig_pending is None else gpu.mig_pending
        return [int(gpu.mig_current), int(pending)]

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: tuple, profile: int) -> SimpleNamespace:
        gpu = self._gpu(handle)
        if not gpu.mig_capable or profile not in _ENUM_TO_PROFILE_ID:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        p = profile_table(gpu.model).by_id(_ENUM_TO_PROFILE_ID[profile])
        return SimpleNamespace(id=p.profile_id, sliceCount=p.compute_slices, instanceCount=p.max_instances,
                               multiprocessorCount=p.sm_count, copyEngineCount=p.copy_engines,
                               memorySizeMB=_memory_mb(p), name=f"MIG {p.name}".encode())

    # -- MIG devices; a handle is ("mig", gpu index, MIG device index)
    def nvmlDeviceGetMaxMigDeviceCount(self, handle: tuple) -> int:
        return 7 if self._gpu(handle).mig_capable else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: tuple, index: int) -> tuple:
        if index >= len(self._gpu(handle).instances):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return ("mig", handle[1], index)

    def nvmlDeviceGetAttributes(self, mig: tuple) -> SimpleNamespace:
        p, _ = self._gpu(mig).instances[mig[2]]
        return SimpleNamespace(multiprocessorCount=p.sm_count, sharedCopyEngineCount=p.copy_engines,
                               sharedDecoderCount=0, sharedEncoderCount=0, sharedJpegCount=0, sharedOfaCount=0,
                               gpuInstanceSliceCount=p.compute_slices, computeInstanceSliceCount=p.compute_slices,
                               memorySizeMB=_memory_mb(p))

    def nvmlDeviceGetGpuInstanceId(self, mig: tuple) -> int:
        return 1 + mig[2]  # made up: GI ids in creation order

    def nvmlDeviceGetComputeInstanceId(self, mig: tuple) -> int:
        return 0  # `-C` creates one full-size compute instance per GI, id 0

    def nvmlDeviceGetGpuInstanceById(self, handle: tuple, gi_id: int) -> tuple:
        if not 1 <= gi_id <= len(self._gpu(handle).instances):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return ("gi", handle[1], gi_id - 1)

    def nvmlGpuInstanceGetInfo(self, gi: tuple) -> SimpleNamespace:
        p, start = self._gpu(gi).instances[gi[2]]
        return SimpleNamespace(device=("gpu", gi[1]), id=gi[2] + 1, profileId=p.profile_id,
                               placement=SimpleNamespace(start=start, size=p.memory_slices))


def _memory_mb(p: MigProfile) -> int:
    return int(p.name.split(".")[1].removesuffix("+me").removesuffix("gb")) * 1024


READ_ONLY_CALLS = frozenset(name for name in vars(FakeNvml) if name.startswith("nvml"))
