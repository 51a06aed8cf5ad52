"""`/metrics`: Prometheus text with vLLM's names; counters move by exactly what the requests did."""
from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import MODEL

VLLM_NAMES = {
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds", "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds", "vllm:prompt_tokens", "vllm:generation_tokens", "vllm:num_preemptions",
}


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of every sample on /metrics."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted({"model_name": MODEL, **labels}.items()))), 0.0)


def test_metrics_parse_and_carry_vllm_names_with_model_label(server):
    response = httpx.get(f"{server.url}/metrics", timeout=10)
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert VLLM_NAMES <= set(families)
    for name in VLLM_NAMES:
        assert all(s.labels.get("model_name") == MODEL for s in families[name].samples), name


def test_counters_move_by_what_the_requests_did(server, tokenizer):
    prompts = ["one two three", "GPUs and TPUs and more", "hello"]
    max_tokens = 5
    before = scrape(server.url)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for i, prompt in enumerate(prompts):
            body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
                    "stream": i == 0}  # one streamed: the same accounting either way
            assert http.post("/v1/completions", json=body).status_code == 200
        assert http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 0}).status_code == 400
    after = scrape(server.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    n = len(prompts)
    assert delta("vllm:prompt_tokens_total") == sum(len(tokenizer.encode(p)) for p in prompts)
    assert delta("vllm:generation_tokens_total") == n * max_tokens
    assert delta("vllm:request_success_total", finished_reason="length") == n  # the 400 is not counted
    assert delta("vllm:time_to_first_token_seconds_count") == n
    assert delta("vllm:inter_token_latency_seconds_count") == n * (max_tokens - 1)
    assert delta("vllm:e2e_request_latency_seconds_count") == n
    # One request at a time, each max_tokens steps: a gap ends each of its steps after the first; none spans
    # the idle time between two requests. With async scheduling the loop may already have launched one more step
    # when a request's last token comes out (seen once in CI: 13 of 12): at most one more gap per request.
    gaps = delta("lab:engine_step_gap_seconds_count")
    assert n * (max_tokens - 1) <= gaps <= n * max_tokens
    assert delta("lab:engine_step_gap_seconds_bucket", le="+Inf") == gaps
    # The max is since the engine started (this replica is shared with other test files): at least this window's mean
    assert value(after, "lab:engine_step_gap_max_seconds") >= delta("lab:engine_step_gap_seconds_sum") / gaps > 0
    assert delta("vllm:request_queue_time_seconds_count") == n
    # Latencies are real durations: the e2e sum covers at least the TTFT and ITL sums.
    e2e = delta("vllm:e2e_request_latency_seconds_sum")
    assert 0 < delta("vllm:time_to_first_token_seconds_sum") + delta("vllm:inter_token_latency_seconds_sum") <= e2e
    assert value(after, "vllm:num_requests_running") == 0 and value(after, "vllm:kv_cache_usage_perc") == 0
