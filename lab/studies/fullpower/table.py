"""The headline as markdown: full power against each peer (the fair one first), then each engine's own numbers.

Contract: `headline_markdown(metrics)` renders what `lab.studies.fullpower.headline.headline_metrics`
returned: one row per peer present (hf-cb, before tuning, hf generate, in that order) with both max QPS, the
ratio, the P99 E2E at the peer's max load and its ratio, the saturation ratio and the issue's targets (met /
missed against hf-cb); then one column per engine: max QPS, saturation, GPU utilisation, the longest step
gap and the knee. "<" / ">=" mark bounds; "n/a" a value not measured.
"""
from __future__ import annotations

import math

from lab.studies.fullpower.headline import RATIO_PREFIXES, TARGET_P99_E2E_RATIO, TARGET_QPS_RATIO

PEER_LABELS = {"hf_cb": "hf-cb (transformers continuous batching)", "untuned": "before tuning (lab engine, plain)",
               "baseline": "hf (transformers generate, the floor)"}
ENGINE_LABELS = {**PEER_LABELS, "fullpower": "full power (lab engine)"}


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.3g}{unit}" if abs(value) < 100 else f"{value:,.0f}{unit}"


def _bounded(metrics: dict[str, float], name: str, unit: str = "") -> str:
    """A value with "<" / ">=" in front when the record marks it as an upper / lower bound."""
    text = _fmt(metrics.get(name), unit)
    if text == "n/a":
        return text
    if metrics.get(f"{name}_is_upper_bound"):
        return f"< {text}"
    if metrics.get(f"{name}_is_lower_bound"):
        return f">= {text}"
    return text


def _met(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "cannot tell"
    return "met" if value else "missed"


def headline_markdown(metrics: dict[str, float]) -> str:
    """See the module docstring."""
    m = metrics.get
    peers = [name for name in PEER_LABELS if f"{name}_max_qps" in metrics]
    lines = ["| full power against | their max QPS | ours | ratio | P99 E2E at their max load: theirs / ours [ms] "
             "| ratio | saturation ratio | target |", "|---|---|---|---|---|---|---|---|"]
    for name in peers:
        p = RATIO_PREFIXES[name]
        target = ""
        if name == "hf_cb":
            target = (f">= {TARGET_QPS_RATIO}x QPS: {_met(m('hf_cb_qps_target_met'))}; "
                      f">= {TARGET_P99_E2E_RATIO}x lower P99: {_met(m('hf_cb_p99_e2e_target_met'))}")
        lines.append(
            f"| {PEER_LABELS[name]} | {_bounded(metrics, f'{name}_max_qps')} | {_bounded(metrics, 'fullpower_max_qps')} "
            f"| {_bounded(metrics, f'{p}_max_qps_ratio', 'x')} "
            f"| {_fmt(m(f'{name}_p99_e2e_ms'))} / {_fmt(m(f'fullpower_p99_e2e_ms_at_{p}_load'))} "
            f"at {_fmt(m(f'{p}_load_rate_per_s'))} req/s | {_fmt(m(f'{p}_p99_e2e_ratio'), 'x lower')} "
            f"| {_fmt(m(f'{p}_saturation_ratio'), 'x')} | {target} |")
    engines = [*peers, "fullpower"]
    rows = [
        ("max QPS at P99 TTFT <= SLO [req/s]", lambda e: _bounded(metrics, f"{e}_max_qps")),
        ("saturation [req/s]", lambda e: _fmt(m(f"{e}_saturation_qps"))),
        ("saturation [output tok/s]", lambda e: _fmt(m(f"{e}_saturation_output_tok_per_s"))),
        ("GPU utilisation at own max load [%]", lambda e: _fmt(m(f"{e}_gpu_util_pct"))),
        ("longest gap between engine steps [ms]", lambda e: _gap(metrics, e)),
        ("knee: mean E2E increase above the knee [%]", lambda e: _fmt(m(f"{e}_knee_latency_increase_pct"))),
        ("knee: error rate above the knee [%]", lambda e: _fmt(m(f"{e}_knee_error_rate_pct"))),
    ]
    lines += ["", "| metric | " + " | ".join(ENGINE_LABELS[e] for e in engines) + " |",
              "|---|" + "---|" * len(engines)]
    lines += [f"| {label} | " + " | ".join(cell(e) for e in engines) + " |" for label, cell in rows]
    return "\n".join(lines)


def _gap(metrics: dict[str, float], engine: str) -> str:
    value = metrics.get(f"{engine}_longest_step_gap_ms")
    if value is None or math.isnan(value):
        return "not available"
    return ("<= " if metrics.get(f"{engine}_longest_step_gap_is_upper_bound") else "") + _fmt(value)
