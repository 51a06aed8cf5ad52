"""One preset end to end: decode sweep, offline set, HF baseline, and the record's flat metrics.

`run_preset(preset, ...)` builds the engine once (CUDA graphs captured, timed), sweeps decode over
`batches`, runs the offline set, frees the engine, then runs transformers' generate on the same
requests (`hf_baseline`). `benchmark_metrics(results)` flattens results into `lab.track` metric
names, `<preset>_<what>` with the preset's name made identifier-safe, plus what the scaler's engine
profile reads (`lab.scale.profile_metrics`: prefill seconds per token, KV capacity, slots);
`benchmark_record` wraps them in a `ResultRecord` with the environment (device name inside).
"""
from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass, field

import torch

from lab.studies.roofline.bandwidth import card_bandwidth, current_device_name
from lab.studies.roofline.decode import DecodePoint, measure_decode
from lab.studies.roofline.hf_baseline import HFPoint, measure_hf
from lab.studies.roofline.offline import OfflinePoint, measure_offline, offline_requests
from lab.engine.llm import LLM
from lab.scale import profile_metrics as names
from lab.track.flatten import metric_prefix


@dataclass(frozen=True)
class PresetResult:
    preset: str
    device_name: str
    bandwidth_bytes_per_s: float | None
    engine_init_s: float  # load + KV sizing + graph capture
    graph_capture_s: float  # capture + warm-up of every graph bucket, decode and mixed (0: eager)
    kv_bytes_per_token: int
    kv_cache_tokens: int  # the engine's KV capacity: blocks x block size
    max_num_seqs: int
    decode: list[DecodePoint]
    offline: OfflinePoint
    hf: HFPoint | None
    engine_flags: dict = field(default_factory=dict)


def run_preset(
    preset: str,
    batches: list[int],
    decode_prompt_len: int = 512,
    decode_steps: int = 64,
    num_requests: int = 256,
    min_len: int = 100,
    max_len: int = 1024,
    run_hf: bool = True,
    hf_batch_size: int = 32,
    hf_time_cap_s: float = 60.0,
    hf_decode_tokens: int = 64,
    device: str = "auto",
    engine_kwargs: dict | None = None,
) -> PresetResult:
    kw = dict(max_num_seqs=max(batches + [256]), **(engine_kwargs or {}))
    start = time.perf_counter()
    llm = LLM(preset, device=device, **kw)
    engine = llm.engine
    init_s = time.perf_counter() - start
    name = current_device_name(engine.device)
    bw = card_bandwidth(name) if engine.device.type == "cuda" else None
    decode = [measure_decode(llm, b, decode_prompt_len, decode_steps, bw, seed=b) for b in batches]
    vocab = min(engine.model_config.vocab_size, 100_000)
    requests = offline_requests(num_requests, min_len, max_len, vocab)
    offline = measure_offline(llm, requests)
    flags = dict(
        attention_backend=engine.attention_backend, cuda_graphs=engine.graphs is not None,
        dtype=str(engine.dtype), **{k: v for k, v in kw.items() if isinstance(v, (int, float, str, bool))},
    )
    result_dev, dtype = engine.device, engine.dtype
    capture_s = sum(g.capture_s for g in (engine.graphs, engine.mixed_graphs) if g is not None)
    kv_bpt = engine.kv_cache_spec.bytes_per_token
    kv_tokens, slots = engine.num_blocks * engine.args.block_size, engine.args.max_num_seqs
    hf_overrides = (engine_kwargs or {}).get("hf_overrides")
    del llm, engine
    gc.collect()
    if result_dev.type == "cuda":
        torch.cuda.empty_cache()
    hf = None
    if run_hf:
        hf = measure_hf(
            preset, requests, requests[0].prompt_token_ids[:decode_prompt_len], hf_decode_tokens, result_dev, dtype,
            batch_size=hf_batch_size, time_cap_s=hf_time_cap_s, hf_overrides=hf_overrides,
        )
    return PresetResult(preset, name, bw, init_s, capture_s, kv_bpt, kv_tokens, slots, decode, offline, hf, flags)


def benchmark_metrics(results: list[PresetResult]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in results:
        p = metric_prefix(r.preset)
        out[f"{p}_engine_init_s"] = r.engine_init_s
        out[f"{p}_graph_capture_s"] = r.graph_capture_s
        out[f"{p}_kv_bytes_per_token"] = float(r.kv_bytes_per_token)
        out.update(profile_metrics(r))
        for d in r.decode:
            for k, v in asdict(d).items():
                if k != "batch" and v is not None:
                    out[f"{p}_decode_b{d.batch}_{k}"] = float(v)
        for k, v in asdict(r.offline).items():
            out[f"{p}_offline_{k}"] = float(v)
        if r.hf is not None:
            for k, v in asdict(r.hf).items():
                out[f"{p}_hf_{k}"] = float(v)
            out[f"{p}_offline_speedup_vs_hf"] = r.offline.output_tokens_per_s / r.hf.offline_output_tokens_per_s
            b1 = next((d for d in r.decode if d.batch == 1), None)
            if b1 is not None:
                out[f"{p}_decode_b1_speedup_vs_hf"] = b1.tokens_per_s / r.hf.decode_b1_tokens_per_s
    return out


def profile_metrics(r: PresetResult) -> dict[str, float]:
    """What `lab.scale.roofline_profile` reads beside the decode sweep. Prefill per token comes from the sweep
    point with the most prompt tokens: chunked at the engine's token budget, as a loaded server prefills, and
    (batches listed in increasing order, as every profile lists them) after the smaller points warmed the kernels."""
    p = metric_prefix(r.preset)
    largest = max(r.decode, key=lambda d: d.prefill_tokens)
    return {names.prefill_per_token(p): largest.prefill_s / largest.prefill_tokens,
            names.kv_cache_tokens(p): float(r.kv_cache_tokens), names.max_num_seqs(p): float(r.max_num_seqs)}


def benchmark_record(
    results: list[PresetResult], params: dict, experiment: str = "01_engine_roofline",
    artifacts: tuple[str, ...] = (), profile: str | None = None,
):
    """A `lab.track.ResultRecord` of the results, with the environment (device name inside)."""
    from lab.track import ResultRecord, collect_environment

    return ResultRecord(experiment=experiment, params=params, metrics=benchmark_metrics(results),
                        environment=collect_environment(), notebook=experiment, artifacts=artifacts, profile=profile)


def preset_result_from_dict(d: dict) -> PresetResult:
    """Inverse of `dataclasses.asdict(PresetResult)` (the driver prints one JSON line per preset)."""
    return PresetResult(
        **{**d, "decode": [DecodePoint(**p) for p in d["decode"]], "offline": OfflinePoint(**d["offline"]),
           "hf": HFPoint(**d["hf"]) if d.get("hf") else None}
    )
