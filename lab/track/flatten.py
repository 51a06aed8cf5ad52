"""Turn nested params and environments into MLflow's flat key/value strings.

Contract: `flatten({"a": {"b": 1}, "c": [1, 2]})` -> `{"a.b": 1, "c": [1, 2]}` (dotted keys, lists
kept whole); `as_text(value, limit)` renders a value as MLflow stores it (lists and dicts as
JSON, everything else with str) truncated to `limit` characters with a visible marker, because
MLflow rejects or silently truncates longer values depending on the store. `metric_prefix(name)` turns a
preset, model or variant name into the start of flat metric names ("r1-distill-qwen-1.5b" -> "r1_distill_qwen_1_5b"):
dashes, dots, slashes and colons become "_", so a name never reads as a separator inside a metric key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

TRUNCATION_MARKER = "...[truncated]"
_PREFIX_SEPARATORS = str.maketrans({c: "_" for c in "-./:"})


def metric_prefix(name: str) -> str:
    return name.translate(_PREFIX_SEPARATORS)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def as_text(value: Any, limit: int) -> str:
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=str, sort_keys=True)
    else:
        text = str(value)
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
