"""An `EngineProfile` from a roofline record (notebook 01 / `lab bench offline`), naming what the record lacks.

Contract: `profile_from_roofline_record(record, preset=None, *, prefill_s_per_token=None, kv_cache_tokens=None,
max_num_seqs=None)` reads one preset's numbers under the names of `lab.scale.profile_metrics`: the decode sweep
(`<prefix>_decode_b{B}_step_s` at `<prefix>_decode_b{B}_avg_context`), `<prefix>_prefill_s_per_token`,
`<prefix>_kv_cache_tokens` and `<prefix>_max_num_seqs` (for `max_num_seqs` a notebook record's `engine_flags`
also serve). `preset` may be left out when the record swept one preset. The sweep runs every batch at one
context (the decode prompt plus half the timed steps), so the profile has one context column and
`EngineProfile.step_time_s` holds it flat over context.

A number passed by the caller replaces the record's, and the profile's `source` says which were passed: the
way to use a record made before the study logged prefill and KV capacity (the committed GPU records), with
numbers measured elsewhere. A number neither in the record nor passed is an error naming the metric.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lab.scale import profile_metrics as names
from lab.scale.engine_profile import EngineProfile
from lab.track.flatten import metric_prefix

# The profile's fields a record holds as one number each, and the metric that holds it.
_FILLED_BY = {"prefill_s_per_token": names.prefill_per_token, "kv_cache_tokens": names.kv_cache_tokens,
              "max_num_seqs": names.max_num_seqs}


def _presets(params: Mapping[str, Any]) -> list[str]:
    presets = params.get("PRESETS") or params.get("presets") or []
    return presets.split(",") if isinstance(presets, str) else list(presets)


def _swept_prefix(metrics: Mapping[str, Any], params: Mapping[str, Any], preset: str | None) -> tuple[str, str]:
    """(metric prefix, preset name) of the sweep to read."""
    if preset is not None:
        return metric_prefix(preset), preset
    swept = sorted({m.group(1) for k in metrics if (m := names.DECODE_STEP.match(k))})
    if len(swept) != 1:
        raise ValueError(f"the record holds decode sweeps of {swept or 'no preset'}: name the preset to read")
    by_prefix = {metric_prefix(p): p for p in _presets(params)}
    return swept[0], by_prefix.get(swept[0], swept[0])


def _recorded_max_num_seqs(params: Mapping[str, Any], preset: str) -> int | None:
    presets, flags = _presets(params), params.get("engine_flags")
    if not flags or preset not in presets:
        return None
    return int(flags[presets.index(preset)]["max_num_seqs"])


def profile_from_roofline_record(record: Mapping[str, Any], preset: str | None = None, *,
                                 prefill_s_per_token: float | None = None, kv_cache_tokens: int | None = None,
                                 max_num_seqs: int | None = None) -> EngineProfile:
    metrics, params = record["metrics"], record.get("params", {})
    prefix, preset = _swept_prefix(metrics, params, preset)
    steps = {int(m.group(2)): float(v) for k, v in metrics.items()
             if (m := names.DECODE_STEP.match(k)) and m.group(1) == prefix}
    if not steps:
        raise ValueError(f"the record has no {prefix}_decode_b{{batch}}_step_s metrics: was {preset!r} swept?")
    contexts = {b: metrics.get(names.decode_context(prefix, b)) for b in steps}
    if any(c is None for c in contexts.values()):
        raise ValueError(f"the record lacks {prefix}_decode_b{{batch}}_avg_context for batches "
                         f"{sorted(b for b, c in contexts.items() if c is None)}")
    context = round(sum(contexts.values()) / len(contexts))
    if any(abs(c - context) > 1 for c in contexts.values()):
        raise ValueError(f"the sweep's batches ran at different contexts {contexts}: not one profile column")

    given = {"prefill_s_per_token": prefill_s_per_token, "kv_cache_tokens": kv_cache_tokens,
             "max_num_seqs": max_num_seqs}
    recorded = {k: metrics.get(name(prefix)) for k, name in _FILLED_BY.items()}
    if recorded["max_num_seqs"] is None:  # a notebook record before the metric: its engine_flags say it
        recorded["max_num_seqs"] = _recorded_max_num_seqs(params, preset)
    value = {k: given[k] if given[k] is not None else recorded[k] for k in given}
    missing = [k for k, v in value.items() if v is None]
    if missing:
        raise ValueError(
            f"the record lacks {', '.join(_FILLED_BY[k](prefix) for k in missing)} (made before the roofline "
            f"study logged them?): re-run notebook 01 / lab bench offline, or pass {', '.join(missing)} measured "
            "elsewhere")
    passed = [k for k, v in given.items() if v is not None]
    batches = sorted(steps)
    return EngineProfile(
        tuple(batches), (context,), tuple((steps[b],) for b in batches), float(value["prefill_s_per_token"]),
        int(value["max_num_seqs"]), int(value["kv_cache_tokens"]),
        device=str(record.get("environment", {}).get("device", "unknown")), model=preset,
        source=f"record {record.get('record_id', '?')} of {record.get('experiment', '?')} ({preset})"
               + (f"; {', '.join(passed)} given by the caller" if passed else ""),
    )
