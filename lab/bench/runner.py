"""Run one benchmark: plan the requests, send them on schedule, measure, summarise.

Contract: `run_benchmark(config) -> BenchResult` (blocking; usable from a script, the CLI or a
Jupyter cell, whose own event loop keeps running: the benchmark's loop lives in a worker thread).
1. Plans every request (`lab.bench.workloads.plan_requests`) from the seed, before sending.
2. Finds the model (`GET /v1/models`, first id) unless `config.model` names it, and sends
   `num_warmups` requests (the first prompt, at most 4 output tokens; not measured); a failing warm-up raises `LabError` with the reason,
   as vLLM's initial test run does, so a wrong URL or key fails fast.
3. Sends each request at its planned arrival time; with `max_concurrency` at most that many are
   in flight and the rest wait (their TTFT counts from the send, as in vLLM). Samples host and
   GPU load (`lab.gpu.telemetry`) meanwhile.
4. Ctrl-C (KeyboardInterrupt in the calling thread) or `stop.set()` stops the run cleanly:
   in-flight requests are cancelled and kept as `cancelled` rows, unsent ones are dropped, the
   duration ends at the stop, and the result is marked `partial`.
The `BenchResult` holds the config, every request's `RequestResult`, overall and per-tier
`BenchMetrics`, the telemetry, the `partial` flag and `started_at` (the wall clock at the start
`sent_s` counts from); its flat metrics carry the telemetry over the
whole run (`telemetry.*`) and over the steady part without ramp-up and drain (`telemetry.steady.*`,
`lab.bench.utilization`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from lab.bench.arrivals import ArrivalProcess
from lab.bench.client import RequestResult, cancelled_result, send_completion
from lab.bench.metrics import BenchMetrics, Slo, compute_metrics, metrics_by_tier
from lab.bench.prompts import PromptBuilder
from lab.bench.tiers import TierMix, single_tier
from lab.bench.utilization import steady_summary, steady_window
from lab.bench.workloads import PlannedRequest, RandomWorkload, Workload, plan_requests
from lab.errors import LabError
from lab.gpu.telemetry import TelemetrySampler, TelemetryTrace

STOP_POLL_S = 0.05  # how quickly a Ctrl-C reaches the send loop
WARMUP_MAX_TOKENS = 4


@dataclass(frozen=True)
class BenchConfig:
    base_url: str = "http://127.0.0.1:8000"  # the server or gateway; /v1/completions is appended
    model: str | None = None  # None: the first model of GET /v1/models
    workload: Workload = RandomWorkload(num_requests=100, input_tokens=128, output_tokens=32)
    arrivals: ArrivalProcess | None = None  # None: the workload's own (trace timestamps / all at once)
    max_concurrency: int | None = None  # None: no cap
    tiers: TierMix | None = None  # None: one tier sending `api_key`
    api_key: str | None = None
    slos: tuple[Slo, ...] = ()  # goodput SLOs
    prompt_format: str = "text"  # text | token-ids
    ignore_eos: bool = True
    seed: int = 0
    request_timeout_s: float = 600.0
    num_warmups: int = 1
    telemetry_interval_s: float = 0.5
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise LabError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.prompt_format not in ("text", "token-ids"):
            raise LabError(f"prompt_format is text or token-ids, got {self.prompt_format!r}")
        object.__setattr__(self, "slos", tuple(self.slos))

    @property
    def tier_mix(self) -> TierMix:
        return self.tiers or single_tier(self.api_key)

    @property
    def arrival_process(self) -> ArrivalProcess:
        return self.arrivals or self.workload.default_arrivals()

    @property
    def request_rate_per_s(self) -> float:
        """The offered rate of a synthetic process (inf: all at once; NaN for a trace)."""
        return float(getattr(self.arrival_process, "request_rate_per_s", math.nan))

    def describe(self) -> dict[str, Any]:
        """Params for the result record (API keys left out: they are secrets)."""
        return {
            "base_url": self.base_url, "model": self.model, **self.workload.describe(),
            **self.arrival_process.describe(), "max_concurrency": self.max_concurrency,
            "tiers": self.tier_mix.describe(), "slos_ms": {s.metric: s.limit_ms for s in self.slos},
            "prompt_format": self.prompt_format, "ignore_eos": self.ignore_eos, "seed": self.seed,
            "request_timeout_s": self.request_timeout_s, "num_warmups": self.num_warmups,
        }


@dataclass(frozen=True)
class BenchResult:
    config: BenchConfig
    model: str
    results: tuple[RequestResult, ...]
    metrics: BenchMetrics
    tier_metrics: Mapping[str, BenchMetrics]
    telemetry: TelemetryTrace | None
    partial: bool
    num_planned: int
    # The wall clock (time.time()) at the run's start, the instant `sent_s` counts from: lines a run's
    # requests up with events stamped by another process (e.g. a replica's hot-reload records).
    started_at: float = math.nan

    @property
    def request_rate_per_s(self) -> float:
        return self.config.request_rate_per_s

    def steady_telemetry(self) -> dict[str, float]:
        """Telemetry over the steady part of the run (`lab.bench.utilization`); {} without telemetry."""
        if self.telemetry is None:
            return {}
        return steady_summary(self.telemetry, steady_window(self.results))

    def flat_metrics(self) -> dict[str, float]:
        """Every metric under a record-ready name, per tier too when there are several."""
        metrics = self.metrics.flat()
        if len(self.tier_metrics) > 1:
            for tier, tier_metrics in self.tier_metrics.items():
                metrics.update(tier_metrics.flat(prefix=f"tier.{tier}."))
        if self.telemetry is not None:
            metrics.update({f"telemetry.{k}": v for k, v in self.telemetry.summary().items()})
            metrics.update({f"telemetry.steady.{k}": v for k, v in self.steady_telemetry().items()})
        metrics["partial"] = float(self.partial)
        return metrics


def run_benchmark(config: BenchConfig, *, prompts: PromptBuilder | None = None,
                  stop: threading.Event | None = None) -> BenchResult:
    """See the module docstring. `prompts` lets a sweep build the tokenizer's vocabulary once."""
    builder = prompts or PromptBuilder.deepseek()
    plan = plan_requests(config.workload, config.arrivals, config.tier_mix, builder, config.prompt_format, config.seed)
    stop = stop or threading.Event()
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def work() -> None:
        try:
            outcome["result"] = asyncio.run(_run(config, plan, stop))
        except BaseException as error:  # noqa: BLE001 - re-raised in the calling thread
            outcome["error"] = error
        finally:
            finished.set()

    threading.Thread(target=work, name="lab-bench", daemon=True).start()
    # Wait on an Event, not Thread.join: a KeyboardInterrupt inside join() can leave the thread
    # marked as stopped on Python 3.11, and the next join() would return before the result exists.
    try:
        while not finished.wait(0.1):
            pass
    except KeyboardInterrupt:
        stop.set()  # a second Ctrl-C while this wait runs aborts without a result
        finished.wait()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


