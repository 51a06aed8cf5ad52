"""Study 07, MIG partitions: one replica per slice for each layout, the same mixed load, the model beside it.

Contract: `run_study(config, log_dir) -> StudyResult`. First the calibration: one replica on the whole device (no
partition) under the mixed workload (`load.Workload`) gives the full card's numbers (`predict.calibrate`). Then, one
layout after the other, one replica per slice (`slices.slice_replicas`: MIG devices, emulated slices or CPU
stand-ins), all started together (`lab.service.Service`, no gateway: each slice is measured on its own URL), and:
1. the mixed workload on every slice at once: per slice and in aggregate, output throughput, chat TTFT P99, ITL P99,
   each beside the model's prediction (`predict.predict`) and the error in %;
2. isolation (layouts of two slices or more): the other slices' chat P99 (TTFT and ITL) with slice 0 idle, then
   with slice 0 overloaded by long batch requests (`Workload.overload_factor`), and the change in %.
`fit_rows` (models and context lengths per profile) is arithmetic. `study_metrics(result)` flattens it all for the
record with the partition `mode` in every name's source: the record says "emulated", "MIG" or "cpu stand-in".
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lab.bench.metrics import compute_metrics
from lab.errors import LabError
from lab.gpu.mig import mig_inventory
from lab.gpu.mig_model import slice_share
from lab.gpu.mig_profiles import MigProfileTable, profile_table, table_for_device
from lab.gpu.mps import MpsDaemon
from lab.service.spec import PrometheusSpec, ReplicaProcess, RestartPolicy, ServiceSpec
from lab.service.supervisor import Service
from lab.studies.launcher import ReplicaSpec
from lab.studies.mig.load import BATCH, CHAT, SliceLoad, SliceRun, Workload, pooled, run_on
from lab.studies.mig.predict import LayoutOutcome, Predicted, SliceNumbers, calibrate, error_pct, predict, targets
from lab.studies.mig.slices import FULL_CARD, MODES, SliceReplica, slice_replicas


@dataclass(frozen=True)
class StudyConfig:
    layouts: tuple[str, ...] = ("1x7g", "7x1g", "3x2g+1x1g", "2x3g")
    mode: str = "cpu"  # mig | emulated | emulated-mps | cpu (see slices.py)
    gpu_model: str | None = None  # the profile table; None: the first GPU NVML sees
    replica: ReplicaSpec = field(default_factory=ReplicaSpec)
    workload: Workload = field(default_factory=Workload)
    decode_overhead_fraction: float = 0.0  # of the full card's decode step: the part bandwidth does not shrink
    ready_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise LabError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not self.layouts:
            raise LabError("layouts: name at least one layout, e.g. 2x3g")
        object.__setattr__(self, "layouts", tuple(self.layouts))

    def table(self) -> MigProfileTable:
        if self.gpu_model is not None:
            return profile_table(self.gpu_model)
        gpus = mig_inventory()
        if not gpus:
            raise LabError("gpu_model: NVML sees no GPU here; name the profile table (e.g. H100-80GB)")
        return table_for_device(gpus[0].name, gpus[0].memory_total_mib)


@dataclass(frozen=True)
class SliceRow:
    layout: str
    name: str
    label: str
    measured: SliceNumbers
    predicted: Predicted


@dataclass(frozen=True)
class Isolation:
    layout: str
    aggressor: str
    before: Mapping[str, float]  # victims' chat ttft_p99_s / itl_p99_s, slice 0 idle
    during: Mapping[str, float]  # the same with slice 0 overloaded


@dataclass(frozen=True)
class StudyResult:
    config: StudyConfig
    gpu: str
    full: SliceNumbers
    rows: tuple[SliceRow, ...]
    outcomes: tuple[LayoutOutcome, ...]
    isolation: tuple[Isolation, ...]


def numbers(run: SliceRun, chat_input_tokens: int) -> SliceNumbers:
    chat, batch = run.by_tier[CHAT].metrics, run.by_tier[BATCH].metrics
    everything = compute_metrics(pooled(list(run.by_tier.values())), max(chat.duration_s, batch.duration_s))
    return SliceNumbers(chat.output_throughput_tok_per_s + batch.output_throughput_tok_per_s, chat.ttft.p99_s,
                        chat.ttft.median_s, everything.itl.p99_s, batch.itl.median_s, chat_input_tokens)


def _service(name: str, replicas: tuple[ReplicaProcess, ...], log_dir: Path, ready_timeout_s: float) -> Service:
    return Service(ServiceSpec(name=name, replicas=replicas, log_dir=log_dir, gateway=None,
                               prometheus=PrometheusSpec(enabled=False), restart=RestartPolicy("never"),
                               ready_timeout_s=ready_timeout_s))


def _victims_p99(runs: Mapping[str, SliceRun], victims: list[str]) -> dict[str, float]:
    chat = [runs[url].by_tier[CHAT] for url in victims]
    metrics = compute_metrics(pooled(chat), max(r.metrics.duration_s for r in chat))
    return {"ttft_p99_s": metrics.ttft.p99_s, "itl_p99_s": metrics.itl.p99_s}


def run_study(config: StudyConfig, log_dir: Path) -> StudyResult:
    table, load = config.table(), config.workload
    inventory = mig_inventory() if config.mode == "mig" else ()
    full_process = ReplicaProcess("full", config.replica.command())
    with _service("full", (full_process,), Path(log_dir) / "full", config.ready_timeout_s) as service:
        url = service.replica("full").url
        full = numbers(run_on(load, {url: SliceLoad()})[url], load.chat_input_tokens)
    card = calibrate(full, table.gpu, config.decode_overhead_fraction)
    # MPS only after the calibration: the full card is measured as a plain process, as every other mode does
    daemon = MpsDaemon.start(Path(log_dir) / "mps") if config.mode == "emulated-mps" else None
    try:
        rows, outcomes, isolation = _layouts(config, table, full, card, inventory, log_dir,
                                             None if daemon is None else daemon.client_env())
    finally:
        if daemon is not None:
            daemon.stop()
    return StudyResult(config, table.gpu, full, tuple(rows), tuple(outcomes), tuple(isolation))


def _layouts(config: StudyConfig, table: MigProfileTable, full: SliceNumbers, card, inventory, log_dir: Path,
             mps_env: dict[str, str] | None):
    load = config.workload
    rows, outcomes, isolation = [], [], []
    for layout in config.layouts:
        replicas = slice_replicas(layout, table, config.mode, config.replica, inventory, mps_env)
        folder = Path(log_dir) / layout.replace("+", "_")
        with _service(layout.replace("+", "_"), tuple(r.process for r in replicas), folder,
                      config.ready_timeout_s) as service:
            urls = {r.name: service.replica(r.name).url for r in replicas}
            runs = run_on(load, {url: SliceLoad() for url in urls.values()})
            layout_rows = [SliceRow(layout, r.name, r.label, numbers(runs[urls[r.name]], load.chat_input_tokens),
                                    predict(full, card, slice_share(r.profile, table))) for r in replicas]
            if len(replicas) > 1:
                victims = [urls[r.name] for r in replicas[1:]]
                aggressor = urls[replicas[0].name]
                before = run_on(load, {**{v: SliceLoad((CHAT,)) for v in victims}, aggressor: SliceLoad(())})
                during = run_on(load, {**{v: SliceLoad((CHAT,)) for v in victims},
                                       aggressor: SliceLoad((BATCH,), overload=True)})
                isolation.append(Isolation(layout, replicas[0].name, _victims_p99(before, victims),
                                           _victims_p99(during, victims)))
        rows += layout_rows
        chat_all = compute_metrics(pooled([runs[u].by_tier[CHAT] for u in urls.values()]), 1.0)
        outcomes.append(LayoutOutcome(layout, sum(r.measured.output_tok_per_s for r in layout_rows),
                                      sum(r.predicted.output_tok_per_s for r in layout_rows), chat_all.ttft.p99_s,
                                      max(r.predicted.chat_ttft_p99_s for r in layout_rows)))
    return rows, outcomes, isolation


def layout_key(layout: str) -> str:
    return "l" + layout.replace("+", "_")


def study_metrics(result: StudyResult) -> dict[str, float]:
    m: dict[str, float] = {"full_output_tok_per_s": result.full.output_tok_per_s,
                           "full_chat_ttft_p99_ms": result.full.chat_ttft_p99_s * 1e3,
                           "full_itl_p99_ms": result.full.itl_p99_s * 1e3}
    for row in result.rows:
        p = f"{layout_key(row.layout)}_{row.name.split('-')[0]}"
        for name, measured, predicted, scale in (
                ("output_tok_per_s", row.measured.output_tok_per_s, row.predicted.output_tok_per_s, 1.0),
                ("chat_ttft_p99_ms", row.measured.chat_ttft_p99_s, row.predicted.chat_ttft_p99_s, 1e3),
                ("itl_p99_ms", row.measured.itl_p99_s, row.predicted.itl_p99_s, 1e3)):
            m[f"{p}_{name}"] = measured * scale
            m[f"{p}_{name}_predicted"] = predicted * scale
            m[f"{p}_{name}_error_pct"] = error_pct(measured, predicted)
    for o in result.outcomes:
        p = layout_key(o.layout)
        m[f"{p}_output_tok_per_s"] = o.output_tok_per_s
        m[f"{p}_output_tok_per_s_predicted"] = o.predicted_output_tok_per_s
        m[f"{p}_output_tok_per_s_error_pct"] = error_pct(o.output_tok_per_s, o.predicted_output_tok_per_s)
        m[f"{p}_chat_ttft_p99_ms"] = o.chat_ttft_p99_s * 1e3
        m[f"{p}_chat_ttft_p99_ms_predicted"] = o.predicted_chat_ttft_p99_s * 1e3
        m[f"{p}_chat_ttft_p99_ms_error_pct"] = error_pct(o.chat_ttft_p99_s, o.predicted_chat_ttft_p99_s)
    for iso in result.isolation:
        p = f"{layout_key(iso.layout)}_isolation"
        for key in ("ttft_p99_s", "itl_p99_s"):
            name = key.replace("_s", "_ms")
            m[f"{p}_victim_{name}_before"] = iso.before[key] * 1e3
            m[f"{p}_victim_{name}_during"] = iso.during[key] * 1e3
            m[f"{p}_victim_{name}_change_pct"] = error_pct(iso.during[key], iso.before[key])
    met = []
    for target in targets(result.outcomes):
        m[f"target_{target.name}_error_pct"] = target.error_pct
        m[f"target_{target.name}_met"] = float(target.met)
        m[f"target_{target.name}_model_picks_same_layout"] = float(target.predicted_winner == target.layout)
        met.append(target.met)
    m["targets_met_pct"] = 100.0 * sum(met) / len(met) if met else math.nan
    m["mig_instances_per_gpu"] = float(max(sum(1 for r in result.rows if r.layout == o.layout)
                                           for o in result.outcomes))
    return m


def record_note(result: StudyResult) -> str:
    from lab.gpu.mig_emulation import CANNOT_SHOW

    labels = sorted({row.label for row in result.rows})
    note = f"07_mig_partitions on {', '.join(labels)} ({result.config.mode}); calibration: {FULL_CARD}."
    if result.config.mode.startswith("emulated"):
        note += f" EMULATED slices: {CANNOT_SHOW}."
    if result.config.mode == "cpu":
        note += " CPU stand-ins: no partition at all; the numbers check the road, never the targets."
    return note


__all__ = ["Isolation", "SliceReplica", "SliceRow", "StudyConfig", "StudyResult", "run_study", "study_metrics"]
