"""Notebook 01's peers on a CPU: each greedy decode equals transformers' plain `generate` (compile off: the same
code path, eager), the timing and metric arithmetic against hand-computed numbers, and the errors bad input
gets. Compiling on two CPU cores takes minutes, so the compiled path is exercised by the gpu profile."""
from __future__ import annotations

import os

import pytest
import torch

from lab.engine.args import EngineArgs
from lab.scale.roofline_profile import profile_from_roofline_record
from lab.server.hf_cb_config import HFCBConfig
from lab.server.hf_model import load_hf_model
from lab.studies.roofline import peer_timing
from lab.studies.roofline.decode import DecodePoint
from lab.studies.roofline.offline import OfflinePoint, OfflineRequest, offline_requests
from lab.studies.roofline.peer_cache import static_cache
from lab.studies.roofline.peer_cb_offline import CBOfflinePoint, run_offline
from lab.studies.roofline.peer_compiled_decode import CompiledDecodeLoop
from lab.studies.roofline.peer_metrics import peer_metrics
from lab.studies.roofline.peer_static_generate import StaticCacheGenerate
from lab.studies.roofline.peer_view import peer_rows
from lab.studies.roofline.peer_timing import DecodePeerPoint, agree_prefix, decode_step_s, measure_decode_peer
from lab.studies.roofline.peers import PeerConfig, PeerResults, measure_peers, plain_generate
from lab.studies.roofline.suite import PresetResult, benchmark_metrics, peer_failures, preset_result_from_dict

# Two architectures the gpu profile measures, shrunk: DeepSeek-V3's MLA + MoE (tiny) and Qwen2's dense GQA.
SHAPES = {
    "tiny": {"num_hidden_layers": 2, "vocab_size": 4096},
    "r1-distill-qwen-1.5b": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
                             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 4096},
}
PROMPT = [17, 901, 33, 2048, 5, 77, 1234, 400, 19, 3000, 64, 128]


@pytest.fixture(scope="module", params=list(SHAPES))
def hf_model(request):
    torch.manual_seed(0)
    return load_hf_model(EngineArgs(model=request.param, device="cpu", hf_overrides=SHAPES[request.param],
                                    max_model_len=256))


@pytest.mark.parametrize("peer_cls", [StaticCacheGenerate, CompiledDecodeLoop])
def test_a_decode_peer_generates_plain_generates_tokens_and_again_after_its_cache_reset(hf_model, peer_cls) -> None:
    reference = plain_generate(hf_model.module, PROMPT, 6)
    peer = peer_cls(hf_model.module, len(PROMPT) + 6, compile=False)
    assert peer.generate(PROMPT, 6) == reference
    assert peer.generate(PROMPT, 1) == reference[:1]  # the static cache is reset in place between calls
    assert peer.generate(PROMPT, 6) == reference


def test_continuous_batching_generates_plain_generates_tokens_per_request(hf_model) -> None:
    from lab.server.hf_cb_manager import start_manager

    requests = [OfflineRequest(PROMPT, 5), OfflineRequest(PROMPT[:7], 3), OfflineRequest(PROMPT[3:], 4)]
    manager = start_manager(hf_model, HFCBConfig(num_blocks=8, block_size=32, max_batch_tokens=64))
    try:
        wall_s, tokens = run_offline(manager, requests)
    finally:
        manager.stop(block=True, timeout=30, hard_stop=True)
    assert wall_s > 0
    assert tokens == [plain_generate(hf_model.module, r.prompt_token_ids, r.output_len) for r in requests]


def test_measure_peers_runs_all_three_on_one_model(hf_model) -> None:
    requests = offline_requests(3, 4, 8, 4096, seed=1)
    config = PeerConfig.from_params(False, 1, 2, {"num_blocks": 8, "block_size": 32, "max_batch_tokens": 64})
    peers = measure_peers(hf_model, PROMPT, 8, requests, config)
    assert peers.failures == {}
    for point in (peers.hf_static, peers.gptfast):
        assert point.agree_prefix_tokens == 8 and point.new_tokens == 8 and point.prompt_len == len(PROMPT)
        assert not point.compiled and not point.fullgraph
        assert point.tokens_per_s == pytest.approx(1 / point.decode_step_s)
    assert peers.hf_cb.output_tokens == sum(r.output_len for r in requests) and peers.hf_cb.num_requests == 3


