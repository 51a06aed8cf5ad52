"""Sample host and GPU load in a background thread while an experiment runs.

Contract: `TelemetrySampler(interval_s)` used as a context manager records one `TelemetrySample`
every `interval_s` seconds (system-wide CPU utilisation and memory from psutil, per-GPU
utilisation, memory and power from NVML when present) and always at least one sample.
`TelemetryTrace.summary()` turns the samples into flat metrics with units in their names, ready
for `lab.track`. GPU metrics appear only when a GPU was sampled, so a CPU run never reports
a fake 0 % GPU utilisation.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from types import TracebackType

import psutil

from lab.gpu.nvml import GpuSample, Nvml


@dataclass(frozen=True)
class TelemetrySample:
    t_s: float  # seconds since the sampler started
    cpu_util_pct: float  # system-wide, 0..100
    mem_used_mib: float
    gpus: tuple[GpuSample, ...]


@dataclass(frozen=True)
class TelemetryTrace:
    interval_s: float
    samples: tuple[TelemetrySample, ...]

    def summary(self) -> dict[str, float]:
        cpu = [s.cpu_util_pct for s in self.samples]
        metrics = {
            "samples": float(len(self.samples)),
            "duration_s": self.samples[-1].t_s if self.samples else 0.0,
            "cpu_util_mean_pct": statistics.fmean(cpu) if cpu else 0.0,
            "cpu_util_max_pct": max(cpu, default=0.0),
            "mem_used_max_mib": max((s.mem_used_mib for s in self.samples), default=0.0),
        }
        gpu_samples = [g for s in self.samples for g in s.gpus]
        for name, values in (
            ("gpu_util_mean_pct", [g.util_pct for g in gpu_samples]),
            ("gpu_power_mean_w", [g.power_w for g in gpu_samples]),
        ):
            known = [v for v in values if v is not None]
            if known:
                metrics[name] = statistics.fmean(known)
        memory = [g.mem_used_mib for g in gpu_samples if g.mem_used_mib is not None]
        if memory:
            metrics["gpu_mem_used_max_mib"] = max(memory)
        return metrics


class TelemetrySampler:
    """Background sampler; see the module docstring."""

    def __init__(self, interval_s: float = 0.1) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self._samples: list[TelemetrySample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Nvml | None = None
        self._t0 = 0.0

    def __enter__(self) -> TelemetrySampler:
        self._nvml = Nvml.open()
        self._gpu_count = 0 if self._nvml is None else self._nvml.device_count()
        # psutil's first cpu_percent() call only starts its measurement window and returns 0.
        psutil.cpu_percent(interval=None)
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="lab-telemetry", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self._samples:
            self._samples.append(self._sample())
        if self._nvml is not None:
            self._nvml.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._samples.append(self._sample())

    def _sample(self) -> TelemetrySample:
        gpus = () if self._nvml is None else tuple(self._nvml.sample(i) for i in range(self._gpu_count))
        return TelemetrySample(
            t_s=time.perf_counter() - self._t0,
            cpu_util_pct=psutil.cpu_percent(interval=None),
            mem_used_mib=psutil.virtual_memory().used / 2**20,
            gpus=gpus,
        )

    @property
    def trace(self) -> TelemetryTrace:
        return TelemetryTrace(interval_s=self.interval_s, samples=tuple(self._samples))
