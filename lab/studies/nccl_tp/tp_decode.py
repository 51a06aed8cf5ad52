"""TP=1 vs TP=2 decode: step time, throughput and the all-reduce share of a step, per model.

Contract: `compare_tp_decode(config, work_dir) -> list[TPDecodeRow]` runs the engine's decode
(`lab.engine.parallel.bench.decode_step_times`, one engine per model and size, dummy weights of the preset)
at each tensor-parallel size of `config`. Step time and tokens/s come from the engine as it serves (CUDA
graphs where the device has them); the collectives' share of a step from a second, eager run that times them
(a graph replays its all-reduces where no timer sees them), so the share is of an eager step and says so in
`share_of`. On CPU (gloo) one eager run gives both. `tp_metrics(rows)`
turns rows into the record's metrics, the speedup of each TP size over TP=1 included (the issue's target: TP=2 at
batch 1 >= 1.6x TP=1 tokens/s for the 7B shape).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TPDecodeConfig:
    models: tuple[str, ...]  # engine presets, e.g. r1-distill-qwen-7b, deepseek-v2-lite
    tp_sizes: tuple[int, ...] = (1, 2)
    batches: tuple[int, ...] = (1,)
    decode_steps: int = 64
    prompt_len: int = 512
    engine_kwargs: dict = field(default_factory=dict)  # EngineArgs beside the model and size (device, overrides)


@dataclass(frozen=True)
class TPDecodeRow:
    model: str
    tp_size: int
    batch: int
    step_time_ms: float
    tokens_per_s: float
    all_reduce_share: float  # the collectives' time / the step's, 0..1 (all-reduces and the logits gather)
    share_of: str = "eager step"  # the step the share was measured in (graphs hide collectives from timers)


def compare_tp_decode(config: TPDecodeConfig, work_dir: Path) -> list[TPDecodeRow]:
    from lab.engine.parallel.bench import decode_step_times  # torch: only when TP decode runs

    Path(work_dir).mkdir(parents=True, exist_ok=True)
    rows = []
    for model in config.models:
        for tp in config.tp_sizes:
            args = dict(model=model, tp_size=tp, batch_sizes=list(config.batches), steps=config.decode_steps,
                        prompt_len=config.prompt_len)
            timed = decode_step_times(**args, **config.engine_kwargs)
            if any(r.cuda_graphs for r in timed):  # the served step has graphs: time collectives eagerly apart
                shares = decode_step_times(**args, time_collectives=True,
                                           **{**config.engine_kwargs, "enforce_eager": True})
            else:
                shares = decode_step_times(**args, time_collectives=True, **config.engine_kwargs)
                timed = shares  # the same eager engine: one run gives both
            for step, share in zip(timed, shares):
                rows.append(TPDecodeRow(model, tp, step.batch_size, step.step_s * 1e3, step.tokens_per_s,
                                        share.collective_share or 0.0))
    return rows


def _slug(model: str) -> str:
    return model.replace("-", "_").replace(".", "p")


def tp_metrics(rows: Sequence[TPDecodeRow]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    base = {(r.model, r.batch): r for r in rows if r.tp_size == 1}
    for r in rows:
        key = f"tp_{_slug(r.model)}_tp{r.tp_size}_b{r.batch}"
        metrics[f"{key}_step_ms"] = r.step_time_ms
        metrics[f"{key}_tokens_per_s"] = r.tokens_per_s
        metrics[f"{key}_all_reduce_share"] = r.all_reduce_share
        one = base.get((r.model, r.batch))
        if r.tp_size > 1 and one is not None:
            metrics[f"{key}_speedup_over_tp1"] = r.tokens_per_s / one.tokens_per_s
    return metrics
