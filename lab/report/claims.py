"""The source article's claims, the hardware each came from, and which notebook metric measures each.

Contract: `CLAIMS` lists every quantitative claim of the article ("full-power DeepSeek deployment") with a
stable `id`, the claim in words, the value as the article states it, its unit, the hardware the article
names for it (`article_hardware`: only its benchmark section names any, a 16-card A100 cluster; MIG is per
A100; everything else states none, and settings such as a tier's timeout are not measurements at all), the
`experiment` (the notebook, e.g. "03_baseline_vs_fullpower") plus `metric` whose value in that notebook's
result record measures it, and the `rule` (`lab.report.rules`) that says when our value meets it. For
"before -> after" claims `baseline_metric` names the plain-path value measured in the same run.
A notebook measures a claim by recording a metric with that name; until a full-scale record of it exists
the report shows "not measured" and names the notebook, also one still to be written (this wave's
05_hot_reload, 06_memory_compression, 07_mig_partitions, 08_nccl_tp, 09_chaos_drills;
10_deepseek_v3_full runs the article's model at full size and owns no claim of its own).
Notebook authors: keep metric names here and in `record_notebook(...)` identical; percentages of a saving
are signed changes (negative = less), so "-62 %" is met by a change <= -62.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.report.rules import AtLeast, AtMost, Problem, RatioAtLeast, Rule, Within


@dataclass(frozen=True)
class Claim:
    id: str
    section: str
    text: str
    article_value: str  # as stated in the article
    unit: str
    article_hardware: str
    experiment: str  # the notebook whose record measures it
    metric: str
    rule: Rule
    baseline_metric: str | None = None  # for "baseline -> optimised" claims


SCHEDULING = "02_priority_scheduling"
BASELINE = "03_baseline_vs_fullpower"
SCALING = "04_predictive_scaling"
HOT_RELOAD = "05_hot_reload"
MEMORY = "06_memory_compression"
MIG = "07_mig_partitions"
NCCL = "08_nccl_tp"
CHAOS = "09_chaos_drills"

A100_CLUSTER = "16× A100 (benchmark section)"
PER_A100 = "1× A100 (per card)"
NOT_STATED = "not stated"
A_SETTING = "none: a setting, not a measurement"

CLAIMS: tuple[Claim, ...] = (
    # Native deployment: the problems the article starts from (descriptive: `Problem`).
    Claim("native.latency", "native deployment", "Above 128 concurrent requests, inference latency rises",
          "+370", "%", "not stated (one node)", BASELINE, "native_latency_increase_pct", Problem(370)),
    Claim("native.errors", "native deployment", "Above 128 concurrent requests, the error rate rises to",
          "12", "%", "not stated (one node)", BASELINE, "native_error_rate_pct", Problem(12)),
    Claim("native.cold_start", "native deployment", "Cold start (model load) of a containerised replica",
          "45", "s", NOT_STATED, HOT_RELOAD, "cold_start_s", Problem(45)),
    Claim("native.burst_timeouts", "native deployment", "Share of burst requests timing out during a cold start",
          "40", "%", NOT_STATED, HOT_RELOAD, "burst_timeout_pct", Problem(40)),
    Claim("native.reactive_delay", "native deployment", "Threshold-based reactive scaling decides late by",
          "15-30", "s", NOT_STATED, SCALING, "reactive_decision_delay_s", Problem(15)),
    # Hardware layer.
    Claim("memory.activation", "hardware", "Activation memory changed by dynamic tensor compression",
          "-62", "%", NOT_STATED, MEMORY, "activation_memory_change_pct", AtMost(-62)),
    Claim("mig.instances", "hardware", "Independent inference instances per A100 with MIG",
          "7", "instances", PER_A100, MIG, "mig_instances_per_gpu", AtLeast(7)),
    Claim("nccl.allreduce", "hardware", "NCCL all-reduce latency with topology-aware tuning",
          "12 -> 3.2", "ms", "not stated (several GPUs, NCCL 2.12+)", NCCL, "allreduce_latency_ms",
          RatioAtLeast(12, 3.2, lower_is_better=True), baseline_metric="allreduce_latency_baseline_ms"),
    # Software layer.
    # P99 end-to-end latency of the tier at 2x overload, FCFS (plain path) -> tiers, same request plan.
    # The tier's timeout is its queue deadline (lab.tiers): met when the P99 time to first token is within
    # it. E2E also counts generating every output token, which no deadline on waiting can bound.
    Claim("sched.vip", "scheduling", "VIP tier (32 concurrent, 500 ms timeout): P99 time to first token under 2x overload",
          "<= 500", "ms", A_SETTING, SCHEDULING, "tiers_vip_ttft_p99_ms", AtMost(500),
          baseline_metric="fcfs_vip_ttft_p99_ms"),
    Claim("sched.realtime", "scheduling",
          "Realtime tier (64 concurrent, 2000 ms timeout): P99 time to first token under 2x overload",
          "<= 2000", "ms", A_SETTING, SCHEDULING, "tiers_realtime_ttft_p99_ms", AtMost(2000),
          baseline_metric="fcfs_realtime_ttft_p99_ms"),
    Claim("reload.impact", "scheduling", "Service impact of a hot model reload (double buffering)",
          "< 10", "ms", NOT_STATED, HOT_RELOAD, "hot_reload_pause_ms", AtMost(10, strict=True)),
    # Operations layer.
    Claim("scale.thresholds", "operations",
          "Prophet-driven stepped scaling (warn at 70 %, scale at 85 %, 15 % headroom) keeps peak load at",
          "<= 85", "%", A_SETTING, SCALING, "peak_load_pct", AtMost(85)),
    # Reserved + spot against all on demand, predictive policy.
    Claim("scale.cost", "operations", "Cloud cost changed by mixing spot and reserved instances",
          "-35", "%", "not stated (a cloud bill)", SCALING, "spot_cost_change_pct", AtMost(-35)),
    # Benchmark on 16x A100.
    Claim("bench.qps", "benchmark (16x A100)", "Throughput, native -> full-power",
          "480 -> 2100", "QPS", A100_CLUSTER, BASELINE, "fullpower_max_qps", RatioAtLeast(480, 2100),
          baseline_metric="baseline_max_qps"),
    Claim("bench.p99", "benchmark (16x A100)", "P99 latency, native -> full-power",
          "3200 -> 480", "ms", A100_CLUSTER, BASELINE, "fullpower_p99_e2e_ms",
          RatioAtLeast(3200, 480, lower_is_better=True), baseline_metric="baseline_p99_e2e_ms"),
    # A utilisation is a level (89 % busy), not a ratio: a plain path idling at 6 % would inflate any ratio.
    Claim("bench.gpu_util", "benchmark (16x A100)", "GPU utilisation, native -> full-power",
          "62 -> 89", "%", A100_CLUSTER, BASELINE, "fullpower_gpu_util_pct", AtLeast(89),
          baseline_metric="baseline_gpu_util_pct"),
    # Fault recovery.
    Claim("ops.rollback", "fault recovery", "Health probe every 15 s, rollback after 3 failures: time to rollback",
          "<= 45", "s", A_SETTING, CHAOS, "rollback_after_fault_s", AtMost(45)),
    # +-0.2 points: the spread of a 1 % weighted router over a few thousand requests.
    Claim("ops.canary", "fault recovery", "Canary release: traffic share on the new version for the first 30 min",
          "1", "%", A_SETTING, CHAOS, "canary_traffic_pct", Within(1, 0.2)),
)


def claims_by_id() -> dict[str, Claim]:
    return {claim.id: claim for claim in CLAIMS}
