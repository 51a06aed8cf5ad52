"""The GPUs and fabrics a DeepSeek-V3 deployment can run on, as their datasheets state them.

Contract: `GPU` holds one card's datasheet numbers (memory, HBM bandwidth, *dense* bf16/fp8 tensor
FLOP/s, i.e. without 2:4 sparsity, NVLink bandwidth in both directions); `CATALOG` names the SXM cards
the lab plans for. `Fabric` says how the cards of a deployment are wired: GPUs per NVLink domain (a node),
NIC bandwidth per GPU between nodes, and a per-collective latency that the caller must give (no datasheet
states it; measure it with `lab.comm`). Datasheet peaks are upper bounds: what a kernel reaches is the
layer-time source's business (`layer_time`), never folded in here.
"""
from __future__ import annotations

from dataclasses import dataclass

GB = 1e9  # datasheets count memory and bandwidth in decimal units
TB = 1e12
TFLOPS = 1e12


@dataclass(frozen=True)
class GPU:
    name: str
    memory_bytes: float
    hbm_bytes_per_s: float
    bf16_flops: float  # dense tensor-core peak
    fp8_flops: float | None  # dense tensor-core peak; None: no FP8 tensor cores
    nvlink_bytes_per_s: float  # total over all links, both directions, as datasheets quote it
    source: str

    @property
    def nvlink_bytes_per_s_per_direction(self) -> float:
        return self.nvlink_bytes_per_s / 2

    def peak_flops(self, weight_format: str) -> float:
        """Tensor peak for matmuls on weights stored as `weight_format` (FP8 weights run FP8 GEMMs)."""
        if weight_format == "fp8-block":
            if self.fp8_flops is None:
                raise ValueError(f"{self.name} has no FP8 tensor cores: FP8 weights would run as bf16 after"
                                 " dequantization; model that with weight_format='bf16' compute")
            return self.fp8_flops
        return self.bf16_flops


# NVIDIA A100 Tensor Core GPU datasheet (A100 80GB SXM): 2,039 GB/s, BF16 312 TFLOPS dense, NVLink 600 GB/s.
A100_80G = GPU("A100-80G", 80 * GB, 2.039 * TB, 312 * TFLOPS, None, 600 * GB,
               "NVIDIA A100 Tensor Core GPU datasheet, A100 80GB SXM column")
# NVIDIA H100 Tensor Core GPU datasheet (H100 SXM): 3.35 TB/s, BF16 1,979 / FP8 3,958 TFLOPS *with sparsity*,
# so half dense; NVLink 900 GB/s.
H100_SXM = GPU("H100-SXM", 80 * GB, 3.35 * TB, 989.5 * TFLOPS, 1979 * TFLOPS, 900 * GB,
               "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column (sparsity figures halved)")
# NVIDIA H200 Tensor Core GPU datasheet (H200 SXM): 141 GB HBM3e at 4.8 TB/s, the H100's tensor cores, NVLink 900 GB/s.
H200_SXM = GPU("H200", 141 * GB, 4.8 * TB, 989.5 * TFLOPS, 1979 * TFLOPS, 900 * GB,
               "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column (sparsity figures halved)")
# H800 SXM: the H100 SXM with NVLink cut to 400 GB/s (NVIDIA H800 datasheet; DeepSeek-V3 report section 3.1).
H800_SXM = GPU("H800", 80 * GB, 3.35 * TB, 989.5 * TFLOPS, 1979 * TFLOPS, 400 * GB,
               "NVIDIA H800 Tensor Core GPU datasheet, SXM column (sparsity figures halved)")

CATALOG: dict[str, GPU] = {g.name: g for g in (A100_80G, H100_SXM, H200_SXM, H800_SXM)}

# InfiniBand NDR: 400 Gb/s per port and direction (ConnectX-7; a DGX/HGX H100 node has one per GPU).
IB_NDR_400_BYTES_PER_S = 400e9 / 8
# InfiniBand HDR: 200 Gb/s per port and direction (ConnectX-6, the A100 generation's DGX).
IB_HDR_200_BYTES_PER_S = 200e9 / 8


def gpu(name: str) -> GPU:
    try:
        return CATALOG[name]
    except KeyError:
        raise ValueError(f"unknown GPU {name!r}; the catalog has {sorted(CATALOG)}") from None


@dataclass(frozen=True)
class Fabric:
    """How a deployment's GPUs talk: NVLink inside a node of `gpus_per_node`, `nic_bytes_per_s` per GPU between."""

    gpus_per_node: int
    nic_bytes_per_s: float  # per GPU, per direction
    collective_latency_s: float  # fixed cost of one collective (launch + first byte); measured, not assumed

    def __post_init__(self) -> None:
        if self.gpus_per_node < 1 or self.nic_bytes_per_s <= 0 or self.collective_latency_s < 0:
            raise ValueError(f"a fabric needs gpus_per_node >= 1, nic_bytes_per_s > 0 and a latency >= 0: {self}")
