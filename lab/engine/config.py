"""Frozen, validated engine knobs, named as vLLM names them.

Values derived at run time (the number of KV blocks actually allocated, the model's context
length) live on the objects that derive them, never patched back into these configs.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 256  # most requests running at once
    max_num_batched_tokens: int = 8192  # token budget of one step (prefill + decode tokens)
    enable_chunked_prefill: bool = True  # a long prompt may be split over several steps
    policy: str = "fcfs"  # "fcfs" (the plain path) or "priority" (tiers, preemption)

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}")
        if self.policy not in ("fcfs", "priority"):
            raise ValueError(f"policy must be 'fcfs' or 'priority', got {self.policy!r}")


@dataclass(frozen=True)
class CacheConfig:
    block_size: int = 16  # tokens per KV block
    gpu_memory_utilization: float = 0.90  # fraction of device memory the engine may use (CUDA)
    num_gpu_blocks: int | None = None  # fixed number of blocks; required sizing on CPU unless set

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.num_gpu_blocks is not None and self.num_gpu_blocks < 1:
            raise ValueError(f"num_gpu_blocks must be >= 1, got {self.num_gpu_blocks}")
