"""The layer profile end to end, for notebook 10: build, sweep each weight format, free; and a record read back.

Contract: `measure_profile(layer_kwargs, weights, sweep) -> ProfileRun` builds the layers once per weight format
(`layer.build_layers`, so bf16 and fp8 never share the card), sweeps them (`sweep.measure_layers`) and frees them;
`ProfileRun.metrics` holds every format's metrics, `storage` what each part was stored in per format (the record
states that the engine's fp8 keeps routed experts in bf16), `device_name` the card. `card_name(device_name)` maps
a CUDA device name to the cluster catalog (None: not a catalog card, e.g. a CPU). `profile_from_metrics(metrics,
weights, card)` -> the `plan.MeasuredProfile` the cluster model consumes; `load_record(path)` reads a record's JSON.
"""
from __future__ import annotations

import gc
import json
from dataclasses import dataclass, field
from pathlib import Path

from lab.scale.cluster.layer_profile import measured_layer_time
from lab.studies.deepseek_v3_full.plan import MeasuredProfile
from lab.studies.deepseek_v3_full.sweep import SweepConfig


@dataclass
class ProfileRun:
    metrics: dict[str, float] = field(default_factory=dict)
    storage: dict[str, dict[str, str]] = field(default_factory=dict)
    backends: dict[str, str] = field(default_factory=dict)
    device_name: str = "cpu"


def measure_profile(layer_kwargs: dict, weights: tuple[str, ...], sweep: SweepConfig) -> ProfileRun:
    import torch

    from lab.studies.deepseek_v3_full.layer import LayerConfig, build_layers, weight_storage
    from lab.studies.deepseek_v3_full.sweep import measure_layers

    run = ProfileRun()
    for w in weights:
        built = build_layers(LayerConfig(weights=w, **layer_kwargs))
        run.storage[w] = weight_storage(built)
        run.backends = {"attention": built.attention_backend, "moe": built.moe_backend,
                        "fused_ops": str(built.fused_ops), "dtype": str(built.dtype)}
        if built.device.type == "cuda":
            run.device_name = torch.cuda.get_device_name(built.device)
        run.metrics.update(measure_layers(built, sweep))
        del built
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return run


def card_name(device_name: str) -> str | None:
    for key, name in (("H200", "H200"), ("H800", "H800"), ("H100", "H100-SXM"), ("A100", "A100-80G")):
        if key in device_name:
            return name
    return None


def profile_from_metrics(metrics: dict[str, float], weights: str, card: str, source: str) -> MeasuredProfile:
    return MeasuredProfile(measured_layer_time(metrics, weights, source=source), card, weights)


def load_record(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def layer_profile(record_path: str, layer_kwargs: dict, weights: tuple[str, ...], sweep: SweepConfig) -> ProfileRun:
    """A record's layer metrics when `record_path` is given (its card from its environment), else measured here."""
    if not record_path:
        return measure_profile(layer_kwargs, weights, sweep)
    record = load_record(record_path)
    return ProfileRun(dict(record["metrics"]), dict(record.get("params", {}).get("storage", {})),
                      dict(record.get("params", {}).get("backends", {})),
                      str(record.get("environment", {}).get("device", "unknown")))


def cluster_profile(run: ProfileRun, layer_time: str, weights: str, true_shapes: bool) -> tuple[MeasuredProfile | None, str]:
    """(the measured profile or None for the roofline, a label saying which the cluster model used and why)."""
    if layer_time not in ("measured", "roofline"):
        raise ValueError(f"layer_time must be 'measured' or 'roofline', got {layer_time!r}")
    if layer_time == "roofline":
        return None, "roofline at the stated efficiencies (assumed, not measured)"
    card = card_name(run.device_name)
    if not true_shapes or card is None:
        raise ValueError(f"a measured profile drives the V3 cluster model only at V3's true shapes on a catalog card "
                         f"(got device {run.device_name!r}, true shapes {true_shapes}): use layer_time='roofline'")
    return (profile_from_metrics(run.metrics, weights, card, f"layer profile on {run.device_name} ({weights})"),
            f"measured on {run.device_name} ({weights} weights), carried to each card and shard by the roofline ratio")
