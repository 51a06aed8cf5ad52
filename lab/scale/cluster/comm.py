"""Communication time of one step from link bandwidths: TP all-reduce, EP dispatch/combine, PP hand-off.

Contract: every function returns seconds for one GPU, from bytes over the bottleneck link plus the
fabric's per-collective latency. A group that fits in one node (`gpus_per_node`) uses NVLink at the
card's per-direction bandwidth; a larger group is bound by its NIC bandwidth for the bytes that leave
the node. All-reduce is a ring: 2(n-1)/n of the message crosses each GPU's link. Dispatch/combine assume
uniformly random expert destinations over the EP group. By default every (token, expert) copy that leaves
the node crosses the NIC (as DeepEP's low-latency decode kernels send them); `all_to_all_s(...,
inter_node_bytes=...)` takes the NIC's bytes from the caller instead, e.g. a token sent once per destination
node and forwarded over NVLink there (DeepEP's normal kernels, for prefill: each RDMA token carries the
bitmask of the node's GPUs it is for), whose expected count `distinct_remote_nodes` gives. DeepSeek's
node-limited routing (a token reaches at most 4 nodes) is not modelled: the pessimistic side.
"""
from __future__ import annotations

from lab.scale.cluster.hardware import GPU, Fabric


def all_reduce_s(message_bytes: float, group: int, gpu: GPU, fabric: Fabric) -> float:
    if group <= 1:
        return 0.0
    link = gpu.nvlink_bytes_per_s_per_direction if group <= fabric.gpus_per_node else fabric.nic_bytes_per_s
    return 2 * (group - 1) / group * message_bytes / link + fabric.collective_latency_s


def all_to_all_s(bytes_out: float, group: int, gpu: GPU, fabric: Fabric,
                 inter_node_bytes: float | None = None) -> float:
    """`bytes_out` leave each GPU for destinations spread evenly over the `group` (itself included); of them the
    share outside the node crosses the NIC, or `inter_node_bytes` when the caller de-duplicates per node."""
    if group <= 1:
        return 0.0
    in_node = min(group, fabric.gpus_per_node)
    intra = bytes_out * (in_node - 1) / group
    inter = bytes_out * (group - in_node) / group if inter_node_bytes is None else inter_node_bytes
    slowest = max(intra / gpu.nvlink_bytes_per_s_per_direction, inter / fabric.nic_bytes_per_s)
    return slowest + fabric.collective_latency_s


def distinct_remote_nodes(destinations: int, group: int, gpus_per_node: int) -> float:
    """Expected other nodes a token reaches when its `destinations` GPUs are drawn uniformly (with replacement)
    over a `group` spread over nodes of `gpus_per_node`: (N - 1)(1 - (1 - 1/N)^destinations), N nodes."""
    nodes = max(1, group // gpus_per_node) if group > gpus_per_node else 1
    return (nodes - 1) * (1 - (1 - 1 / nodes) ** destinations)


def point_to_point_s(message_bytes: float, gpu: GPU, fabric: Fabric, across_nodes: bool) -> float:
    link = fabric.nic_bytes_per_s if across_nodes else gpu.nvlink_bytes_per_s_per_direction
    return message_bytes / link + fabric.collective_latency_s
