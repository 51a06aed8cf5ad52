"""Emulated MIG slices where MIG is off: a replica held to a profile's SMs (CUDA green contexts) and memory share.

Contract:
- `emulated_slice(token, table)` is the arithmetic, torch-free: the profile's SM count (what a green context
  gets) and its memory fraction (memory slices / 8, the share a MIG slice owns and `lab.gpu.mig_model` uses),
  which becomes the replica's `gpu_memory_utilization`. `label` is "emulated <profile>", what /v1/models,
  /metrics and every study record carry (a real slice says "MIG <profile>": `partition_label`).
- `check_emulation_possible(device, green_contexts_supported)` refuses what cannot be emulated, naming why:
  a CPU device (no emulation without CUDA), a PyTorch without green contexts (`torch.cuda.green_contexts`, 2.9+
  built with CUDA 12.8+). `check_profile_token(token)` refuses a profile no table knows, before anything starts.
- `MigEmulation(profile, mechanism)` is what the server hands its engine core; `MECHANISMS`: "green-context" (the
  default) or "mps" (`lab.gpu.mps`: the process is an MPS client whose share of the SMs is the profile's;
  `enter_mps_share` sets it before the CUDA context exists, so it needs no thread rule and hot reload works).
- `enter_green_context(token, device_index)` (torch, CUDA) runs in the engine core process before the engine
  is built: it resolves the profile against this card's table, creates a green context of the profile's SMs,
  makes it current on the calling thread (PyTorch's `set_context`: the thread's current stream becomes the
  green context's), and returns the `ActiveEmulation` whose `green_context` must stay referenced (its
  destructor destroys the context).

Where it applies: a CUDA context is current per *thread*, and NVIDIA allows a green context to be current on
one thread at a time. The lab engine's GPU work runs on the engine core process's main thread (model load,
CUDA-graph capture, every step; streams such as the graph pool's and the overlap loader's are created there,
after the context is set, so they belong to it). So `lab serve --emulate-mig` needs `--engine lab` with the
engine core process; it refuses `--engine-core thread` (load and steps on two threads), `--engine hf/hf-cb`
(transformers' worker threads) and hot reload (`--admin-key-hash`: the reload thread copies on its own thread).

What emulation cannot show (say it beside every emulated number): MIG also splits the L2 cache and the memory
bandwidth (each slice owns memory slices / 8 of the memory controllers and L2) and isolates faults and the
copy engines. A green context restricts SMs only: emulated slices on one card share all of HBM bandwidth and
the whole L2, so a memory-bound decode on an emulated 1g slice runs faster than on a real 1g slice, and a
neighbour's memory traffic slows it where real MIG would not. The memory cap is the engine's own budget
(`gpu_memory_utilization`), not a hardware fence: nothing stops another process from taking the memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lab.errors import LabError
from lab.gpu.mig_profiles import TABLES, MigProfileTable, table_for_device

CANNOT_SHOW = ("emulated slices share the card's L2 cache and HBM bandwidth (MIG splits both by memory slices) "
               "and are not fault-isolated (MPS clients share one server: a fatal fault in one reaches the others); a "
               "green context or an MPS share restricts SMs only and the memory cap is the engine's own budget, not a "
               "hardware fence")


@dataclass(frozen=True)
class EmulatedSlice:
    profile: str  # the resolved profile name, "1g.10gb"
    gpu: str  # the profile table's GPU model, "H100-80GB"
    sm_count: int  # SMs of the green context
    memory_fraction: float  # of the card's memory: the replica's gpu_memory_utilization
    mechanism: str = "green-context"  # or "mps" (`lab.gpu.mps`)

    @property
    def label(self) -> str:
        return f"emulated {self.profile}" + ("" if self.mechanism == "green-context" else f" ({self.mechanism})")


MECHANISMS = ("green-context", "mps")


@dataclass(frozen=True)
class MigEmulation:
    """What `lab serve --emulate-mig PROFILE --emulate-mig-with MECHANISM` asks the engine core for."""

    profile: str
    mechanism: str = "green-context"


def emulated_slice(token: str, table: MigProfileTable, mechanism: str = "green-context") -> EmulatedSlice:
    if mechanism not in MECHANISMS:
        raise LabError(f"--emulate-mig-with must be one of {', '.join(MECHANISMS)}, got {mechanism!r}")
    profile = table.profile(token)
    return EmulatedSlice(profile.name, table.gpu, profile.sm_count, profile.memory_share, mechanism)


def check_profile_token(token: str) -> None:
    """A profile name or shorthand ("1g.10gb", "3g") some table knows; which card it is for is checked later."""
    for table in TABLES.values():
        try:
            table.profile(token)
            return
        except LabError:
            continue
    names = sorted({name for table in TABLES.values() for name in table.names()})
    raise LabError(f"--emulate-mig: unknown MIG profile {token!r}; valid: a shorthand such as 1g, 2g, 3g, 4g, 7g "
                   f"(resolved on the card) or one of {', '.join(names)}")


def check_emulation_possible(device: str, cuda_available: bool, green_contexts_supported: bool) -> None:
    """`device` is `lab serve --device` ("auto", "cpu", "cuda[:N]")."""
    if device == "cpu" or (device == "auto" and not cuda_available):
        raise LabError("--emulate-mig needs a CUDA device: there is no emulation without CUDA (green contexts "
                       "partition a GPU's SMs); on a CPU serve without it (a 'cpu stand-in, no partition')")
    if device.startswith("cuda") and not cuda_available:
        raise LabError(f"--emulate-mig with --device {device}: no CUDA device is available")
    if not green_contexts_supported:
        raise LabError("--emulate-mig needs CUDA green contexts, which this PyTorch lacks "
                       "(torch.cuda.green_contexts.SUPPORTED is False: PyTorch 2.9+ built with CUDA 12.8+ and a "
                       "driver >= 12.8 are required)")


def partition_label(emulated: str | None, environ: dict[str, str]) -> str | None:
    """What serves: "emulated 1g.10gb", "MIG 1g.10gb" (a replica started on a MIG device), or None (a whole device)."""
    if emulated:
        return emulated
    profile = environ.get("LAB_MIG_PROFILE")  # lab.service.mig_slices.slice_env sets it
    if profile:
        return f"MIG {profile}"
    if environ.get("CUDA_VISIBLE_DEVICES", "").startswith("MIG-"):
        return "MIG (profile unknown)"
    return None


@dataclass
class ActiveEmulation:
    slice: EmulatedSlice
    green_context: Any  # torch.cuda.green_contexts.GreenContext: keep it alive while the engine runs (None: MPS)


def enter_green_context(token: str, device_index: int) -> ActiveEmulation:
    """Make a green context of the profile's SMs current on this thread (call before any engine CUDA work)."""
    import torch
    from torch.cuda import green_contexts

    if not green_contexts.SUPPORTED:
        check_emulation_possible("cuda", True, False)
    props = torch.cuda.get_device_properties(device_index)
    table = table_for_device(props.name, props.total_memory / 2**20)
    emulated = emulated_slice(token, table)
    if emulated.sm_count > props.multi_processor_count:
        raise LabError(f"--emulate-mig {token}: {emulated.profile} has {emulated.sm_count} SMs, more than "
                       f"{props.name}'s {props.multi_processor_count}")
    torch.cuda.set_device(device_index)
    torch.zeros(1, device=f"cuda:{device_index}")  # the primary context first: a green context is carved from it
    context = green_contexts.GreenContext.create(num_sms=emulated.sm_count, device_id=device_index)
    context.set_context()
    return ActiveEmulation(emulated, context)


def enter_mps_share(token: str, environ: dict[str, str], gpus=None) -> ActiveEmulation:
    """Set this process's MPS share to the profile's SMs (call before any CUDA work: the share is read when the
    CUDA context is created). The process must be a client of a running daemon (`lab.gpu.mps`). `gpus`:
    NVML's `GpuInfo`s, read when None."""
    from lab.gpu.mps import PERCENTAGE_ENV, active_thread_percentage, check_mps_client, gpu_model_before_cuda

    check_mps_client(environ)
    name, memory_mib = gpu_model_before_cuda(environ, gpus)
    table = table_for_device(name, memory_mib)
    emulated = emulated_slice(token, table, "mps")
    environ[PERCENTAGE_ENV] = str(active_thread_percentage(emulated.sm_count, table.full_sm_count))
    return ActiveEmulation(emulated, None)
