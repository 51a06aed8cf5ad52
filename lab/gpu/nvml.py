"""Guarded access to NVML (the `nvidia-ml-py` package, imported as `pynvml`).

Contract: `Nvml.open()` returns None when NVML cannot start (no driver, no library, no GPU); an
open session answers every query, turning any NVML error into None / an empty value, because
telemetry must never be the reason an experiment fails. Close sessions with `close()` or use
`nvml_session()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GpuInfo:
    """Static facts about one physical GPU."""

    index: int
    name: str
    memory_total_mib: float | None
    mig_enabled: bool | None  # None: the card does not support MIG or NVML did not say
    mig_devices: int  # MIG instances currently created on this card


@dataclass(frozen=True)
class GpuSample:
    """One reading of one GPU; None where NVML gave no answer."""

    index: int
    util_pct: float | None
    mem_used_mib: float | None
    power_w: float | None


def _text(value: Any) -> str:
    # Older pynvml versions return bytes, newer ones str.
    return value.decode() if isinstance(value, bytes) else str(value)


class Nvml:
    """An initialised NVML session (see module docstring)."""

    def __init__(self, module: Any) -> None:
        self._nvml = module

    @classmethod
    def open(cls) -> Nvml | None:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ImportError...
            return None
        return cls(pynvml)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._nvml, name)(*args)
        except Exception:  # noqa: BLE001 - any NVML failure means "unknown"
            return None

    def device_count(self) -> int:
        return int(self._call("nvmlDeviceGetCount") or 0)

    def driver_version(self) -> str | None:
        version = self._call("nvmlSystemGetDriverVersion")
        return None if version is None else _text(version)

    def cuda_driver_version(self) -> int | None:
        return self._call("nvmlSystemGetCudaDriverVersion_v2")

    def _handle(self, index: int) -> Any:
        return self._call("nvmlDeviceGetHandleByIndex", index)

    def gpu(self, index: int) -> GpuInfo:
        handle = self._handle(index)
        name = self._call("nvmlDeviceGetName", handle)
        memory = self._call("nvmlDeviceGetMemoryInfo", handle)
        mig_mode = self._call("nvmlDeviceGetMigMode", handle)  # (current, pending) or None
        mig_enabled = None if mig_mode is None else bool(mig_mode[0])
        return GpuInfo(
            index=index,
            name="unknown" if name is None else _text(name),
            memory_total_mib=None if memory is None else memory.total / 2**20,
            mig_enabled=mig_enabled,
            mig_devices=self._mig_device_count(handle) if mig_enabled else 0,
        )

    def _mig_device_count(self, handle: Any) -> int:
        slots = self._call("nvmlDeviceGetMaxMigDeviceCount", handle) or 0
        present = (self._call("nvmlDeviceGetMigDeviceHandleByIndex", handle, i) for i in range(slots))
        return sum(1 for mig in present if mig is not None)

    def gpus(self) -> tuple[GpuInfo, ...]:
        return tuple(self.gpu(i) for i in range(self.device_count()))

    def sample(self, index: int) -> GpuSample:
        handle = self._handle(index)
        util = self._call("nvmlDeviceGetUtilizationRates", handle)
        memory = self._call("nvmlDeviceGetMemoryInfo", handle)
        power_mw = self._call("nvmlDeviceGetPowerUsage", handle)
        return GpuSample(
            index=index,
            util_pct=None if util is None else float(util.gpu),
            mem_used_mib=None if memory is None else memory.used / 2**20,
            power_w=None if power_mw is None else power_mw / 1000.0,
        )


@contextlib.contextmanager
def nvml_session() -> Iterator[Nvml | None]:
    """An NVML session for a `with` block, or None when NVML is unavailable."""
    session = Nvml.open()
    try:
        yield session
    finally:
        if session is not None:
            session.close()


def gpu_count() -> int:
    """Number of NVIDIA GPUs NVML sees (0 without a driver)."""
    with nvml_session() as nvml:
        return 0 if nvml is None else nvml.device_count()


def cuda_gpu_present() -> bool:
    """True when a CUDA GPU is usable: NVML sees one, or torch says CUDA is available.

    NVML is asked first because it answers in milliseconds without importing torch.
    """
    if gpu_count() > 0:
        return True
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
