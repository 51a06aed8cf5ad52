"""Communication time of one step from link bandwidths: TP all-reduce, EP dispatch/combine, PP hand-off.

Contract: every function returns seconds for one GPU, from bytes over the bottleneck link plus the
fabric's per-collective latency. A group that fits in one node (`gpus_per_node`) uses NVLink at the
card's per-direction bandwidth; a larger group is bound by its NIC bandwidth for the bytes that leave
the node. All-reduce is a ring: 2(n-1)/n of the message crosses each GPU's link. Dispatch/combine assume
uniformly random expert destinations over the EP group; DeepEP's de-duplication of cross-node copies and
DeepSeek's node-limited routing (a token reaches at most 4 nodes) would lower the inter-node bytes, so
this is the pessimistic side.
"""
from __future__ import annotations

from lab.scale.cluster.hardware import GPU, Fabric


def all_reduce_s(message_bytes: float, group: int, gpu: GPU, fabric: Fabric) -> float:
    if group <= 1:
        return 0.0
    link = gpu.nvlink_bytes_per_s_per_direction if group <= fabric.gpus_per_node else fabric.nic_bytes_per_s
    return 2 * (group - 1) / group * message_bytes / link + fabric.collective_latency_s


def all_to_all_s(bytes_out: float, group: int, gpu: GPU, fabric: Fabric) -> float:
    """`bytes_out` leave each GPU for destinations spread evenly over the `group` (itself included)."""
    if group <= 1:
        return 0.0
    in_node = min(group, fabric.gpus_per_node)
    intra = bytes_out * (in_node - 1) / group
    inter = bytes_out * (group - in_node) / group
    slowest = max(intra / gpu.nvlink_bytes_per_s_per_direction, inter / fabric.nic_bytes_per_s)
    return slowest + fabric.collective_latency_s


def point_to_point_s(message_bytes: float, gpu: GPU, fabric: Fabric, across_nodes: bool) -> float:
    link = fabric.nic_bytes_per_s if across_nodes else gpu.nvlink_bytes_per_s_per_direction
    return message_bytes / link + fabric.collective_latency_s
