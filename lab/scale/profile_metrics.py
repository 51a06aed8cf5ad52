"""The metric names by which a roofline record carries an engine profile: one spelling for writer and reader.

Contract: the roofline study (`lab.studies.roofline`, notebook 01 and `lab bench offline`) writes, per preset
(`prefix` = `lab.track.flatten.metric_prefix(preset)`), and `lab.scale.roofline_profile` reads:
- `decode_step(prefix, B)`      `<prefix>_decode_b{B}_step_s`: seconds of one decode step at batch B;
- `decode_context(prefix, B)`   `<prefix>_decode_b{B}_avg_context`: the mean context of those steps;
- `prefill_per_token(prefix)`   `<prefix>_prefill_s_per_token`: prefill seconds per prompt token;
- `kv_cache_tokens(prefix)`     `<prefix>_kv_cache_tokens`: the engine's KV capacity (blocks x block size);
- `max_num_seqs(prefix)`        `<prefix>_max_num_seqs`: the engine's sequence slots.
The last three came after the GPU records committed under `reports/records/` were made: a reader names them
when a record lacks them.
"""
from __future__ import annotations

import re


def decode_step(prefix: str, batch: int) -> str:
    return f"{prefix}_decode_b{batch}_step_s"


def decode_context(prefix: str, batch: int) -> str:
    return f"{prefix}_decode_b{batch}_avg_context"


def prefill_per_token(prefix: str) -> str:
    return f"{prefix}_prefill_s_per_token"


def kv_cache_tokens(prefix: str) -> str:
    return f"{prefix}_kv_cache_tokens"


def max_num_seqs(prefix: str) -> str:
    return f"{prefix}_max_num_seqs"


DECODE_STEP = re.compile(r"^(\w+?)_decode_b(\d+)_step_s$")  # groups: prefix, batch
