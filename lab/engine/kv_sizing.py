"""How many KV blocks fit: a given count, a CPU memory budget, or free CUDA memory.

On CUDA the engine measures rather than guesses: after the weights are loaded it runs one
forward pass of the largest step the scheduler may issue, notes the activation peak, and gives
the KV cache what is left of `gpu_memory_utilization` of the card once this engine's own memory is counted
(`kv_budget_bytes`: other processes on the card do not shrink its share, only what is free caps it).
"""
from __future__ import annotations

import torch

from lab.engine.attention.metadata import AttentionMetadata
from lab.engine.kv_cache import KVCacheSpec, allocate_kv_cache


def blocks_from_budget(budget_bytes: float, spec: KVCacheSpec, block_size: int) -> int:
    num_blocks = int(budget_bytes // spec.bytes_per_block(block_size))
    if num_blocks < 1:
        raise ValueError(
            f"no room for the KV cache: {budget_bytes / 2**30:.2f} GiB available, one block of "
            f"{block_size} tokens needs {spec.bytes_per_block(block_size) / 2**20:.2f} MiB; "
            "raise gpu_memory_utilization or cpu_kv_cache_space_gib, or lower max_num_batched_tokens"
        )
    return num_blocks


@torch.inference_mode()
def profile_peak_activation_bytes(
    model: torch.nn.Module, spec: KVCacheSpec, num_tokens: int, num_sample_rows: int, block_size: int, device: torch.device
) -> int:
    """Bytes allocated above the resting level while running a `num_tokens` prefill step."""
    num_blocks = (num_tokens + block_size - 1) // block_size
    cache = allocate_kv_cache(spec, num_blocks, block_size, device)
    meta = AttentionMetadata(
        query_start_loc=[0, num_tokens],
        seq_lens=[num_tokens],
        block_tables=[list(range(num_blocks))],
        slot_mapping=torch.arange(num_tokens, device=device),
        block_size=block_size,
    )
    ids = torch.zeros(num_tokens, dtype=torch.long, device=device)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    resting = torch.cuda.memory_allocated(device)
    hidden = model(ids, torch.arange(num_tokens, device=device), cache, meta)
    rows = torch.zeros(num_sample_rows, dtype=torch.long, device=device)
    model.compute_logits(hidden.index_select(0, rows))
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - resting
    del cache, hidden
    torch.cuda.empty_cache()
    return peak


NON_TORCH_BYTES = 512 << 20  # this process's CUDA context and library workspaces, outside PyTorch's allocator
FREE_MARGIN_BYTES = 256 << 20  # never take the card's last free bytes: the driver and kernels need some


def cuda_kv_budget_bytes(device: torch.device, gpu_memory_utilization: float, peak_activation_bytes: int) -> float:
    free, total = torch.cuda.mem_get_info(device)
    return kv_budget_bytes(total, free, torch.cuda.memory_reserved(device), gpu_memory_utilization,
                           peak_activation_bytes)


def kv_budget_bytes(total: int, free: int, reserved: int, gpu_memory_utilization: float, peak: int) -> float:
    """KV bytes for this engine: its share of the card (`gpu_memory_utilization` of `total`, vLLM's meaning)
    less what it holds itself (`reserved` by PyTorch: weights, caches; plus `NON_TORCH_BYTES`) and its activation
    peak, and never more than is free now. Only this process's own memory counts against its share, so two
    engines of 0.4 each can start side by side on one card: counting the whole card's use (as this did
    before) left the second one nothing while the first held its 0.4."""
    share = total * gpu_memory_utilization - reserved - NON_TORCH_BYTES - peak
    return min(share, free - peak - FREE_MARGIN_BYTES)
