"""One preset end to end: decode sweep, offline set, HF baseline, peers, and the record's flat metrics.

`run_preset(preset, ...)` builds the engine once (CUDA graphs captured, timed), sweeps decode over
`batches`, runs the offline set, frees the engine, then loads the preset's transformers model once
(`lab.server.hf_model`: the `hf` engine's, our engine's dummy weights) for transformers' generate on the
same requests (`hf_baseline`, the floor) and the peers (`peers`: compiled static-cache decode, our
gpt-fast-style loop, continuous batching; `peers=None` skips them). `benchmark_metrics(results)` flattens
results into `lab.track` metric
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
from lab.studies.roofline.peer_cb_offline import CBOfflinePoint
from lab.studies.roofline.peer_metrics import peer_metrics
from lab.studies.roofline.peer_timing import DecodePeerPoint
from lab.studies.roofline.peers import PeerConfig, PeerResults, measure_peers
from lab.engine.args import EngineArgs
from lab.engine.llm import LLM
from lab.engine.throughput import random_prompts
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
    peers: PeerResults | None = None


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
    peers: PeerConfig | None = None,
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
    result_dev = engine.device
    capture_s = sum(g.capture_s for g in (engine.graphs, engine.mixed_graphs) if g is not None)
    kv_bpt = engine.kv_cache_spec.bytes_per_token
    kv_tokens, slots = engine.num_blocks * engine.args.block_size, engine.args.max_num_seqs
    del llm, engine
    _free(result_dev)
    hf, peer_results = None, None
    if run_hf or peers is not None:
        from lab.server.hf_model import load_hf_model

        hf_model = load_hf_model(EngineArgs(model=preset, device=str(result_dev), **kw))
        if run_hf:
            hf = measure_hf(hf_model.module, requests, requests[0].prompt_token_ids[:decode_prompt_len],
                            hf_decode_tokens, batch_size=hf_batch_size, time_cap_s=hf_time_cap_s)
        if peers is not None:
            # The engine's batch-1 point: its prompt (measure_decode seeds it with the batch size), and one token
            # for its prefill plus one per timed step, so the peers decode at the same contexts.
            prompt = random_prompts(1, decode_prompt_len, vocab, seed=1)[0]
            peer_results = measure_peers(hf_model, prompt, decode_steps + 1, requests, peers)
        del hf_model
        _free(result_dev)
    return PresetResult(preset, name, bw, init_s, capture_s, kv_bpt, kv_tokens, slots, decode, offline, hf, flags,
                        peer_results)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


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
        if r.peers is not None:
            b1 = next((d for d in r.decode if d.batch == 1), None)
            out.update(peer_metrics(p, r.peers, b1.tokens_per_s if b1 else None, r.offline.output_tokens_per_s))
    return out


def peer_failures(results: list[PresetResult]) -> dict[str, dict[str, str]]:
    """preset -> {peer: error} for the peers that could not run: the record's params keep them beside the numbers."""
    return {r.preset: dict(r.peers.failures) for r in results if r.peers is not None and r.peers.failures}


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
           "hf": HFPoint(**d["hf"]) if d.get("hf") else None, "peers": _peers_from_dict(d.get("peers"))}
    )


def _peers_from_dict(d: dict | None) -> PeerResults | None:
    if d is None:
        return None
    return PeerResults(
        hf_static=DecodePeerPoint(**d["hf_static"]) if d.get("hf_static") else None,
        gptfast=DecodePeerPoint(**d["gptfast"]) if d.get("gptfast") else None,
        hf_cb=CBOfflinePoint(**d["hf_cb"]) if d.get("hf_cb") else None, failures=dict(d.get("failures") or {}),
    )
