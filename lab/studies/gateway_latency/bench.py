"""The gateway's added latency: the same request straight to an upstream and through `lab gateway`, one run.

Contract: `run_latency_bench(LatencyBenchConfig(...))` starts a minimal upstream
(`lab.studies.gateway_latency.upstream`, or a real `lab serve` replica when `upstream="replica"`) and a real
`lab gateway` process in front of it (one tier with limits far above the offered load, so nothing
is shed or queued: what is measured is the request path itself), then, for `rounds` rounds, fires
`rate_per_s` requests per second for `duration_s` (after `warmup_s` unrecorded) straight at the
upstream and then through the gateway with `lab.studies.gateway_latency.load` (open loop, keep-alive).
It returns a `LatencyBenchResult`: `LatencyStats` of both paths, the difference (`added_p50_ms`,
`added_p99_ms`: differences of the percentiles, not percentiles of per-request differences, which
an open-loop run cannot pair), the CPU milliseconds each process (client, gateway, upstream) used per
request during each path's phases (`gateway_gateway`: the gateway's own cost per request), and
the server, event loop and HTTP parser the gateway runs on (`server_stack`). The client, gateway and upstream
share this machine's cores; the CPU columns show how much each took. `latency_stats(samples_s)`
is the statistic (numpy's linear-interpolation percentiles), unit-tested on hand-made samples.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lab.errors import LabError
from lab.gateway.auth import hash_key
from lab.gateway.config import ProxyConfig
from lab.studies.gateway_latency.load import LoadSamples, completion_request, fire
from lab.studies.launcher import LocalService, LocalServiceConfig

BENCH_KEY = "sk-latency-bench"  # a throwaway key of the bench's own gateway; never a real one
UNLIMITED = {"requests_per_s": 1e6, "request_burst": 1e6, "tokens_per_s": 1e9, "token_burst": 1e9}


@dataclass(frozen=True)
class LatencyStats:
    count: int
    mean_ms: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def latency_stats(samples_s: list[float] | tuple[float, ...]) -> LatencyStats:
    """Count, mean, P50, P99 (linear interpolation) and max of latencies in seconds, as milliseconds."""
    if not len(samples_s):
        raise LabError("no latency samples: every request failed")
    ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
    return LatencyStats(len(ms), float(ms.mean()), float(np.percentile(ms, 50)), float(np.percentile(ms, 99)),
                        float(ms.max()))


@dataclass(frozen=True)
class LatencyBenchConfig:
    rate_per_s: float = 500.0  # offered requests per second, on each path
    duration_s: float = 10.0  # measured seconds per path and round
    warmup_s: float = 1.0  # unrecorded seconds before each measured phase
    rounds: int = 2  # direct, gateway, direct, gateway, ...: drift hits both paths alike
    upstream: str = "minimal"  # minimal (lab.studies.gateway_latency.upstream) | replica (lab serve --model tiny)
    max_tokens: int = 1  # of each request (the minimal upstream answers one token regardless)

    def __post_init__(self) -> None:
        if self.upstream not in ("minimal", "replica"):
            raise LabError(f"upstream is minimal or replica, got {self.upstream!r}")
        if self.rounds < 1 or not self.rate_per_s > 0 or not self.duration_s > 0:
            raise LabError("rounds >= 1, rate_per_s > 0 and duration_s > 0 are required")


@dataclass(frozen=True)
class LatencyBenchResult:
    config: LatencyBenchConfig
    direct: LatencyStats
    gateway: LatencyStats
    non_200: int  # responses with another status, both paths (should be 0)
    failures: int  # connection errors, both paths
    max_send_lag_ms: float  # worst lateness of the client against its schedule
    cpu_ms_per_request: dict[str, float]  # "<path>_<process>" -> CPU ms per request of that path's phases
    server_stack: dict[str, str]  # the gateway's server, event loop and HTTP parser

    @property
    def added_p50_ms(self) -> float:
        return self.gateway.p50_ms - self.direct.p50_ms

    @property
    def added_p99_ms(self) -> float:
        return self.gateway.p99_ms - self.direct.p99_ms

    def metrics(self) -> dict[str, float]:
        flat = {f"{path}_{k}": float(v) for path in ("direct", "gateway")
                for k, v in asdict(getattr(self, path)).items()}
        flat.update(added_p50_ms=self.added_p50_ms, added_p99_ms=self.added_p99_ms, non_200=float(self.non_200),
                    failures=float(self.failures), max_send_lag_ms=self.max_send_lag_ms,
                    **{f"cpu_ms_per_request_{k}": v for k, v in self.cpu_ms_per_request.items()})
        return flat

    def params(self) -> dict[str, Any]:
        upstream = ("lab.studies.gateway_latency.upstream (asyncio + httptools, fixed one-token JSON)"
                    if self.config.upstream == "minimal" else "lab serve --model tiny (CPU)")
        return {**asdict(self.config), "upstream_server": upstream, "cpu_count": os.cpu_count(),
                "client": "lab.studies.gateway_latency.load (open loop, keep-alive, httptools)",
                **{f"gateway_{k}": v for k, v in self.server_stack.items()},
                "gateway_upstream_client": ProxyConfig().client, "gateway_gc_freeze": True}  # lab gateway's defaults


def server_stack(server: str = "lab") -> dict[str, str]:
    """What `lab gateway --server SERVER` runs on here (`lab`, the default, or `uvicorn` with loop and
    http "auto"): uvloop and httptools when installed."""
    if server == "lab":
        import importlib.util

        loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
        return {"server": "lab.gateway.http_server", "loop": loop, "http": "httptools"}
    import uvicorn.config

    config = uvicorn.config.Config(app="lab.gateway.app:build_app", loop="auto", http="auto")
    config.load()
    return {"server": "uvicorn", "loop": config.get_loop_factory().__module__.split(".")[0],
            "http": config.http_protocol_class.__name__}


def _gateway_config() -> dict[str, Any]:
    tier = {"name": "bench", "priority": 0, "max_concurrency": 100_000, "timeout_ms": 60_000,
            "tier_limit": UNLIMITED, "key_limit": UNLIMITED}
    return {"tiers": [tier], "keys": [{"name": "bench", "tier": "bench", "hash": hash_key(BENCH_KEY)}],
            "queue": {"max_inflight": 100_000}}


def _cpu_s(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run_latency_bench(config: LatencyBenchConfig) -> LatencyBenchResult:
    minimal = (sys.executable, "-m", "lab.studies.gateway_latency.upstream", "--port", "{port}")
    service_config = LocalServiceConfig(gateway_config=_gateway_config(), ready_timeout_s=180.0,
                                        replica_command=minimal if config.upstream == "minimal" else None)
    body = (b'{"model": "%s", "prompt": "ping", "max_tokens": %d, "temperature": 0}'
            % (b"echo" if config.upstream == "minimal" else b"tiny", config.max_tokens))
    with LocalService(service_config) as service:
        targets = {}
        for path, url, key in (("direct", service.replica_url, None), ("gateway", service.gateway_url, BENCH_KEY)):
            host, port = url.removeprefix("http://").split(":")
            targets[path] = (host, int(port), completion_request(host, int(port), key, body))
        pids = {"client": os.getpid(), "upstream": service.pids[0], "gateway": service.pids[1]}
        samples: dict[str, list[LoadSamples]] = {"direct": [], "gateway": []}
        cpu_s = {f"{path}_{name}": 0.0 for path in targets for name in pids}  # e.g. gateway_client

        async def phases() -> None:
            for _ in range(config.rounds):
                for path, (host, port, request) in targets.items():
                    await fire(host, port, request, config.rate_per_s, config.warmup_s)
                    before = {name: _cpu_s(pid) for name, pid in pids.items()}
                    samples[path].append(await fire(host, port, request, config.rate_per_s, config.duration_s))
                    for name, pid in pids.items():
                        cpu_s[f"{path}_{name}"] += _cpu_s(pid) - before[name]

        _run_loop(phases())
    every = [s for runs in samples.values() for s in runs]
    measured = {path: max(1, sum(len(s.latencies_s) for s in runs)) for path, runs in samples.items()}
    return LatencyBenchResult(
        config=config,
        direct=latency_stats([x for s in samples["direct"] for x in s.latencies_s]),
        gateway=latency_stats([x for s in samples["gateway"] for x in s.latencies_s]),
        non_200=sum(status != 200 for s in every for status in s.statuses),
        failures=sum(s.failures for s in every),
        max_send_lag_ms=max((max(s.send_lag_s, default=0.0) for s in every), default=0.0) * 1000.0,
        cpu_ms_per_request={name: seconds * 1000.0 / measured[name.split("_")[0]] for name, seconds in cpu_s.items()},
        server_stack=server_stack(),
    )


def _run_loop(coroutine: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def latency_record(results: list[LatencyBenchResult], target_rate_per_s: float) -> Any:
    """One `ResultRecord` (experiment `gateway_latency`): the metrics at `target_rate_per_s` on top,
    one child record per rate measured, and the environment (device, packages, git sha)."""
    from lab.track import child_records, collect_environment
    from lab.track.record import ResultRecord

    (target,) = [r for r in results if r.config.rate_per_s == target_rate_per_s]
    points = [({**r.params()}, r.metrics()) for r in results]
    params = {**target.params(), "rates_per_s": [r.config.rate_per_s for r in results]}
    return ResultRecord(experiment="gateway_latency", params=params, metrics=target.metrics(), environment=collect_environment(),
                        children=child_records("gateway_latency", points))
