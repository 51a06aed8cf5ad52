"""Hot reload under a steady load: one replica, a bounded Poisson load, reloads at fixed offsets into it.

Contract: `run_study(config, log_dir) -> HotReloadRun` (the logic of notebook `05_hot_reload`):
1. Makes the corrupt source first (`sources.make_corrupt_source`, in a scratch folder removed at the end), so
   writing a checkpoint never competes with serving.
2. Starts one `lab serve` replica with a fresh admin key (`--admin-key-hash`; the key lives in memory only),
   sends it one completion, notes its version, then runs the load (`lab.bench`, Poisson arrivals,
   `max_concurrency` in flight at most) in a background thread.
3. At each step's offset from the load's start, one `POST /admin/reload` (`ReplicaAdmin.reload`), one after
   the other; a step due while an earlier one still runs goes late (its own `sent_at` says when). A drain
   ends with a `promoted` record: before the next step, and at the end, the study waits for it
   (`drain_wait_s`), since the replica refuses a reload while a drain is in progress. Right after the corrupt
   step: one completion and `/v1/models`' version again (`RefusalCheck`): the refused reload must leave the
   old weights serving.
4. Waits for the load to finish, reads `GET /admin/reload` and the replica's `lab:weight_*` metrics, stops it.
`HotReloadRun` keeps all of it: the load's `BenchResult` (its `started_at` lines requests up with the
replica's records), each step's `ReloadOutcome` and its `ReloadWindow` (`windows.reload_window`: from the
reload's start to its switch, or for a drain to its promotion, or for a refusal the client's POST to the
answer, widened by `config.window_s`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lab.bench.arrivals import PoissonArrivals
from lab.bench.prompts import PromptBuilder
from lab.bench.runner import BenchConfig, BenchResult, run_benchmark
from lab.bench.workloads import RandomWorkload
from lab.errors import LabError
from lab.studies.hot_reload.admin import Completion, ReloadCall, ReplicaAdmin
from lab.studies.hot_reload.config import ReloadStep, StudyConfig
from lab.studies.hot_reload.sources import CorruptSource, make_corrupt_source
from lab.studies.hot_reload.windows import ReloadWindow, reload_window
from lab.studies.launcher import ReplicaSpec, serve_replica

LOAD_JOIN_MARGIN_S = 60.0  # beyond the last arrival plus one request's timeout, the load is stuck


@dataclass(frozen=True)
class ReloadOutcome:
    step: ReloadStep
    source: str  # what the POST asked for
    call: ReloadCall
    promoted: dict[str, Any] | None = None  # a drain's end (the replica's `promoted` record), once seen
    late_s: float = 0.0  # sent this long after its offset (an earlier reload or drain still ran)

    @property
    def started_at(self) -> float:
        """When the replica began this reload (its record), else when the client asked."""
        return float(self.call.record.get("started_at", self.call.sent_at))

    @property
    def switched_at(self) -> float | None:
        """When the new weights took over everything: a switch's `at`, a drain's promotion; None if never."""
        if self.call.outcome == "switched":
            return float(self.call.record["at"])
        return float(self.promoted["at"]) if self.promoted else None

    @property
    def pause_ms(self) -> float | None:
        """The step loop's stall at the switch (`pause_ms` of the switched or promoted record)."""
        record = self.promoted if self.step.kind == "drain" else self.call.record
        return float(record["pause_ms"]) if record and "pause_ms" in record else None

    def window(self, window_s: float) -> ReloadWindow:
        end = self.switched_at
        if end is None:  # refused, failed, or a drain never promoted: as long as the client waited
            end = max(self.call.answered_at, float(self.call.record.get("at", self.call.answered_at)))
        return reload_window(self.started_at, end, window_s, self.step.label)


@dataclass(frozen=True)
class RefusalCheck:
    version_before: tuple[str, int]  # /v1/models just before the corrupt reload
    completion: Completion  # right after it
    version_after: tuple[str, int]

    @property
    def kept_serving(self) -> bool:
        return self.completion.ok and self.version_before == self.version_after


@dataclass(frozen=True)
class HotReloadRun:
    config: StudyConfig
    corrupt: CorruptSource | None
    ready_after_s: float  # replica start to /ready
    initial_version: tuple[str, int]
    load: BenchResult
    reloads: tuple[ReloadOutcome, ...]
    refusal: RefusalCheck | None
    final_version: tuple[str, int]
    recent: tuple[dict[str, Any], ...]  # GET /admin/reload's records at the end
    weight_metrics: tuple[str, ...]  # the replica's `lab:weight_*` lines of /metrics at the end

    def windows(self) -> list[ReloadWindow]:
        return [r.window(self.config.window_s) for r in self.reloads]