@pytest.mark.skipif(os.environ.get("LAB_TEST_COMPILE") != "1",
                    reason="compiles two decode steps: minutes on a CPU (set LAB_TEST_COMPILE=1; the gpu profile compiles)")
def test_compiled_decode_peers_build_one_graph_replay_it_and_match_plain_generate() -> None:
    from torch._dynamo.utils import counters

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # float32 on either device: compiled and eager kernels agree to ~1e-6, far below random weights' logit gaps.
    model = load_hf_model(EngineArgs(model="tiny", device=device, dtype="float32", max_model_len=256,
                                     hf_overrides=SHAPES["tiny"]))
    reference = plain_generate(model.module, PROMPT, 6)
    for peer_cls in (StaticCacheGenerate, CompiledDecodeLoop):
        torch._dynamo.reset()
        counters.clear()
        peer = peer_cls(model.module, len(PROMPT) + 6, compile=True)
        point = measure_decode_peer(peer, PROMPT, 6, reference, warmup_calls=2, repeats=2)
        assert point.compiled and point.fullgraph and point.agree_prefix_tokens == 6
        assert counters["stats"]["unique_graphs"] == 1  # one graph for every step of every call: no recompiles


# ---- timing and metric arithmetic ------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class FakePeer:
    """Each call costs 0.5 s of prefill + 0.01 s per decode step; the first costs 10 s more (the compile)."""

    def __init__(self, clock: FakeClock, graph_break: bool = False, noisy_calls: tuple[int, ...] = ()) -> None:
        self.clock, self.graph_break, self.noisy_calls = clock, graph_break, noisy_calls
        self.compiled, self.fullgraph, self.calls, self.slow_s = True, True, 0, 0.3

    def generate(self, prompt: list[int], new_tokens: int) -> list[int]:
        if self.graph_break and self.fullgraph:
            raise torch._dynamo.exc.Unsupported("data-dependent branch")
        self.calls += 1
        self.clock.now += 0.5 + 0.01 * (new_tokens - 1) + (10.0 if self.calls == 1 else 0.0)
        if self.calls in self.noisy_calls:  # slowed by other work on the machine
            self.clock.now += self.slow_s
        return [7] * new_tokens

    def allow_graph_breaks(self) -> None:
        self.fullgraph = False


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(peer_timing.time, "perf_counter", fake.perf_counter)
    return fake


def test_decode_step_is_the_difference_of_the_fastest_calls_with_warm_up_apart(clock) -> None:
    # Calls 1-4 warm up; of the timed ones, the first 1-token call (5) and the second 65-token call (8) are slowed.
    peer = FakePeer(clock, noisy_calls=(5, 8))
    point = measure_decode_peer(peer, [1, 2, 3], 65, [7] * 10 + [8], warmup_calls=2, repeats=3)
    assert point.decode_step_s == pytest.approx(0.01) and point.tokens_per_s == pytest.approx(100.0)
    assert point.ms_per_token == pytest.approx(10.0) and point.prefill_s == pytest.approx(0.5)
    # Warm-up: 2 rounds of a 1-token (0.5 s) and a 65-token call (1.14 s), + the 10 s compile.
    assert point.compile_warmup_s == pytest.approx(10 + 2 * (0.5 + 1.14)) and peer.calls == 10
    assert point.agree_prefix_tokens == 10 and point.compiled and point.fullgraph


def test_a_busy_machine_gets_more_rounds_and_then_a_refusal_not_a_number(clock) -> None:
    # The first timed 65-token call (call 4) is slowed by 0.3 s: still longer than the short call, so 1 round is
    # all it gets (and the noise stays in). Short calls (odd) all slowed by 2 s hide the steps: 3 rounds, then no rate.
    point = measure_decode_peer(FakePeer(clock, noisy_calls=(4,)), [1], 65, [], warmup_calls=1, repeats=1)
    assert point.decode_step_s == pytest.approx((1.44 - 0.5) / 64)
    peer = FakePeer(clock, noisy_calls=tuple(range(1, 50, 2)))
    peer.slow_s = 2.0
    with pytest.raises(ValueError, match="lost in noise"):
        measure_decode_peer(peer, [1], 2, [], warmup_calls=1, repeats=1)
    assert peer.calls == 2 + 2 * 3  # warm-up round + 3 timed rounds


