"""The torchrun entry point: one process per rank runs the sweep; rank 0 writes the result as JSON.

Contract: `python -m torch.distributed.run --nproc-per-node N -m lab.comm.worker --config C.json --out R.json`
(built by `lab.comm.launch`). Every rank reads the `SweepConfig` from C.json, joins the process group (nccl: one
GPU per rank, `LOCAL_RANK` picks it; gloo: CPU), and for each collective and size checks one operation's result
and times `iters` of them (`lab.comm.timing`); per-rank times are averaged over ranks and wrong elements summed,
with the group's own all_reduce. Then the all_reduce latency at sizes up to `latency_max_bytes`, eager and (nccl
only) from a CUDA graph. Rank 0 writes `SweepResult.to_dict()` to R.json. A failure on any rank exits non-zero
and torchrun reports it; the launcher shows the log.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from lab.comm.bandwidth import algbw_gbps, buffer_plans, busbw_gbps
from lab.comm.collectives import prepare
from lab.comm.config import SweepConfig, backend_label
from lab.comm.results import LatencyRow, SweepResult, SweepRow
from lab.comm.timing import graph_time_per_op, time_per_op

GLOO_GRAPHS = "not applicable: graphs capture GPU kernels, and gloo runs its collectives on the CPU"


def _reduce(value: float, device: torch.device, op: dist.ReduceOp) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return float(t.item())


def _device(config: SweepConfig) -> torch.device:
    if config.backend == "gloo":
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank >= torch.cuda.device_count():
        raise RuntimeError(f"rank {local_rank} has no GPU: {torch.cuda.device_count()} visible, one per process "
                           "is needed (lower --nproc or set CUDA_VISIBLE_DEVICES)")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _rows(config: SweepConfig, device: torch.device, sync) -> list[SweepRow]:
    rank, n, dtype = dist.get_rank(), dist.get_world_size(), getattr(torch, config.dtype)
    rows = []
    for collective in config.collectives:
        for plan in buffer_plans(collective, config.sizes(), n, config.elem_bytes):
            prepared = prepare(plan, rank, n, dtype, device)
            wrong, first = prepared.check()
            seconds = time_per_op(prepared.run, config.warmup_iters, config.iters, sync)
            seconds = _reduce(seconds, device, dist.ReduceOp.SUM) / n  # nccl-tests' default: the mean over ranks
            wrong = int(_reduce(wrong, device, dist.ReduceOp.SUM))
            busbw = busbw_gbps(collective, plan.size_bytes, seconds, n)
            rows.append(SweepRow(collective, plan.size_bytes, plan.input_elems, seconds * 1e6,
                                 algbw_gbps(plan.size_bytes, seconds), busbw, wrong, first))
            del prepared
    return rows


def _latency(config: SweepConfig, device: torch.device, sync) -> list[LatencyRow]:
    rank, n, dtype = dist.get_rank(), dist.get_world_size(), getattr(torch, config.dtype)
    sizes = tuple(s for s in config.sizes() if s <= config.latency_max_bytes)
    rows = []
    for plan in buffer_plans("all_reduce", sizes, n, config.elem_bytes):
        prepared = prepare(plan, rank, n, dtype, device)
        eager = time_per_op(prepared.run, config.warmup_iters, config.iters, sync)
        graph = graph_time_per_op(prepared.run, config.graph_ops, config.graph_replays) \
            if config.backend == "nccl" else None
        eager = _reduce(eager, device, dist.ReduceOp.SUM) / n
        graph = None if graph is None else _reduce(graph, device, dist.ReduceOp.SUM) / n
        rows.append(LatencyRow(plan.size_bytes, eager * 1e6, None if graph is None else graph * 1e6))
    return rows


def run(config: SweepConfig) -> SweepResult:
    device = _device(config)
    kwargs = {"device_id": device} if config.backend == "nccl" else {}
    dist.init_process_group(config.backend, **kwargs)
    try:
        sync = torch.cuda.synchronize if config.backend == "nccl" else (lambda: None)
        rows = _rows(config, device, sync)
        latency = _latency(config, device, sync)
        name = torch.cuda.get_device_name(device) if config.backend == "nccl" else "cpu"
        versions = {"torch": torch.__version__}
        if config.backend == "nccl":
            versions["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        return SweepResult(config.backend, backend_label(config.backend, name), name, dist.get_world_size(),
                           config.dtype, tuple(rows), tuple(latency),
                           "captured" if config.backend == "nccl" else GLOO_GRAPHS,
                           {k: v for k, v in sorted(os.environ.items()) if k.startswith("NCCL_")}, versions)
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="SweepConfig as JSON")
    parser.add_argument("--out", type=Path, required=True, help="where rank 0 writes the SweepResult JSON")
    args = parser.parse_args(argv)
    config = SweepConfig.from_dict(json.loads(args.config.read_text(encoding="utf-8")))
    result = run(config)
    if int(os.environ.get("RANK", "0")) == 0:
        partial = args.out.with_name(args.out.name + ".partial")
        partial.write_text(json.dumps(result.to_dict(), indent=1), encoding="utf-8")
        partial.replace(args.out)  # the launcher never reads a half-written result
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
