"""8-bit variants of one model against its plain engine: KV capacity, decode and offline speed, fidelity.

    variants = parse_variants({"bf16": {}, "kv-fp8": {"kv_cache_dtype": "fp8"}, "w-fp8": {"quantization": "fp8"}})
    results = measure_variants("r1-distill-qwen-1.5b", variants, engine_args, workload)

Contract:
- `Variant(name, quantization, kv_cache_dtype)`; `parse_variants(mapping)` takes the notebook's
  {name: {quantization?, kv_cache_dtype?}} and refuses other keys by name. The first variant is the reference
  (the plain bf16 engine): every other one is compared with it.
- `measure_variants` builds one engine per variant, one after the other (on CUDA each in a process of its own,
  `variant_child`, so each sizes its KV cache from the same free memory), and measures on each: weight bytes (what the module holds
  on the device), KV bytes per token as allocated (every cache tensor's bytes over the cache's token slots:
  scales included), the cache's token capacity and tokens per GiB, the decode step at batch 1
  (`lab.studies.roofline.decode`), offline throughput on the nano-vllm workload (`lab.studies.roofline.offline`,
  skipped when `offline_requests` is 0), and greedy runs of fixed prompts one at a time whose every step's
  logits are captured (`compute_logits` runs outside the CUDA graphs).
- Fidelity (`lab.engine.fidelity.FidelityReport`) compares each variant's logits with the reference's only at
  the steps where both runs had seen the same tokens (up to and including the first step whose greedy token
  differs): after a divergence the contexts differ and the logits say nothing about the quantization. On dummy
  weights this is the quantization noise of random matrices, not of a trained model.
"""
from __future__ import annotations

import gc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lab.errors import LabError

VARIANT_KEYS = ("quantization", "kv_cache_dtype")


@dataclass(frozen=True)
class Variant:
    name: str
    quantization: str | None = None
    kv_cache_dtype: str = "auto"

    def engine_args(self) -> dict[str, Any]:
        return {"quantization": self.quantization, "kv_cache_dtype": self.kv_cache_dtype}


def parse_variants(spec: Mapping[str, Mapping[str, Any]]) -> list[Variant]:
    if not spec:
        raise LabError("VARIANTS is empty: name at least the reference variant, e.g. {'bf16': {}}")
    out = []
    for name, fields in spec.items():
        if not isinstance(fields, Mapping):
            raise LabError(f"variant {name!r} must map to a dict of {VARIANT_KEYS}, got {fields!r}")
        unknown = sorted(set(fields) - set(VARIANT_KEYS))
        if unknown:
            raise LabError(f"variant {name!r} has unknown fields {unknown}; allowed: {list(VARIANT_KEYS)}")
        out.append(Variant(str(name), fields.get("quantization"), fields.get("kv_cache_dtype", "auto")))
    return out


@dataclass(frozen=True)
class Workload:
    decode_prompt_len: int = 512
    decode_steps: int = 128
    offline_requests: int = 256  # 0 skips the offline run
    offline_min_len: int = 100
    offline_max_len: int = 1024
    fidelity_prompts: int = 8
    fidelity_prompt_len: int = 64
    fidelity_tokens: int = 32
    seed: int = 0


@dataclass
class VariantResult:
    variant: Variant
    weight_bytes: int
    kv_bytes_per_token: float
    kv_capacity_tokens: int
    kv_tokens_per_gib: float
    decode_step_ms: float
    decode_tokens_per_s: float
    offline_output_tokens_per_s: float | None
    tokens: list[list[int]] = field(repr=False)  # greedy outputs of the fidelity prompts
    logits: list[Any] = field(repr=False)  # per prompt: (steps, vocab) float32 on the CPU
    fidelity: dict[str, Any] | None = None  # against the reference; None for the reference itself

    def metrics(self) -> dict[str, float]:
        m = {"weight_gib": self.weight_bytes / 2**30, "kv_bytes_per_token": self.kv_bytes_per_token,
             "kv_capacity_tokens": float(self.kv_capacity_tokens), "kv_tokens_per_gib": self.kv_tokens_per_gib,
             "decode_b1_step_ms": self.decode_step_ms, "decode_b1_tokens_per_s": self.decode_tokens_per_s}
        if self.offline_output_tokens_per_s is not None:
            m["offline_output_tokens_per_s"] = self.offline_output_tokens_per_s
        for key in ("cosine_min", "cosine_mean", "kl_mean", "kl_max", "token_match"):
            if self.fidelity and self.fidelity.get(key) is not None:
                m[key] = float(self.fidelity[key])
        return m


