"""The outputs of `lab bench coldstart`: its result record and its table.

Contract: `coldstart_record(results, params)` is a `ResultRecord` (experiment "bench-coldstart", the
environment, so the device, inside) whose metrics are each scenario's median ready and total seconds
(`<model>.<variant>.ready_s`) and whose children, one per scenario, hold every phase's median and the
spread over the repeats; `table_text(results)`: phases down, scenarios across, medians in seconds.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.bench.coldstart import EXPERIMENT, ScenarioResult, merged_order


def metric_prefix(label: str) -> str:
    """A scenario label as an MLflow-safe metric prefix: `disk:r1/load-overlap` -> `disk_r1.load-overlap`."""
    model, _, variant = label.rpartition("/")
    model = re.sub(r"[^A-Za-z0-9_.\-]+", "_", Path(model).name if "/" in model else model)
    return f"{model}.{variant}"


def coldstart_record(results: Sequence[ScenarioResult], params: dict[str, Any], *, artifacts: Sequence[str] = ()):
    from lab.track import ResultRecord, collect_environment

    metrics: dict[str, float] = {}
    children = []
    for result in results:
        scenario_metrics = result.metrics()
        prefix = metric_prefix(result.scenario.label)
        metrics.update({f"{prefix}.{k}": v for k, v in scenario_metrics.items() if k in ("ready_s", "total_s")})
        facts = result.runs[0].facts
        child_params = {"model": result.scenario.model, "variant": result.scenario.variant.name,
                        "engine_args": result.scenario.engine_args,
                        "fresh_kernel_cache": result.scenario.variant.fresh_kernel_cache,
                        "repeats": len(result.runs), "device_name": facts.get("device_name"),
                        "decode_graph_sizes": facts.get("decode_graph_sizes"),
                        "mixed_graph_sizes": facts.get("mixed_graph_sizes")}
        children.append(ResultRecord(experiment=EXPERIMENT, params=child_params, metrics=scenario_metrics))
    return ResultRecord(experiment=EXPERIMENT, params=params, metrics=metrics, environment=collect_environment(),
                        artifacts=tuple(artifacts), children=tuple(children))


def table_text(results: Sequence[ScenarioResult]) -> str:
    """Phases down, scenarios across: median seconds over the repeats ('-' where a scenario has no such phase)."""
    names = merged_order([result.phase_names() for result in results])
    labels = [r.scenario.label for r in results]
    width = max([len("phase (median s)")] + [len(n) for n in names] + [len("ready (start -> engine)")])
    columns = [max(len(label), 8) for label in labels]
    lines = ["  ".join(["phase (median s)".ljust(width)] + [label.rjust(c) for label, c in zip(labels, columns)])]

    def row(name: str, values: list[float | None]) -> str:
        cells = [("-" if v is None else f"{v:.3f}").rjust(c) for v, c in zip(values, columns)]
        return "  ".join([name.ljust(width)] + cells)

    lines += [row(name, [r.median(name) for r in results]) for name in names]
    lines.append(row("ready (start -> engine)", [r.metrics()["ready_s"] for r in results]))
    lines.append(row("total (start -> token)", [r.metrics()["total_s"] for r in results]))
    return "\n".join(lines)
