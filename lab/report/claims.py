"""The source article's claims, and which notebook metric would measure each.

Contract: `CLAIMS` lists every quantitative claim of the article ("full-power DeepSeek
deployment") with a stable `id`, the claim in words, the value as the article states it, its unit,
and the `experiment` (notebook name, e.g. "03_baseline_vs_fullpower") plus `metric` whose value in
that notebook's result record measures it. For "before -> after" claims `baseline_metric` names the
plain-path value measured in the same run. A notebook "measures" a claim simply by recording a
metric with that name; the report shows "not measured yet" until one does. Notebook authors: keep
metric names here and in `record_notebook(...)` identical.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    id: str
    section: str
    text: str
    article_value: str  # as stated in the article
    unit: str
    experiment: str  # the notebook whose record measures it
    metric: str
    baseline_metric: str | None = None  # for "baseline -> optimised" claims


BASELINE = "03_baseline_vs_fullpower"
MEMORY = "02_memory_compression"
MIG = "05_mig_partitions"
NCCL = "06_nccl_allreduce"
SCHEDULING = "02_priority_scheduling"
HOT_RELOAD = "08_hot_reload"
SCALING = "04_predictive_scaling"
CHAOS = "09_chaos_drills"

CLAIMS: tuple[Claim, ...] = (
    # Native deployment: the problems the article starts from.
    Claim("native.latency", "native deployment", "Above 128 concurrent requests, inference latency rises",
          "+370", "%", BASELINE, "native_latency_increase_pct"),
    Claim("native.errors", "native deployment", "Above 128 concurrent requests, the error rate rises to",
          "12", "%", BASELINE, "native_error_rate_pct"),
    Claim("native.cold_start", "native deployment", "Cold start (model load) of a containerised replica",
          "45", "s", HOT_RELOAD, "cold_start_s"),
    Claim("native.burst_timeouts", "native deployment", "Share of burst requests timing out during a cold start",
          "40", "%", HOT_RELOAD, "burst_timeout_pct"),
    Claim("native.reactive_delay", "native deployment", "Threshold-based reactive scaling decides late by",
          "15-30", "s", SCALING, "reactive_decision_delay_s"),
    # Hardware layer.
    Claim("memory.activation", "hardware", "Activation memory saved by dynamic tensor compression",
          "-62", "%", MEMORY, "activation_memory_reduction_pct"),
    Claim("mig.instances", "hardware", "Independent inference instances per A100 with MIG",
          "7", "instances", MIG, "mig_instances_per_gpu"),
    Claim("nccl.allreduce", "hardware", "NCCL all-reduce latency with topology-aware tuning",
          "12 -> 3.2", "ms", NCCL, "allreduce_latency_ms", baseline_metric="allreduce_latency_baseline_ms"),
    # Software layer.
    # P99 end-to-end latency of the tier at 2x overload, FCFS (plain path) -> tiers, same request plan.
    Claim("sched.vip", "scheduling", "VIP tier (32 concurrent, 500 ms timeout): P99 latency under overload",
          "<= 500", "ms", SCHEDULING, "tiers_vip_e2e_p99_ms", baseline_metric="fcfs_vip_e2e_p99_ms"),
    Claim("sched.realtime", "scheduling", "Realtime tier (64 concurrent, 2000 ms timeout): P99 latency under overload",
          "<= 2000", "ms", SCHEDULING, "tiers_realtime_e2e_p99_ms", baseline_metric="fcfs_realtime_e2e_p99_ms"),
    Claim("reload.impact", "scheduling", "Service impact of a hot model reload (double buffering)",
          "< 10", "ms", HOT_RELOAD, "hot_reload_pause_ms"),
    # Operations layer.
    Claim("scale.thresholds", "operations",
          "Prophet-driven stepped scaling (warn at 70 %, scale at 85 %, 15 % headroom) keeps peak load at",
          "<= 85", "%", SCALING, "peak_load_pct"),
    Claim("scale.cost", "operations", "Cloud cost saved by mixing spot and reserved instances",
          "-35", "%", SCALING, "spot_cost_change_pct"),  # reserved + spot vs all on demand, predictive policy
    # Benchmark on 16x A100.
    Claim("bench.qps", "benchmark (16x A100)", "Throughput, native -> full-power",
          "480 -> 2100", "QPS", BASELINE, "fullpower_max_qps", baseline_metric="baseline_max_qps"),
    Claim("bench.p99", "benchmark (16x A100)", "P99 latency, native -> full-power",
          "3200 -> 480", "ms", BASELINE, "fullpower_p99_e2e_ms", baseline_metric="baseline_p99_e2e_ms"),
    Claim("bench.gpu_util", "benchmark (16x A100)", "GPU utilisation, native -> full-power",
          "62 -> 89", "%", BASELINE, "fullpower_gpu_util_pct", baseline_metric="baseline_gpu_util_pct"),
    # Fault recovery.
    Claim("ops.rollback", "fault recovery", "Health probe every 15 s, rollback after 3 failures: time to rollback",
          "<= 45", "s", CHAOS, "rollback_after_fault_s"),
    Claim("ops.canary", "fault recovery", "Canary release: traffic share on the new version for the first 30 min",
          "1", "%", CHAOS, "canary_traffic_pct"),
)


def claims_by_id() -> dict[str, Claim]:
    return {claim.id: claim for claim in CLAIMS}
