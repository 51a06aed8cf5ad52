"""One variant measured in a process of its own: `python -m lab.studies.memory.variant_child <spec JSON> <out dir>`.

Why a process: on CUDA an engine's memory (its caching-allocator segments, its graphs' private pools) is not all
given back when the engine is dropped, so a second engine built in the same process sizes its KV cache from less
than the first had, and can find no room at all (seen on an H100: -3.65 GiB for the second of four 1.5B engines
at 0.5 of the card). A fresh process per variant starts every one from the same free memory.

Contract: the spec is {"model", "variant": {name, quantization, kv_cache_dtype}, "engine_args", "workload",
"bandwidth"}; the child writes `result.pt` (the `VariantResult`'s fields, tokens and CPU logits included, via
`torch.save`) into the out dir and exits 0; on failure the traceback goes to stderr and it exits non-zero.
`run_in_child(...)` is the parent's side: it runs the child, raises `LabError` with the child's stderr tail when
it fails, and returns the `VariantResult`.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lab.errors import LabError

STDERR_TAIL_CHARS = 4000


def main(argv: list[str]) -> int:
    import torch

    from lab.studies.memory.variants import Variant, Workload, measure_variant

    spec, out = json.loads(argv[0]), Path(argv[1])
    result = measure_variant(spec["model"], Variant(**spec["variant"]), spec["engine_args"],
                             Workload(**spec["workload"]), spec.get("bandwidth"))
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name != "variant"}
    torch.save(fields, out / "result.pt")
    return 0


def run_in_child(model: str, variant, engine_args: Mapping[str, Any], workload, bandwidth: float | None,
                 timeout_s: float = 1800.0):
    import torch

    from lab.studies.memory.variants import VariantResult

    spec = {"model": model, "variant": dataclasses.asdict(variant), "engine_args": dict(engine_args),
            "workload": dataclasses.asdict(workload), "bandwidth": bandwidth}
    with tempfile.TemporaryDirectory(prefix="lab-variant-") as tmp:
        try:
            done = subprocess.run([sys.executable, "-m", "lab.studies.memory.variant_child", json.dumps(spec), tmp],
                                  capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise LabError(f"variant {variant.name!r} of {model} took longer than {timeout_s} s") from None
        if done.returncode != 0:
            raise LabError(f"variant {variant.name!r} of {model} failed (exit {done.returncode}):\n"
                           f"{done.stderr[-STDERR_TAIL_CHARS:]}")
        fields = torch.load(Path(tmp) / "result.pt", weights_only=False)
    return VariantResult(variant=variant, **fields)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
