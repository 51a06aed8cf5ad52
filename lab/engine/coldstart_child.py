"""One cold start, measured: a fresh process builds an `LLMEngine`, generates one token, prints its phases.

`lab bench coldstart` (`lab.bench.coldstart`) runs this once per measurement, so nothing is warm but what
the machine itself keeps between processes (the OS page cache, Triton's kernel cache on disk):

    python -m lab.engine.coldstart_child --engine-args '{"model": "tiny"}' --spawn-time 1718000000.25

Contract: the last stdout line is one JSON object with
- `phases`: name -> seconds, disjoint, in the order they ran: `interpreter` (the parent's `time.time()` at
  spawn, `--spawn-time`, to this module's first line: exec, the interpreter, site; absent without
  --spawn-time), `imports` (torch and the engine's modules), the constructor's own phases
  (`LLMEngine.startup_phases`: device_init, config, model_build, weight_init or weight_read +
  weight_transfer, weight_postprocess, tokenizer, kv_profile, kv_allocation, graph_capture),
  `engine_other` (the rest of the constructor), `first_token` (a short greedy request: admission to its
  one token on the host);
- `ready_s` (start to a built engine) and `total_s` (start to the first token), where start is the spawn
  time, else this module's first line; the phases sum to at most `total_s`;
- facts to read them by: `device`, `device_name`, `weight_bytes`, `num_blocks`, `decode_graph_sizes`,
  `mixed_graph_sizes` (empty when eager), `engine_args` as given.
Bad engine arguments, or an engine that fails to start, print `{"error": "..."}` and exit with status 2.
"""
import time

_START_WALL = time.time()  # before every other import, on purpose: all that follows is `imports` or later
_START = time.perf_counter()

import argparse
import json
import os
import sys

PROMPT = "The quick brown fox jumps over the lazy dog."
MAX_STEPS = 64  # a one-token request finishes in one or two steps; more means something is stuck


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.engine.coldstart_child")
    parser.add_argument("--engine-args", default="{}", help="EngineArgs fields as a JSON object")
    parser.add_argument("--spawn-time", type=float, help="the parent's time.time() just before it started us")
    parser.add_argument("--prompt", default=PROMPT)
    args = parser.parse_args(argv)
    try:
        result = measure(json.loads(args.engine_args), args.spawn_time, args.prompt)
    except (TypeError, ValueError) as exc:  # EngineArgs and the loader name the problem
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 2
    print(json.dumps(result), flush=True)
    return 0


def measure(engine_args: dict, spawn_time: float | None, prompt: str) -> dict:
    import torch

    from lab.engine.args import EngineArgs
    from lab.engine.engine import LLMEngine
    from lab.engine.sampling_params import SamplingParams

    if not isinstance(engine_args, dict):
        raise ValueError(f"--engine-args must be a JSON object, got {engine_args!r}")
    phases: dict[str, float] = {}
    if spawn_time is not None:
        phases["interpreter"] = max(_START_WALL - spawn_time, 0.0)
    imported = time.perf_counter()
    phases["imports"] = imported - _START
    args = EngineArgs(**engine_args)
    built_from = time.perf_counter()
    engine = LLMEngine(args)
    built = time.perf_counter()
    phases.update(engine.startup_phases.as_dict())
    phases["engine_other"] = max(built - built_from - engine.startup_phases.total_s, 0.0)
    engine.add_request("coldstart", prompt, SamplingParams(temperature=0.0, max_tokens=1))
    for _ in range(MAX_STEPS):
        if any(out.finished for out in engine.step()):
            break
    else:
        raise RuntimeError(f"no token after {MAX_STEPS} engine steps")
    first_token = time.perf_counter()
    phases["first_token"] = first_token - built
    offset = phases.get("interpreter", 0.0) - _START  # perf_counter -> seconds since start
    device = engine.device
    return {
        "phases": phases,
        "ready_s": built + offset,
        "total_s": first_token + offset,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "weight_bytes": sum(p.nbytes for p in engine.model.parameters()),
        "num_blocks": engine.num_blocks,
        "decode_graph_sizes": list(engine.graphs.buckets) if engine.graphs is not None else [],
        "mixed_graph_sizes": list(engine.mixed_graphs.buckets) if engine.mixed_graphs is not None else [],
        "engine_args": engine_args,
    }


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown: freeing the GPU's memory and graphs measures nothing
