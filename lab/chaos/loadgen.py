"""A background load that runs through a drill and records every request it sent and how it ended.

Contract: `DrillLoad(LoadConfig(base_url, tiers=(TierLoad(name, api_key, arrivals), ...)))` is started
with `start()` (or `with`): it runs in its own thread with its own event loop, so a notebook cell, a
chaostoolkit action or a test keeps control while it sends. Each tier sends on its own schedule (an
`lab.bench.arrivals` process, e.g. `PoissonArrivals(rate)` or a `FlashSaleArrivals` burst; seeded), with
its own API key, open-loop: a slow service does not slow the sender. `stop()` stops sending, waits for
every request in flight to end (each ends by itself within `request_timeout_s`, so none is left
unaccounted) and returns a `DrillResult` (`lab.chaos.drill_report`). The load also stops sending by
itself after `max_duration_s`. `rows()` is a copy of the rows so far, for a live plot. More than
`max_in_flight` requests at once are not sent but counted as `skipped` (the client protecting itself,
never confused with the service's answers). Requests go to `<base_url>/v1/completions`; the model is
`model`, or the first of `GET /v1/models` (with the first tier's key).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import threading
from collections import Counter
from dataclasses import dataclass

import httpx
import numpy as np

from lab.bench.arrivals import ArrivalProcess, PoissonArrivals
from lab.chaos.drill_client import DrillRequest, completion_body, send_drill_request
from lab.chaos.drill_report import DrillResult
from lab.chaos.records import Instant
from lab.errors import LabError

STOP_POLL_S = 0.05  # how soon stop() reaches the send loop


@dataclass(frozen=True)
class TierLoad:
    name: str
    api_key: str | None
    arrivals: ArrivalProcess  # e.g. PoissonArrivals(2.0); its rate is this tier's requests per second

    @classmethod
    def poisson(cls, name: str, api_key: str | None, rate_per_s: float) -> TierLoad:
        return cls(name, api_key, PoissonArrivals(rate_per_s))

    @property
    def peak_rate_per_s(self) -> float:
        rate = float(getattr(self.arrivals, "request_rate_per_s", math.nan))
        return rate * float(getattr(self.arrivals, "factor", 1.0))


@dataclass(frozen=True)
class LoadConfig:
    base_url: str  # the gateway (or a replica)
    tiers: tuple[TierLoad, ...]
    model: str | None = None  # None: the first model of GET /v1/models
    prompt: str = "Describe the weather in one sentence."
    max_tokens: int = 8
    stream: bool = True
    request_timeout_s: float = 30.0  # the client's deadline for a whole request
    connect_timeout_s: float = 5.0
    max_duration_s: float = 600.0  # the load stops sending by itself after this
    max_in_flight: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", tuple(self.tiers))
        if not self.tiers:
            raise LabError("a drill load needs at least one tier")
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise LabError(f"tier names must be unique, got {', '.join(names)}")
        for tier in self.tiers:
            if not (tier.peak_rate_per_s > 0 and math.isfinite(tier.peak_rate_per_s)):
                raise LabError(f"tier {tier.name!r}: a drill needs a finite request rate > 0")
        for name in ("request_timeout_s", "connect_timeout_s", "max_duration_s"):
            if not getattr(self, name) > 0:
                raise LabError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_tokens < 1 or self.max_in_flight < 1:
            raise LabError("max_tokens and max_in_flight must be >= 1")

    def describe(self) -> dict:
        """Params for a record (API keys left out: they are secrets)."""
        return {"base_url": self.base_url, "model": self.model, "max_tokens": self.max_tokens, "stream": self.stream,
                "request_timeout_s": self.request_timeout_s, "max_duration_s": self.max_duration_s, "seed": self.seed,
                "tiers": {t.name: t.arrivals.describe() for t in self.tiers}}


def schedule(config: LoadConfig) -> list[tuple[float, str]]:
    """(offset_s, tier) of every request the load may send, in time order, within max_duration_s."""
    merged = []
    for stream, tier in enumerate(config.tiers):
        rng = np.random.default_rng([config.seed, stream])
        count = int(math.ceil(tier.peak_rate_per_s * config.max_duration_s * 1.5)) + 16
        times = tier.arrivals.arrival_times_s(count, rng)
        merged.append([(float(t), tier.name) for t in times if t < config.max_duration_s])
    return list(heapq.merge(*merged))


class DrillLoad:
    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self._rows: list[DrillRequest] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._sending = threading.Event()  # the model is known and the first request may go
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.skipped: Counter[str] = Counter()
        self.model: str | None = config.model
        self.started: Instant | None = None
        self.stopped: Instant | None = None

    def __enter__(self) -> DrillLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None and not self._done.is_set():
            self.stop()

    def start(self) -> DrillLoad:
        if self._thread is not None:
            raise LabError("this DrillLoad was started already; make a new one")
        self._thread = threading.Thread(target=self._work, name="lab-chaos-load", daemon=True)
        self._thread.start()
        # Fail fast (a wrong URL or key while finding the model) rather than at stop().
        while not (self._sending.wait(STOP_POLL_S) or self._done.is_set()):
            pass
        if self._error is not None:
            raise self._error
        return self

    def rows(self) -> list[DrillRequest]:
        with self._lock:
            return list(self._rows)

    def stop(self) -> DrillResult:
        if self._thread is None:
            raise LabError("this DrillLoad was never started")
        self._stop.set()
        # Every request has a deadline, so the wait is bounded: the slowest in flight ends within it.
        self._done.wait(self.config.request_timeout_s + self.config.connect_timeout_s + 10.0)
        if self._error is not None:
            raise self._error
        rows = sorted(self.rows(), key=lambda r: r.index)
        return DrillResult(rows=tuple(rows), started=self.started, stopped=self.stopped or Instant.now(),
                           skipped=dict(self.skipped), params={**self.config.describe(), "model": self.model},
                           tiers=tuple(t.name for t in self.config.tiers))

    def _work(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # noqa: BLE001 - re-raised by stop() in the caller's thread
            self._error = error
        finally:
            self._done.set()

    async def _main(self) -> None:
        config = self.config
        keys = {t.name: t.api_key for t in config.tiers}
        timeout = httpx.Timeout(config.request_timeout_s, connect=config.connect_timeout_s)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as http:
            if self.model is None:
                self.model = await _discover_model(http, config.base_url, config.tiers[0].api_key)
            body = completion_body(self.model, config.prompt, config.max_tokens, config.stream)
            url = f"{config.base_url.rstrip('/')}/v1/completions"
            in_flight: set[asyncio.Task] = set()
            # `started` is the schedule's zero: offsets (a flash sale's burst marks) count from here.
            self.started = Instant.now()
            loop_start = asyncio.get_running_loop().time()
            self._sending.set()
            for index, (offset_s, tier) in enumerate(schedule(config)):
                while not self._stop.is_set():
                    remaining = loop_start + offset_s - asyncio.get_running_loop().time()
                    if remaining <= 0:
                        break
                    await asyncio.sleep(min(remaining, STOP_POLL_S))
                if self._stop.is_set():
                    break
                if len(in_flight) >= config.max_in_flight:
                    self.skipped[tier] += 1
                    continue
                task = asyncio.create_task(send_drill_request(http, url, body, tier=tier, api_key=keys[tier],
                                                              index=index, timeout_s=config.request_timeout_s))
                in_flight.add(task)
                task.add_done_callback(self._record(in_flight))
            self.stopped = Instant.now()
            if in_flight:
                await asyncio.wait(set(in_flight))

    def _record(self, in_flight: set[asyncio.Task]):
        def done(task: asyncio.Task) -> None:
            in_flight.discard(task)
            with self._lock:
                self._rows.append(task.result())
        return done


async def _discover_model(http: httpx.AsyncClient, base_url: str, api_key: str | None) -> str:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = await http.get(f"{base_url.rstrip('/')}/v1/models", headers=headers)
        response.raise_for_status()
        return str(response.json()["data"][0]["id"])
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as error:
        raise LabError(f"could not list models at {base_url}/v1/models ({error}); pass LoadConfig.model") from None
