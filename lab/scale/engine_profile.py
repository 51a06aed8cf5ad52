"""A replica's measured service profile: decode step time against batch and context, prefill rate.

Contract: an `EngineProfile` says how fast one replica (one GPU, one MIG slice) runs:
- `decode_step_s[i][j]`: seconds of one decode step at `batch_sizes[i]` running sequences whose mean
  context is `context_tokens[j]` tokens (bilinear interpolation between grid points, clamped at
  the edges);
- `prefill_s_per_token`: seconds of prefill per prompt token (compute-bound, so linear);
- `max_num_seqs`: how many sequences run at once (the replica's slots), `kv_cache_tokens`: its KV
  capacity in tokens (for the KV-usage signal).
File schema (JSON or YAML, `schema: lab.scale.engine_profile/1`): exactly these fields plus `device`,
`model` and `source` (where the numbers came from). `EngineProfile.from_record(record, preset=None,
**given)` reads a lab result record (the dict of a record.json) in one of two shapes:
- a grid record: params `max_num_seqs`, `kv_cache_tokens`, metrics `prefill_s_per_token` and one
  `decode_step_s_b{batch}_ctx{context}` per grid point (a profile over context as well as batch);
- any other record is read as the roofline study's (notebook 01, `lab bench offline`): one preset's decode
  sweep, prefill rate and KV capacity (`lab.scale.roofline_profile`; `given` numbers fill what it lacks).
`load_profile(path, preset=None, **given)` reads a profile file or a record file.
`default_profile()` is the illustrative profile shipped for CPU tests (`profiles/default.json`):
shaped like a mid-size model on one modern GPU, not a measurement; say so when quoting results.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "lab.scale.engine_profile/1"
DEFAULT_PROFILE_PATH = Path(__file__).with_name("profiles") / "default.json"
_STEP_METRIC = re.compile(r"^decode_step_s_b(\d+)_ctx(\d+)$")


@dataclass(frozen=True)
class EngineProfile:
    batch_sizes: tuple[int, ...]
    context_tokens: tuple[int, ...]
    decode_step_s: tuple[tuple[float, ...], ...]  # [batch index][context index]
    prefill_s_per_token: float
    max_num_seqs: int
    kv_cache_tokens: int
    device: str = "unknown"
    model: str = "unknown"
    source: str = "unknown"

    def __post_init__(self) -> None:
        b, c = list(self.batch_sizes), list(self.context_tokens)
        if not b or b != sorted(set(b)) or b[0] < 1 or not c or c != sorted(set(c)):
            raise ValueError("batch_sizes and context_tokens must be non-empty, increasing and positive")
        grid = np.asarray(self.decode_step_s, dtype=float)
        if grid.shape != (len(b), len(c)) or not (grid > 0).all():
            raise ValueError(f"decode_step_s must be a {len(b)}x{len(c)} grid of positive seconds")
        if self.prefill_s_per_token <= 0 or self.max_num_seqs < 1 or self.kv_cache_tokens < 1:
            raise ValueError("prefill_s_per_token, max_num_seqs and kv_cache_tokens must be positive")

    def step_time_s(self, batch: float, context: float) -> float:
        """Seconds of one decode step at `batch` sequences of mean context `context` tokens."""
        grid = np.asarray(self.decode_step_s, dtype=float)
        per_context = [np.interp(batch, self.batch_sizes, grid[:, j]) for j in range(len(self.context_tokens))]
        return float(np.interp(context, self.context_tokens, per_context))

    def prefill_time_s(self, prompt_tokens: float | np.ndarray) -> float | np.ndarray:
        return np.asarray(prompt_tokens, dtype=float) * self.prefill_s_per_token

    def service_time_s(self, batch: float, prompt_tokens: float, output_tokens: float) -> float:
        """Time a request holds a slot: its prefill, then one decode step per output token."""
        mean_context = prompt_tokens + output_tokens / 2  # the context grows while it decodes
        return float(self.prefill_time_s(prompt_tokens)) + output_tokens * self.step_time_s(batch, mean_context)

    def capacity_per_s(self, prompt_tokens: float, output_tokens: float, batch: int | None = None) -> float:
        """Sustainable requests/s of one replica running `batch` (default: all slots) at once."""
        batch = batch or self.max_num_seqs
        return batch / self.service_time_s(batch, prompt_tokens, output_tokens)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "device": self.device, "model": self.model, "source": self.source,
                "max_num_seqs": self.max_num_seqs, "kv_cache_tokens": self.kv_cache_tokens,
                "prefill_s_per_token": self.prefill_s_per_token, "batch_sizes": list(self.batch_sizes),
                "context_tokens": list(self.context_tokens),
                "decode_step_s": [list(row) for row in self.decode_step_s]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineProfile:
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not an engine profile: schema is {data.get('schema')!r}, expected {SCHEMA!r}")
        fields = {k: v for k, v in data.items() if k != "schema"}
        fields["batch_sizes"] = tuple(int(x) for x in fields["batch_sizes"])
        fields["context_tokens"] = tuple(int(x) for x in fields["context_tokens"])
        fields["decode_step_s"] = tuple(tuple(float(x) for x in row) for row in fields["decode_step_s"])
        return cls(**fields)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], preset: str | None = None, **given: Any) -> EngineProfile:
        """From a lab result record (dict as in record.json; see module docstring)."""
        metrics, params = record["metrics"], record["params"]
        points = {(int(m.group(1)), int(m.group(2))): float(v)
                  for k, v in metrics.items() if (m := _STEP_METRIC.match(k))}
        if not points:
            from lab.scale.roofline_profile import profile_from_roofline_record

            return profile_from_roofline_record(record, preset, **given)
        if preset is not None or any(v is not None for v in given.values()):
            raise ValueError("a grid record holds one profile and every number: it takes no preset or numbers")
        batches = sorted({b for b, _ in points})
        contexts = sorted({c for _, c in points})
        missing = [(b, c) for b in batches for c in contexts if (b, c) not in points]
        if missing:
            raise ValueError(f"the record's step-time grid is incomplete, missing {missing[:5]}")
        env = record.get("environment", {})
        return cls(tuple(batches), tuple(contexts),
                   tuple(tuple(points[b, c] for c in contexts) for b in batches),
                   float(metrics["prefill_s_per_token"]), int(params["max_num_seqs"]),
                   int(params["kv_cache_tokens"]), device=str(env.get("device", "unknown")),
                   model=str(params.get("model", "unknown")),
                   source=f"record {record.get('record_id', '?')} of {record.get('experiment', '?')}")


def load_profile(path: str | Path, preset: str | None = None, **given: Any) -> EngineProfile:
    """An engine profile file (JSON/YAML with the schema) or a result record JSON (`from_record`'s arguments)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if "experiment" in data and "metrics" in data:
        return EngineProfile.from_record(data, preset, **given)
    if preset is not None or any(v is not None for v in given.values()):
        raise ValueError(f"{path} is an engine profile, not a record: it takes no preset or numbers to fill in")
    return EngineProfile.from_dict(data)


def default_profile() -> EngineProfile:
    return load_profile(DEFAULT_PROFILE_PATH)


def grid_from_function(batch_sizes: Sequence[int], context_tokens: Sequence[int], step_s) -> tuple:
    """A decode_step_s grid from a function (batch, context) -> seconds, for tests and sketches."""
    return tuple(tuple(float(step_s(b, c)) for c in context_tokens) for b in batch_sizes)