def test_a_graph_break_under_fullgraph_compiles_again_without_it_and_says_so(clock) -> None:
    point = measure_decode_peer(FakePeer(clock, graph_break=True), [1], 3, [7, 7, 7], warmup_calls=1, repeats=1)
    assert point.compiled and not point.fullgraph and point.decode_step_s == pytest.approx(0.01)


def test_another_error_of_a_peer_is_not_swallowed(clock) -> None:
    peer = FakePeer(clock, graph_break=True)
    peer.compiled = False  # not compiled: a graph break cannot be the cause, so nothing is retried
    with pytest.raises(torch._dynamo.exc.Unsupported):
        measure_decode_peer(peer, [1], 3, [7, 7, 7], warmup_calls=1, repeats=1)


def test_decode_step_arithmetic_and_its_refusals() -> None:
    assert decode_step_s(0.5, 1.14, 65) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="new_tokens must be >= 2"):
        decode_step_s(0.5, 0.6, 1)
    with pytest.raises(ValueError, match="lost in noise"):
        decode_step_s(0.5, 0.5, 8)
    assert agree_prefix([1, 2, 3, 4], [1, 2, 9, 4]) == 2 and agree_prefix([], [1]) == 0


def _decode_point(tokens_per_s: float, compiled: bool) -> DecodePeerPoint:
    step = 1 / tokens_per_s
    return DecodePeerPoint(compiled, compiled, 512, 65, 30.0, 0.02, step, tokens_per_s, step * 1e3, 65)


def _preset_result(peers: PeerResults, b1_tokens_per_s: float | None = 400.0) -> PresetResult:
    decode = [DecodePoint(8, 544.0, 0.01, 800.0, 1.0, 1.0, None, None, None, 1.0, 0.0, 0.1, 4096)]
    if b1_tokens_per_s is not None:
        decode.insert(0, DecodePoint(1, 544.0, 1 / b1_tokens_per_s, b1_tokens_per_s, 1.0, 1.0, None, None, None,
                                     1.0, 0.0, 0.02, 512))
    return PresetResult("r1-distill-qwen-1.5b", "NVIDIA H100 80GB HBM3", 3.35e12, 5.0, 2.0, 28672, 100_000, 256,
                        decode, OfflinePoint(256, 1000, 144_000, 10.0, 14_400.0, 14_500.0), None, peers=peers)


def test_peer_metrics_and_ratios_by_hand() -> None:
    peers = PeerResults(_decode_point(200.0, True), _decode_point(320.0, True), CBOfflinePoint(256, 144_000, 48.0,
                        3000.0, 40.0), {})
    m = benchmark_metrics([_preset_result(peers)])
    p = "r1_distill_qwen_1_5b"
    assert m[f"{p}_hf_static_decode_b1_tokens_per_s"] == 200.0
    assert m[f"{p}_gptfast_decode_b1_ms_per_token"] == pytest.approx(3.125)
    assert m[f"{p}_decode_b1_speedup_vs_hf_static"] == pytest.approx(2.0)
    assert m[f"{p}_decode_b1_speedup_vs_gptfast"] == pytest.approx(1.25)
    assert m[f"{p}_decode_b1_speedup_vs_fastest_compiled"] == pytest.approx(1.25)  # 400 / max(200, 320)
    assert m[f"{p}_hf_cb_offline_output_tokens_per_s"] == 3000.0 and m[f"{p}_hf_cb_startup_s"] == 40.0
    assert m[f"{p}_offline_speedup_vs_hf_cb"] == pytest.approx(4.8)  # 14400 / 3000
    assert m[f"{p}_gptfast_compile_warmup_s"] == 30.0 and m[f"{p}_peer_failures"] == 0.0
    # `<prefix>_decode_b{B}_step_s` is the engine sweep the scaler reads: the peers' metrics must not look like one.
    profile = profile_from_roofline_record({"params": {"PRESETS": ["r1-distill-qwen-1.5b"]}, "metrics": m})
    assert profile.batch_sizes == (1, 8)


