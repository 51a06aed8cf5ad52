"""Study 06, memory compression: what one model's memory goes to and what 8 bits buy, measured per model.

Contract:
- `allocator_comparison(model, engine_args, configs, run)` -> (`AllocatorComparison` | None, note): one engine
  run (`engine_run.engine_memory_run`: start-up phases, prefill, decode) per allocator configuration, each in a
  fresh process; None with the reason where there is no CUDA (the caching allocator only exists there).
- `chunk_sweep(model, engine_args, prompt_len, chunk_sizes, repeats)` -> list[ChunkPoint]: one engine whose step
  budget covers the largest chunk and whose prefill chunks run eagerly (`mixed_cuda_graphs=False`, see
  `activation`), freed after the sweep.
- `run_model(model, config)` -> `ModelRun`: the variants (`variants.measure_variants`), then the sweep.
`StudyConfig` holds the notebook's parameters, validated (`LabError` naming the field).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.errors import LabError
from lab.studies.memory.activation import ChunkPoint, measure_chunks
from lab.studies.memory.variants import (Variant, VariantResult, Workload, free_memory, measure_variants,
                                         parse_variants)


@dataclass(frozen=True)
class StudyConfig:
    models: tuple[str, ...]
    engine_args: Mapping[str, Any]  # EngineArgs fields of every engine (device, dtype, memory share, ...)
    prompt_len: int  # the long prompt of the activation sweep
    chunk_sizes: tuple[int, ...]  # step budgets to prefill it with; the largest >= prompt_len is "unchunked"
    chunk_repeats: int
    variants: tuple[Variant, ...]  # the first is the reference
    workload: Workload = field(default_factory=Workload)

    def __post_init__(self) -> None:
        if not self.models:
            raise LabError("MODELS is empty: name at least one engine preset or checkpoint")
        if self.prompt_len < 1:
            raise LabError(f"PROMPT_LEN must be >= 1, got {self.prompt_len}")
        if not self.chunk_sizes or min(self.chunk_sizes) < 1:
            raise LabError(f"CHUNK_SIZES must be positive token counts, got {list(self.chunk_sizes)}")
        if max(self.chunk_sizes) < self.prompt_len:
            raise LabError(f"CHUNK_SIZES needs one size >= PROMPT_LEN ({self.prompt_len}): the unchunked reference")
        if self.chunk_repeats < 1:
            raise LabError(f"CHUNK_REPEATS must be >= 1, got {self.chunk_repeats}")
        if self.variants and (self.variants[0].quantization or self.variants[0].kv_cache_dtype != "auto"):
            raise LabError(f"the first variant is the reference and must be plain, got {self.variants[0]}")

    @classmethod
    def from_parameters(cls, models: Sequence[str], engine_args: Mapping[str, Any], prompt_len: int,
                        chunk_sizes: Sequence[int], chunk_repeats: int, variants: Mapping[str, Mapping[str, Any]],
                        workload: Mapping[str, Any]) -> StudyConfig:
        unknown = sorted(set(workload) - set(Workload.__dataclass_fields__))
        if unknown:
            raise LabError(f"WORKLOAD has unknown fields {unknown}; allowed: {sorted(Workload.__dataclass_fields__)}")
        return cls(tuple(models), dict(engine_args), int(prompt_len), tuple(sorted(set(chunk_sizes), reverse=True)),
                   int(chunk_repeats), tuple(parse_variants(variants)) if variants else (), Workload(**workload))


@dataclass
class ModelRun:
    model: str
    chunks: list[ChunkPoint]
    variants: list[VariantResult]


def allocator_comparison(model: str, engine_args: Mapping[str, Any], configs: Sequence[str],
                         run: Mapping[str, Any]):
    from lab.gpu.memory_compare import compare_allocators

    device = str(engine_args.get("device", "auto"))
    if not configs:
        return None, "ALLOCATORS is empty: no comparison asked for"
    if device.startswith("cpu"):
        return None, "the engines run on the CPU: PyTorch's caching allocator (and its configurations) is CUDA's"
    try:
        import torch

        if not torch.cuda.is_available():
            return None, "no CUDA device here: PyTorch's caching allocator (and its configurations) is CUDA's"
    except ImportError:  # pragma: no cover - torch is a dependency
        return None, "torch is not installed"
    cuda = device if device.startswith("cuda:") else "cuda:0"
    kwargs = {"model": model, "engine_args": {k: v for k, v in engine_args.items() if k != "device"} | {"device": cuda},
              **run}
    return compare_allocators("lab.studies.memory.engine_run:engine_memory_run", configs, cuda, kwargs=kwargs), "ran"


def chunk_sweep(model: str, engine_args: Mapping[str, Any], prompt_len: int, chunk_sizes: Sequence[int],
                repeats: int) -> list[ChunkPoint]:
    from lab.engine.llm import LLM

    args = {**engine_args, "max_num_batched_tokens": max(chunk_sizes), "enable_chunked_prefill": True,
            "mixed_cuda_graphs": False}
    args.setdefault("max_model_len", prompt_len + 16)
    llm = LLM(model, **args)
    try:
        return measure_chunks(llm, prompt_len, list(chunk_sizes), repeats)
    finally:
        del llm
        free_memory()


def run_model(model: str, config: StudyConfig) -> ModelRun:
    # The variants first (on CUDA each in a child process), the sweep's engine in this process last: whatever
    # memory it keeps after it is dropped then takes nothing from the variants' engines.
    variants = measure_variants(model, list(config.variants), config.engine_args, config.workload) if config.variants else []
    chunks = chunk_sweep(model, config.engine_args, config.prompt_len, config.chunk_sizes, config.chunk_repeats)
    return ModelRun(model, chunks, variants)
