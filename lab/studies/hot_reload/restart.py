"""Optional: what a restart onto new weights would cost instead of a hot reload, through `lab bench coldstart`.

Contract: `coldstart_available()` says whether `lab.bench.coldstart` exists in this checkout (it comes with the
cold-start work; this study does not depend on it). `restart_reference(model, device, hf_overrides, repeats)`
runs `repeats` cold starts of the same preset, each in a fresh process (`lab.bench.coldstart.run_coldstart`,
its `default` variant, no unrecorded warm-up: the OS caches are as warm as a replica's restart would find them),
and returns a `RestartReference`: medians of start -> engine ready and start -> first token, and each phase;
None when the module is absent. Run it while no replica serves, so it never shares the device with one.
`restart_references(models, device, hf_overrides, repeats)`: the same for each model, or none (with the reason)
when `repeats` is 0 or the module is absent. `restart_metrics(refs)`: `<model>_restart_ready_s` and
`<model>_restart_first_token_s`: for a restart, the time the replica serves nothing; for a hot reload, that time
is the pause.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lab.errors import LabError
from lab.track.flatten import metric_prefix

COLDSTART_MODULE = "lab.bench.coldstart"


@dataclass(frozen=True)
class RestartReference:
    model: str
    repeats: int
    ready_s: float  # median: process start -> engine built
    first_token_s: float  # median: process start -> first token
    phases_s: dict[str, float]  # median of each phase


def coldstart_available() -> bool:
    return importlib.util.find_spec(COLDSTART_MODULE) is not None


def restart_reference(model: str, device: str, hf_overrides: Mapping[str, Any], repeats: int,
                      timeout_s: float = 900.0) -> RestartReference | None:
    if repeats < 1:
        raise LabError(f"restart repeats must be >= 1, got {repeats}")
    if not coldstart_available():
        return None
    from lab.bench import coldstart

    engine_args: dict[str, Any] = {"seed": 0, **({"device": device} if device != "auto" else {}),
                                   **({"hf_overrides": dict(hf_overrides)} if hf_overrides else {})}
    scenarios = coldstart.build_scenarios([model], [coldstart.parse_variant("default")], engine_args)
    (result,) = coldstart.run_coldstart(scenarios, repeats, warmups=0, timeout_s=timeout_s)
    metrics = result.metrics()
    phases = {name: result.median(name) for name in result.phase_names()}
    return RestartReference(model, repeats, metrics["ready_s"], metrics["total_s"],
                            {k: v for k, v in phases.items() if v is not None})


def restart_metrics(refs: Sequence[RestartReference]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for ref in refs:
        metrics[f"{metric_prefix(ref.model)}_restart_ready_s"] = ref.ready_s
        metrics[f"{metric_prefix(ref.model)}_restart_first_token_s"] = ref.first_token_s
    return metrics


def restart_references(models: Sequence[str], device: str, hf_overrides: Mapping[str, Any],
                       repeats: int) -> tuple[list[RestartReference], str]:
    """`restart_reference` for each model, and a sentence saying what ran or why nothing did."""
    if repeats <= 0:
        return [], "skipped: COLDSTART_REPEATS is 0"
    if not coldstart_available():
        return [], f"skipped: {COLDSTART_MODULE} is not in this checkout"
    refs = [restart_reference(model, device, hf_overrides, repeats) for model in models]
    return [r for r in refs if r is not None], f"{repeats} cold start(s) per model through {COLDSTART_MODULE}"