def test_a_missing_side_leaves_its_ratio_out_rather_than_filling_it_in() -> None:
    eager = PeerResults(_decode_point(200.0, False), None, None, {"gptfast": "OutOfMemoryError: ...",
                                                                  "hf_cb": "RuntimeError: MLA"})
    m = peer_metrics("x", eager, 400.0, 14_400.0)
    assert "x_decode_b1_speedup_vs_fastest_compiled" not in m  # the one decode peer ran eager
    assert "x_offline_speedup_vs_hf_cb" not in m and "x_gptfast_decode_b1_tokens_per_s" not in m
    assert m["x_decode_b1_speedup_vs_hf_static"] == pytest.approx(2.0) and m["x_peer_failures"] == 2.0
    assert "x_decode_b1_speedup_vs_hf_static" not in peer_metrics("x", eager, None, 14_400.0)  # no batch-1 point


def test_a_result_with_peers_round_trips_and_shows_its_failures() -> None:
    from dataclasses import asdict

    peers = PeerResults(_decode_point(200.0, True), None, CBOfflinePoint(256, 144_000, 48.0, 3000.0, 40.0),
                        {"gptfast": "Unsupported: graph break"})
    result = _preset_result(peers)
    assert preset_result_from_dict(asdict(result)) == result
    assert peer_failures([result]) == {"r1-distill-qwen-1.5b": {"gptfast": "Unsupported: graph break"}}
    rows = {row.system: row for row in peer_rows([result])}
    assert rows["gptfast"].decode_b1_tokens_per_s is None and rows["gptfast"].note == "Unsupported: graph break"
    assert rows["engine"].decode_b1_ms_per_token == pytest.approx(2.5) and rows["hf_static"].note == ""
    assert rows["hf_cb"].offline_output_tokens_per_s == 3000.0


# ---- bad input ---------------------------------------------------------------------------------------------------
def test_bad_peer_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="warmup_calls and repeats must be >= 1"):
        PeerConfig(warmup_calls=0)
    with pytest.raises(ValueError, match=r"unknown continuous batching sizes \['blocks'\]"):
        PeerConfig.from_params(True, 1, 1, {"blocks": 8})
    with pytest.raises(ValueError, match="integer >= 1"):
        PeerConfig.from_params(True, 1, 1, {"num_blocks": 0})
    with pytest.raises(ValueError, match="warmup_calls and repeats must be >= 1"):
        measure_decode_peer(FakePeer(FakeClock()), [1], 4, [], warmup_calls=1, repeats=0)


def test_bad_peer_inputs_are_refused_before_anything_runs() -> None:
    model = object()  # never reached
    with pytest.raises(ValueError, match=">= 2 new tokens"):
        measure_peers(model, [1, 2], 1, [], PeerConfig())
    with pytest.raises(ValueError, match="a prompt of at least one token"):
        measure_peers(model, [], 4, [], PeerConfig())
    with pytest.raises(ValueError, match="max_cache_len must be >= 2"):
        static_cache(torch.nn.Linear(1, 1), 1)
    with pytest.raises(ValueError, match="the offline set is empty"):
        run_offline(object(), [])


class ShortManager:
    """A manager that ends every request one token short, then dies."""

    def __init__(self, dies: bool = False) -> None:
        self.outputs, self.dies = [], dies

    def add_request(self, ids, request_id, max_new_tokens, eos_token_id):
        self.outputs.append(type("Out", (), {"request_id": request_id, "error": None, "is_finished": lambda s: True,
                                             "generated_tokens": [3] * (max_new_tokens - 1)})())

    def get_result(self, timeout):
        return None if self.dies or not self.outputs else self.outputs.pop(0)

    def is_running(self) -> bool:
        return not self.dies


def test_continuous_batching_that_ends_short_or_dies_raises_rather_than_reporting_a_rate() -> None:
    requests = [OfflineRequest([1, 2], 3), OfflineRequest([4], 2)]
    with pytest.raises(RuntimeError, match="other lengths than asked"):
        run_offline(ShortManager(), requests)
    with pytest.raises(RuntimeError, match="stopped with 2 requests unfinished"):
        run_offline(ShortManager(dies=True), requests)