async def _discover_model(http: httpx.AsyncClient, base_url: str) -> str:
    try:
        response = await http.get(f"{base_url}/v1/models")
        response.raise_for_status()
        return str(response.json()["data"][0]["id"])
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as error:
        raise LabError(f"could not list models at {base_url}/v1/models ({error}); pass the model name") from None


async def _sleep_until(deadline: float, stop: threading.Event) -> None:
    while not stop.is_set():
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return
        await asyncio.sleep(min(remaining, STOP_POLL_S))


async def _run(config: BenchConfig, plan: tuple[PlannedRequest, ...], stop: threading.Event) -> BenchResult:
    from tqdm.auto import tqdm

    base_url = config.base_url.rstrip("/")
    url = f"{base_url}/v1/completions"
    timeout = httpx.Timeout(config.request_timeout_s, connect=min(config.request_timeout_s, 30.0))
    # No pool limit: the arrival process (and max_concurrency) decides how many are in flight.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as http:
        model = config.model or await _discover_model(http, base_url)
        # Warm-ups (connections, server-side compilation) reuse the first prompt with a short output.
        warmup = dataclasses.replace(plan[0], output_tokens=min(plan[0].output_tokens, WARMUP_MAX_TOKENS))
        for _ in range(config.num_warmups):
            warm = await send_completion(http, url, warmup, model, run_start=time.perf_counter(),
                                         ignore_eos=config.ignore_eos)
            if not warm.success:
                raise LabError(f"warm-up request to {url} failed: {warm.error_kind}: {warm.error_message}")
        semaphore = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None
        progress = tqdm(total=len(plan), unit="req", desc="bench", disable=not config.show_progress)

        sent_s: dict[int, float] = {}  # kept for the rows of requests that Ctrl-C cancels

        async def send(planned: PlannedRequest) -> RequestResult:
            sent_s[planned.index] = time.perf_counter() - run_start
            return await send_completion(http, url, planned, model, run_start=run_start, ignore_eos=config.ignore_eos)

        async def one(planned: PlannedRequest) -> RequestResult:
            if semaphore is None:
                return await send(planned)
            async with semaphore:
                return await send(planned)

        tasks: dict[int, asyncio.Task[RequestResult]] = {}
        with TelemetrySampler(config.telemetry_interval_s) as sampler:
            run_start = time.perf_counter()
            started_at = time.time()
            for planned in plan:
                await _sleep_until(run_start + planned.arrival_s, stop)
                if stop.is_set():
                    break
                task = asyncio.create_task(one(planned))
                task.add_done_callback(lambda _: progress.update(1))
                tasks[planned.index] = task
            pending = {task for task in tasks.values() if not task.done()}
            while pending and not stop.is_set():
                _, pending = await asyncio.wait(pending, timeout=STOP_POLL_S)
            end = time.perf_counter()
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        progress.close()

    # Partial only if the stop cost something: a stop after the last request finished changes nothing.
    partial = len(tasks) < len(plan) or bool(pending)
    by_index = {p.index: p for p in plan}
    results = tuple(
        task.result() if task.done() and not task.cancelled() else cancelled_result(by_index[i], sent_s.get(i))
        for i, task in sorted(tasks.items())
    )
    duration_s = end - run_start
    return BenchResult(
        config=config, model=model, results=results,
        metrics=compute_metrics(results, duration_s, config.slos),
        tier_metrics=metrics_by_tier(results, duration_s, config.slos),
        telemetry=sampler.trace, partial=partial, num_planned=len(plan), started_at=started_at,
    )
