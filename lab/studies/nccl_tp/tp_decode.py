"""TP=1 vs TP=2 decode: step time, throughput and the all-reduce share of a step, per model (not built yet).

Contract: `compare_tp_decode(config, work_dir) -> list[TPDecodeRow]` will run the engine's decode at each
tensor-parallel size of `config` and time its steps and its all-reduces; today it raises `NotImplementedError`,
because the engine has no `tensor_parallel_size` yet (it lands with issue 20's engine part). `tp_metrics(rows)`
turns rows into the record's metrics, the speedup of each TP size over TP=1 included (the issue's target: TP=2 at
batch 1 >= 1.6x TP=1 tokens/s for the 7B shape).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TPDecodeConfig:
    models: tuple[str, ...]  # engine presets, e.g. r1-distill-qwen-7b, deepseek-v2-lite
    tp_sizes: tuple[int, ...] = (1, 2)
    batches: tuple[int, ...] = (1,)
    decode_steps: int = 64
    prompt_len: int = 512


@dataclass(frozen=True)
class TPDecodeRow:
    model: str
    tp_size: int
    batch: int
    step_time_ms: float
    tokens_per_s: float
    all_reduce_share: float  # of a decode step's time, 0..1


def compare_tp_decode(config: TPDecodeConfig, work_dir: Path) -> list[TPDecodeRow]:
    raise NotImplementedError("tensor parallelism lands with the engine's tensor_parallel_size (issue 20, engine "
                              "part: `lab serve --tensor-parallel-size N`); until then keep RUN_TP = False")


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
