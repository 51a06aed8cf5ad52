"""The child process of `lab.gpu.memory_compare`: one run under the `PYTORCH_CUDA_ALLOC_CONF` it was started with.

    python -m lab.gpu.memory_child <module:qualname> <device> [<kwargs as a JSON object>]

Contract: imports the target callable, calls it with a `MemoryTimeline` on `device` (the target marks its phases),
then prints, as its last stdout line, one JSON object: the allocator configuration it saw, whether the allocator
reports expandable segments on (null when this torch does not say), the final `MemorySnapshot` and the phase table.
It must start before anything in the process touches CUDA, which is why it is a process of its own: the caching
allocator reads its configuration once, when CUDA initialises. Errors go to stderr with a non-zero exit.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
from collections.abc import Callable

from lab.errors import LabError

ALLOC_CONF = "PYTORCH_CUDA_ALLOC_CONF"


def resolve_target(target: str) -> Callable:
    """`package.module:function` (or `module:Class.method`) -> the callable."""
    module_name, sep, qualname = target.partition(":")
    if not sep or not module_name or not qualname:
        raise LabError(f"target {target!r} must read 'module:qualname'")
    obj = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise LabError(f"target {target!r} is not callable")
    return obj


def expandable_segments_reported() -> bool | None:
    import torch

    settings = torch.cuda.memory._snapshot().get("allocator_settings")  # newer torch only
    return None if settings is None or "expandable_segments" not in settings else bool(settings["expandable_segments"])


def main(argv: list[str]) -> int:
    from lab.gpu.memory import CudaMemoryProbe, snapshot
    from lab.gpu.memory_timeline import MemoryTimeline

    if len(argv) not in (2, 3):
        raise LabError("usage: python -m lab.gpu.memory_child <module:qualname> <device> [<kwargs JSON>]")
    target, device = argv[:2]
    kwargs = json.loads(argv[2]) if len(argv) == 3 else {}
    if not isinstance(kwargs, dict):
        raise LabError(f"the target's kwargs must be a JSON object, got {argv[2]!r}")
    run_fn = resolve_target(target)
    probe = CudaMemoryProbe(device)
    timeline = MemoryTimeline(probe)
    run_fn(timeline, **kwargs)
    result = {
        "config": os.environ.get(ALLOC_CONF),
        "expandable_segments": expandable_segments_reported(),
        "final": snapshot(probe.device).to_dict(),
        "phases": [dataclasses.asdict(row) for row in timeline.table()],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
