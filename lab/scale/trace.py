"""A minimal reader of LLM request traces (Azure LLM inference trace format).

Contract: `read_trace(path)` reads a CSV with columns `TIMESTAMP,ContextTokens,GeneratedTokens`
(the Azure 2023 and 2024 traces) and returns a `Trace`: arrival times in seconds from the first
request (sorted), prompt and output token counts. Without a path it reads the one-hour Azure
conversation trace shipped in `data/traces/` (`lab.paths.default_trace_path()`).
This reader is deliberately small; `lab.bench` owns trace replay, and the two should merge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.errors import LabError
from lab.paths import default_trace_path

COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


@dataclass(frozen=True)
class Trace:
    arrival_s: np.ndarray  # seconds since the first request, sorted
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    source: str

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1]) if len(self.arrival_s) else 0.0

    @property
    def mean_rate_per_s(self) -> float:
        return len(self.arrival_s) / max(self.duration_s, 1.0)

    def counts_per_step(self, step_s: float) -> np.ndarray:
        """Arrivals per `step_s` bucket from time 0 (the last bucket may be partial)."""
        n = int(np.floor(self.duration_s / step_s)) + 1
        return np.bincount((self.arrival_s // step_s).astype(np.int64), minlength=n)[:n]


def read_trace(path: str | Path | None = None) -> Trace:
    import pandas as pd

    path = Path(path) if path is not None else default_trace_path()
    if not path.is_file():
        raise LabError(f"trace file not found: {path} (pass --trace PATH; expected columns {', '.join(COLUMNS)})")
    frame = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise LabError(f"trace {path} lacks columns {missing}; expected {', '.join(COLUMNS)}")
    if frame.empty:
        raise LabError(f"trace {path} has no requests")
    stamps = pd.to_datetime(frame["TIMESTAMP"], format="mixed")
    order = np.argsort(stamps.to_numpy(), kind="stable")
    seconds = (stamps - stamps.min()).dt.total_seconds().to_numpy()[order]
    return Trace(seconds, frame["ContextTokens"].to_numpy(np.int64)[order],
                 frame["GeneratedTokens"].to_numpy(np.int64)[order], str(path))
