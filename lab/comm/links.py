"""The peak of the link a collective runs over, so a sweep's bus bandwidth can be read against it (torch-free).

Contract: `link_for_device(name) -> LinkPeak | None` from a CUDA device name; None for a CPU or a card this
table does not know (the plot then draws no peak line and the target says why). Two numbers per link, both
per GPU and per direction (nccl-tests' busbw is a unidirectional figure):
- `line_rate_gbps`: what the link signals. NVLink 4 on H100 SXM and H200 SXM: 18 links, 900 GB/s both ways
  together, 450 GB/s each way (NVIDIA's H100 and H200 datasheets).
- `nccl_busbw_gbps`: what NCCL reaches on it, the figure the issue's "within 15 %" target is read against.
  NCCL's maintainer (S. Jeaugey, NVIDIA/nccl-tests issue #212, 2024-05-06): "450GB/s is the line rate. With
  the protocol overhead (~20%) NCCL can get an effective NVLink bandwidth of 370GB/s, which you can observe as
  BusBw when running non-allreduce operations, or when running with NCCL_ALGO=RING", and all_reduce with NVLink
  SHARP (NVLS, on by default where the fabric has it) reaches "a peak busBw of ~480GB/s" on 8 GPUs, where busbw
  no longer counts bytes on the wire. `nvls_allreduce_busbw_gbps_8gpu` keeps that second figure, for reading.
"""
from __future__ import annotations

from dataclasses import dataclass

NCCL_TESTS_212 = "https://github.com/NVIDIA/nccl-tests/issues/212 (S. Jeaugey, NVIDIA, 2024-05-06)"


@dataclass(frozen=True)
class LinkPeak:
    name: str
    line_rate_gbps: float  # per GPU, per direction
    nccl_busbw_gbps: float | None  # nccl-tests' achievable busbw on this link, per NCCL's maintainers
    nvls_allreduce_busbw_gbps_8gpu: float | None
    source: str


NVLINK4 = LinkPeak("NVLink 4 (H100/H200 SXM, NVSwitch)", 450.0, 370.0, 480.0,
                   "NVIDIA H100/H200 datasheets (900 GB/s NVLink, both directions); " + NCCL_TESTS_212)


def link_for_device(device_name: str) -> LinkPeak | None:
    name = device_name.upper()
    # H100 NVL / H200 NVL (NVLink bridges between pairs), PCIe cards and the H800 (8 NVLinks, not 18) have other
    # links, with no NCCL figure in this table.
    if "NVL" in name or "PCIE" in name:
        return None
    if "H100" in name and ("HBM3" in name or "SXM" in name) or "H200" in name:
        return NVLINK4
    return None