def replica_spec(config: StudyConfig, admin_key: str) -> ReplicaSpec:
    key_hash = "sha256:" + hashlib.sha256(admin_key.encode()).hexdigest()
    return ReplicaSpec("lab", model=config.model, device=config.device, hf_overrides=dict(config.hf_overrides),
                       log_level="warning", extra_flags=("--admin-key-hash", key_hash, *config.serve_flags))


def bench_config(config: StudyConfig, url: str) -> BenchConfig:
    workload = RandomWorkload(config.num_requests, config.input_tokens, config.output_tokens)
    # No warm-up inside the load: the study sends its own first, so the load starts when its thread does.
    return BenchConfig(base_url=url, model=config.model, workload=workload,
                       arrivals=PoissonArrivals(config.request_rate_per_s), max_concurrency=config.max_concurrency,
                       seed=config.seed, request_timeout_s=config.request_timeout_s, num_warmups=0,
                       show_progress=False)


class _BackgroundLoad:
    """`run_benchmark` on a thread of its own; `join` returns its result or raises its error."""

    def __init__(self, config: BenchConfig, prompts: PromptBuilder) -> None:
        self._outcome: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, args=(config, prompts), name="hot-reload-load", daemon=True)

    def _run(self, config: BenchConfig, prompts: PromptBuilder) -> None:
        try:
            self._outcome["result"] = run_benchmark(config, prompts=prompts)
        except BaseException as error:  # noqa: BLE001 - re-raised by join
            self._outcome["error"] = error

    def start(self) -> float:
        started = time.time()
        self._thread.start()
        return started

    def join(self, timeout_s: float) -> BenchResult:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise LabError(f"the load did not finish within {timeout_s:.0f} s")
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["result"]


def _sleep_until(wall: float) -> float:
    """Sleeps until the wall clock reads `wall`; returns how late that already was (0 when on time)."""
    remaining = wall - time.time()
    if remaining > 0:
        time.sleep(remaining)
    return max(0.0, -remaining)


def _weight_metrics(url: str) -> tuple[str, ...]:
    text = httpx.get(f"{url}/metrics", timeout=30.0, trust_env=False).text
    return tuple(line for line in text.splitlines() if line.startswith("lab:weight"))


def run_study(config: StudyConfig, log_dir: Path | None = None) -> HotReloadRun:
    admin_key = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="lab-hot-reload-") as scratch:
        corrupt = (make_corrupt_source(config.corrupt_source, config.model, config.hf_overrides, Path(scratch))
                   if any(s.kind == "corrupt" for s in config.steps) else None)
        with serve_replica(replica_spec(config, admin_key), ready_timeout_s=config.ready_timeout_s,
                           log_dir=log_dir) as replica:
            admin = ReplicaAdmin(replica.url, admin_key)
            first = admin.complete(config.model)
            if not first.ok:
                raise LabError(f"the replica at {replica.url} did not answer a first completion: {first.error}")
            initial = admin.served_version()
            load = _BackgroundLoad(bench_config(config, replica.url), PromptBuilder.deepseek(config.vocab_size))
            load_start = load.start()
            reloads, refusal = _run_steps(config, admin, corrupt, load_start)
            result = load.join(config.load_duration_s * 2 + config.request_timeout_s + LOAD_JOIN_MARGIN_S)
            final = admin.served_version()
            recent = tuple(admin.status()["recent"])
            weight_metrics = _weight_metrics(replica.url)
            ready_after_s = replica.ready_after_s
    return HotReloadRun(config, corrupt, ready_after_s, initial, result, tuple(reloads), refusal, final, recent,
                        weight_metrics)


def _run_steps(config: StudyConfig, admin: ReplicaAdmin, corrupt: CorruptSource | None,
               load_start: float) -> tuple[list[ReloadOutcome], RefusalCheck | None]:
    reloads: list[ReloadOutcome] = []
    refusal = None
    for step in config.steps:
        _await_drain(config, admin, reloads)
        late_s = _sleep_until(load_start + step.offset_s)
        if step.kind == "corrupt":
            before = admin.served_version()
            source = str(corrupt.path)
            call = admin.reload(source, None, step.policy, config.reload_timeout_s)
            refusal = RefusalCheck(before, admin.complete(config.model), admin.served_version())
        else:
            source = config.model
            call = admin.reload(source, step.seed, step.policy, config.reload_timeout_s)
        reloads.append(ReloadOutcome(step, source, call, late_s=late_s))
    _await_drain(config, admin, reloads)
    return reloads, refusal


def _await_drain(config: StudyConfig, admin: ReplicaAdmin, reloads: list[ReloadOutcome]) -> None:
    """If the latest reload is a drain still draining, wait for its promotion (the replica takes no reload before)."""
    if not reloads or reloads[-1].call.outcome != "draining" or reloads[-1].promoted is not None:
        return
    promoted = admin.wait_promoted(int(reloads[-1].call.record["generation"]), config.drain_wait_s)
    reloads[-1] = dataclasses.replace(reloads[-1], promoted=promoted)
