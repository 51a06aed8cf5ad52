"""The baseline: transformers' `generate` on the same preset shapes, card and workload.

`measure_hf(model, requests, ...)` runs on the preset's transformers model (`suite` loads it once for this
floor and the peers: `lab.server.hf_model.load_hf_model`, our engine's dummy weights, bf16 on CUDA,
transformers' default SDPA attention) and measures
  - batch-1 decode: N / t(N new tokens) after a warm-up, the prompt's prefill included (for a
    prompt of a few hundred tokens that is ~1% of the time on a GPU);
  - the offline set: requests in order, `batch_size` at a time, left-padded, greedy, exactly each
    batch's longest output length (min_new_tokens = max_new_tokens, so EOS never stops it). A row
    counts only the tokens its request asked for: the padding steps past a shorter request's
    length are HF's waste, not its output. The whole offline run is capped at `time_cap_s`
    (generate's `max_time`): throughput is the counted tokens over the time spent, so a capped
    run measures HF's steady rate on the first requests rather than the whole set (`capped`).
HF runs after the engine has been freed: both never share the card's memory; the caller frees the model.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from lab.studies.roofline.offline import OfflineRequest


@dataclass(frozen=True)
class HFPoint:
    decode_b1_tokens_per_s: float
    offline_output_tokens_per_s: float
    offline_requests_done: float  # requests whose tokens were all generated before the cap
    offline_output_tokens: int
    offline_wall_s: float
    capped: bool
    batch_size: int


@torch.inference_mode()
def _generate(model, input_ids: torch.Tensor, mask: torch.Tensor, new_tokens: int, max_time: float | None = None):
    kw = dict(max_time=max_time) if max_time else {}
    return model.generate(
        input_ids=input_ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
        do_sample=False, pad_token_id=0, **kw,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hf_decode_b1(model, prompt: list[int], new_tokens: int, device: torch.device) -> float:
    ids = torch.tensor([prompt], device=device)
    mask = torch.ones_like(ids)
    _generate(model, ids, mask, 4)  # warm-up: kernels, allocator
    _sync(device)
    start = time.perf_counter()
    _generate(model, ids, mask, new_tokens)
    _sync(device)
    return new_tokens / (time.perf_counter() - start)


def hf_offline(model, requests: list[OfflineRequest], batch_size: int, time_cap_s: float, device: torch.device):
    counted, done, spent, capped = 0, 0, 0.0, False
    for i in range(0, len(requests), batch_size):
        batch = requests[i : i + batch_size]
        width = max(len(r.prompt_token_ids) for r in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, r in enumerate(batch):  # left padding: every row's last prompt token is at the end
            ids[row, width - len(r.prompt_token_ids) :] = torch.tensor(r.prompt_token_ids)
            mask[row, width - len(r.prompt_token_ids) :] = 1
        longest = max(r.output_len for r in batch)
        _sync(device)
        start = time.perf_counter()
        out = _generate(model, ids.to(device), mask.to(device), longest, max_time=time_cap_s - spent)
        _sync(device)
        spent += time.perf_counter() - start
        steps = out.shape[1] - width
        counted += sum(min(r.output_len, steps) for r in batch)
        done += sum(r.output_len <= steps for r in batch)
        if steps < longest or spent >= time_cap_s:
            capped = steps < longest or i + batch_size < len(requests)
            break
    return counted, done, spent, capped


def measure_hf(
    model: nn.Module, requests: list[OfflineRequest], decode_prompt: list[int], decode_tokens: int,
    batch_size: int = 32, time_cap_s: float = 60.0,
) -> HFPoint:
    device = next(model.parameters()).device
    b1 = hf_decode_b1(model, decode_prompt, decode_tokens, device)
    counted, done, spent, capped = hf_offline(model, requests, batch_size, time_cap_s, device)
    return HFPoint(
        decode_b1_tokens_per_s=b1,
        offline_output_tokens_per_s=counted / spent,
        offline_requests_done=float(done),
        offline_output_tokens=counted,
        offline_wall_s=spent,
        capped=capped,
        batch_size=batch_size,
    )