def module_bytes(module) -> int:
    """Bytes of every parameter and buffer the module holds (fp8 codes and their scales included)."""
    tensors = {id(t): t for t in list(module.parameters()) + list(module.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def kv_allocation(engine) -> tuple[float, int]:
    """(bytes per token slot as allocated, token slots) of the engine's KV cache."""
    caches = engine.runner.kv_caches
    total = sum(_nbytes(t) for layer in caches for t in layer)
    slots = engine.num_blocks * engine.args.block_size
    return total / slots, slots


def _nbytes(cache) -> int:
    """A plain cache tensor's bytes, or an 8-bit cache's codes plus its scales (`lab.engine.kv_quant`)."""
    tensors = [cache] if hasattr(cache, "numel") else [cache.data, cache.scale]
    return sum(t.numel() * t.element_size() for t in tensors)


def greedy_with_logits(llm, prompts: list[list[int]], max_tokens: int) -> tuple[list[list[int]], list[Any]]:
    """Each prompt alone, greedy: its tokens and the logits of every step (rows in step order)."""
    import torch

    from lab.engine.sampling_params import SamplingParams

    model = llm.engine.model
    original = model.compute_logits
    rows: list[Any] = []

    def capture(hidden):
        logits = original(hidden)
        rows.append(logits.float().cpu())
        return logits

    model.compute_logits = capture
    tokens, logits = [], []
    try:
        for prompt in prompts:
            rows.clear()
            out = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True),
                               use_tqdm=False)
            got = list(out[0].outputs[0].token_ids)
            steps = torch.cat(rows)[: len(got)]
            tokens.append(got)
            logits.append(steps)
    finally:
        del model.compute_logits  # back to the class's method
    return tokens, logits


def compare(reference: VariantResult, result: VariantResult, weight_error: dict[str, float] | None = None) -> dict:
    """FidelityReport over the steps both runs reached with the same context (see the module's contract)."""
    import torch

    from lab.engine.fidelity import FidelityReport

    ref_rows, quant_rows = [], []
    for ref_t, q_t, ref_l, q_l in zip(reference.tokens, result.tokens, reference.logits, result.logits):
        same = 0
        while same < min(len(ref_t), len(q_t)) and ref_t[same] == q_t[same]:
            same += 1
        n = min(same + 1, len(ref_l), len(q_l))  # the diverging step itself still had the same context
        ref_rows.append(ref_l[:n])
        quant_rows.append(q_l[:n])
    report = FidelityReport.from_outputs(torch.cat(ref_rows), torch.cat(quant_rows), reference.tokens, result.tokens,
                                         weight_error)
    return {**report.to_dict(), "compared_steps": int(sum(r.shape[0] for r in ref_rows))}


def measure_variant(model: str, variant: Variant, engine_args: Mapping[str, Any], workload: Workload,
                    bandwidth: float | None = None) -> VariantResult:
    from lab.engine.llm import LLM
    from lab.engine.throughput import random_prompts
    from lab.studies.roofline.decode import measure_decode
    from lab.studies.roofline.offline import measure_offline, offline_requests

    llm = LLM(model, **{**engine_args, **variant.engine_args()})
    try:
        engine = llm.engine
        per_token, slots = kv_allocation(engine)
        decode = measure_decode(llm, 1, workload.decode_prompt_len, workload.decode_steps, bandwidth, seed=workload.seed)
        vocab = min(engine.model_config.vocab_size, 100_000)
        offline = None
        if workload.offline_requests:
            reqs = offline_requests(workload.offline_requests, workload.offline_min_len, workload.offline_max_len,
                                    vocab, seed=workload.seed)
            offline = measure_offline(llm, reqs).output_tokens_per_s
        prompts = random_prompts(workload.fidelity_prompts, workload.fidelity_prompt_len, vocab, seed=workload.seed + 1)
        tokens, logits = greedy_with_logits(llm, prompts, workload.fidelity_tokens)
        return VariantResult(variant, module_bytes(engine.model), per_token, slots, 2**30 / per_token,
                             decode.step_s * 1e3, decode.tokens_per_s, offline, tokens, logits)
    finally:
        del llm
        free_memory()


def free_memory() -> None:
    """After an engine is dropped: collect its cycles and give PyTorch's cached CUDA blocks back."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _on_cuda(engine_args: Mapping[str, Any]) -> bool:
    import torch

    device = str(engine_args.get("device", "auto"))
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def measure_variants(model: str, variants: list[Variant], engine_args: Mapping[str, Any], workload: Workload,
                     bandwidth: float | None = None, isolate: bool | None = None) -> list[VariantResult]:
    """Every variant, then each one's fidelity against the first. `isolate` (default: on CUDA) measures each in
    a process of its own (`variant_child`): a CUDA engine's memory does not all come back when it is dropped."""
    from lab.studies.memory.variant_child import run_in_child

    isolate = _on_cuda(engine_args) if isolate is None else isolate
    measure = run_in_child if isolate else measure_variant
    results = [measure(model, v, engine_args, workload, bandwidth) for v in variants]
    for result in results[1:]:
        result.fidelity = compare(results[0], result)
    return results
