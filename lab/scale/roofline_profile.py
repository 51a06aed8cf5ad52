"""An `EngineProfile` from a roofline record (`lab bench offline` / notebook 01), naming what it lacks.

Contract: `profile_from_roofline_record(record, preset, prefill_s_per_token=..., kv_cache_tokens=...)`
reads one preset's decode sweep from the record: metrics `<prefix>_decode_b{B}_step_s` and
`<prefix>_decode_b{B}_avg_context` (prefix: `lab.track.flatten.metric_prefix` of the preset, as the roofline
study names them). The sweep runs every batch at
one context (the decode prompt plus half the timed steps), so the profile has one context column and
`EngineProfile.step_time_s` holds it flat over context. Two numbers the record does not hold must be
passed, from a measurement: `prefill_s_per_token` (the offline set mixes prefill and decode in one wall
time) and `kv_cache_tokens` (the engine's KV blocks x block size is not logged). `max_num_seqs` is read
from the notebook record's `engine_flags` when it is there, else must be passed.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lab.scale.engine_profile import EngineProfile
from lab.track.flatten import metric_prefix


def _recorded_max_num_seqs(params: Mapping[str, Any], preset: str) -> int | None:
    presets = params.get("PRESETS") or params.get("presets")
    flags = params.get("engine_flags")
    if isinstance(presets, str):
        presets = presets.split(",")
    if not presets or not flags or preset not in presets:
        return None
    return int(flags[list(presets).index(preset)]["max_num_seqs"])


def profile_from_roofline_record(record: Mapping[str, Any], preset: str, *, prefill_s_per_token: float,
                                 kv_cache_tokens: int, max_num_seqs: int | None = None) -> EngineProfile:
    prefix, metrics = metric_prefix(preset), record["metrics"]
    pattern = re.compile(rf"^{re.escape(prefix)}_decode_b(\d+)_step_s$")
    steps = {int(m.group(1)): float(v) for k, v in metrics.items() if (m := pattern.match(k))}
    if not steps:
        raise ValueError(f"the record has no {prefix}_decode_b{{batch}}_step_s metrics: was {preset!r} swept?")
    contexts = {b: metrics.get(f"{prefix}_decode_b{b}_avg_context") for b in steps}
    if any(c is None for c in contexts.values()):
        raise ValueError(f"the record lacks {prefix}_decode_b{{batch}}_avg_context for batches "
                         f"{sorted(b for b, c in contexts.items() if c is None)}")
    context = round(sum(contexts.values()) / len(contexts))
    if any(abs(c - context) > 1 for c in contexts.values()):
        raise ValueError(f"the sweep's batches ran at different contexts {contexts}: not one profile column")
    recorded = _recorded_max_num_seqs(record.get("params", {}), preset)
    if max_num_seqs is None and recorded is None:
        raise ValueError("the record does not say max_num_seqs for this preset: pass the engine's value")
    batches = sorted(steps)
    return EngineProfile(
        tuple(batches), (context,), tuple((steps[b],) for b in batches), prefill_s_per_token,
        max_num_seqs if max_num_seqs is not None else recorded, kv_cache_tokens,
        device=str(record.get("environment", {}).get("device", "unknown")), model=preset,
        source=f"record {record.get('record_id', '?')} of {record.get('experiment', '?')} (decode sweep); "
               "prefill_s_per_token and kv_cache_tokens given by the caller",
    )
