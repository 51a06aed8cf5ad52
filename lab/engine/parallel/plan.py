"""Which slice of the model each tensor-parallel rank holds, and whether a model can be split at all.

Torch-free: the rules are integers, checked before any worker process starts, so a bad
`tensor_parallel_size` fails in milliseconds with an error that names the dimension it does not divide.

The split (rank r of tp):
  attention heads     rank r holds query heads [r*H/tp, (r+1)*H/tp)             (H % tp == 0)
  GQA KV heads        KV >= tp: heads [r*KV/tp, (r+1)*KV/tp)                    (KV % tp == 0)
                      KV <  tp: replicated, rank r holds KV head r // (tp/KV)   (tp % KV == 0)
                      (each of its query heads belongs to that KV head's group, so no rank needs two)
  MLA                 heads split as above; the latent (kv_a) is replicated, so every rank caches the whole
                      latent row of each token (the cache does not shrink with tp; see parallel/__init__)
  MLP widths          intermediate rows [r*I/tp, (r+1)*I/tp) of gate/up, the same columns of down (I % tp == 0)
  routed experts      rank r owns experts [r*E/tp, (r+1)*E/tp)                  (E % tp == 0)
  vocabulary          rows [r*V/tp, (r+1)*V/tp) of the embedding and the head   (V % tp == 0)
An uneven split (vLLM pads the vocabulary, for one) is refused rather than padded: every released
DeepSeek / R1-Distill shape divides by 2, 4 and 8.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """[start, stop) of a dimension that one rank holds."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def even_range(total: int, rank: int, size: int) -> Range:
    """Rank `rank`'s equal share of `total` items (the caller checked that `size` divides `total`)."""
    share = total // size
    return Range(rank * share, (rank + 1) * share)


def kv_head_range(num_kv_heads: int, rank: int, size: int) -> Range:
    """The GQA KV heads rank `rank` holds: an even share, or one replicated head when there are fewer than ranks."""
    if num_kv_heads >= size:
        return even_range(num_kv_heads, rank, size)
    head = rank // (size // num_kv_heads)
    return Range(head, head + 1)


def check_tensor_parallel(config, size: int) -> None:
    """ValueError naming each dimension of `config` (a ModelConfig) that `size` ranks cannot split evenly."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"tensor_parallel_size must be an integer >= 1, got {size!r}")
    if size == 1:
        return
    dims = {"num_attention_heads": config.num_attention_heads, "vocab_size": config.vocab_size}
    problems = [f"{name}={value}" for name, value in dims.items() if value % size]
    if config.family == "llama":
        kv = config.num_key_value_heads
        if kv % size and size % kv:
            problems.append(f"num_key_value_heads={kv} (neither divides the other)")
        if config.intermediate_size % size:
            problems.append(f"intermediate_size={config.intermediate_size}")
    else:
        layers = range(config.num_hidden_layers)
        if any(not config.is_moe_layer(i) for i in layers) and config.intermediate_size % size:
            problems.append(f"intermediate_size={config.intermediate_size} (the dense layers)")
        if any(config.is_moe_layer(i) for i in layers):
            if config.n_routed_experts % size:
                problems.append(f"n_routed_experts={config.n_routed_experts}")
            shared = config.moe_intermediate_size * config.n_shared_experts
            if shared % size:
                problems.append(f"moe_intermediate_size x n_shared_experts={shared} (the shared experts)")
    if problems:
        raise ValueError(f"tensor_parallel_size={size} cannot split this model evenly across ranks: it does not "
                         f"divide {', '.join(problems)}")


def check_devices(device_type: str, size: int, first_index: int, device_count: int) -> None:
    """ValueError when `size` ranks starting at CUDA device `first_index` do not fit the visible devices.
    A CPU run has no such limit (gloo processes share the cores)."""
    if device_type != "cuda" or size == 1:
        return
    if first_index + size > device_count:
        raise ValueError(f"tensor_parallel_size={size} needs {size} CUDA devices (one per rank, from cuda:{first_index}"
                         f"), but only {device_count} are visible")
