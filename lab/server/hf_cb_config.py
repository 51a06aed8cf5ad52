"""`HFCBConfig`: how big transformers' continuous-batching manager is (`lab serve --engine hf-cb`).

Torch-free: the CLI and `ServerConfig` validate it before any model loads. Every field maps one to
one onto a field of transformers' `ContinuousBatchingConfig` (its names in the comments); None keeps
transformers' own default, which sizes the KV cache and the token budget from free device memory,
as a user of `generate_batch` / `transformers serve` gets it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class HFCBConfig:
    max_batch_tokens: int | None = None  # max_batch_tokens: token budget of one step (prefill + decode)
    num_blocks: int | None = None  # num_blocks: KV cache blocks
    block_size: int | None = None  # page_size (block_size before 5.25): tokens per KV block; transformers: 256
    max_requests_per_batch: int | None = None  # max_requests_per_batch: requests in one step; transformers: 1024

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"hf_cb {field.name} must be an integer >= 1, got {value!r}")
