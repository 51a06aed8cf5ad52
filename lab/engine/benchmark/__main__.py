"""`python -m lab.engine.benchmark --presets P[,P] --out DIR [--quick]`: run the suite, write record.json.

A thin driver for GPU machines without the notebook stack; the notebook and (later) `lab bench
offline` call the same functions. The last stdout line is one JSON object of the metrics.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from lab.engine.benchmark.suite import benchmark_record, run_preset


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m lab.engine.benchmark")
    ap.add_argument("--presets", default="r1-distill-qwen-1.5b,deepseek-v2-lite")
    ap.add_argument("--batches", default="1,8,32,128,256")
    ap.add_argument("--decode-prompt-len", type=int, default=512)
    ap.add_argument("--decode-steps", type=int, default=64)
    ap.add_argument("--num-requests", type=int, default=256)
    ap.add_argument("--min-len", type=int, default=100)
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--hf-time-cap-s", type=float, default=60.0)
    ap.add_argument("--hf-batch-size", type=int, default=32)
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--no-fused-ops", action="store_true")
    ap.add_argument("--out", default=".")
    ap.add_argument("--profile", default=None, help="profile name stored in the record (e.g. gpu)")
    a = ap.parse_args()
    params = {k: v for k, v in vars(a).items() if k not in ("out", "profile")}
    engine_kwargs = dict(max_model_len=a.max_model_len, enforce_eager=a.enforce_eager, fused_ops=not a.no_fused_ops)
    results = []
    for preset in a.presets.split(","):
        r = run_preset(
            preset, [int(b) for b in a.batches.split(",")], a.decode_prompt_len, a.decode_steps, a.num_requests,
            a.min_len, a.max_len, run_hf=not a.no_hf, hf_batch_size=a.hf_batch_size, hf_time_cap_s=a.hf_time_cap_s,
            engine_kwargs=engine_kwargs,
        )
        results.append(r)
        print(json.dumps(asdict(r), default=str), flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    artifacts: tuple[str, ...] = ()
    try:
        from lab.engine.benchmark.plot import plot_roofline

        plot_roofline(results).savefig(out / "roofline.png", dpi=120)
        artifacts = ("roofline.png",)
    except ImportError:  # no matplotlib on this machine: the record alone
        pass
    record = benchmark_record(results, params, artifacts=artifacts, profile=a.profile)
    path = record.save(out / "record.json")
    print(f"record: {path}", flush=True)
    print(json.dumps(record.metrics), flush=True)


if __name__ == "__main__":
    main()
