"""The slice model's prediction beside each measured number, and the issue's two targets.

Contract: `calibrate(full)` turns the full card's run of the mixed workload (a `SliceNumbers`, no partition) into
`lab.gpu.mig_model.FullCardMeasurement`: the decode step is the batch class's median ITL, prefill speed the chat
prompt length over the chat class's median TTFT, `decode_overhead_fraction` of the step the part that does not scale
with bandwidth (a parameter, stated in the record). `predict(full, card, share)` scales the full card's numbers as
`mig_model.predict_slice` says: output throughput by full step / slice step, ITL by slice step / full step (memory
slices), chat TTFT by 1 / SM share (prefill is compute-bound). `error_pct` = (measured - predicted) / predicted.
`targets(layouts)`: the layout with the lowest chat TTFT P99 and the one with the highest aggregate throughput, each
met when its measured number lies within `TOLERANCE_PCT` of its prediction (issue 18; reported, never tuned to).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lab.gpu.mig_model import FullCardMeasurement, SliceShare, predict_slice

TOLERANCE_PCT = 15.0


@dataclass(frozen=True)
class SliceNumbers:
    """What one replica (or a layout, pooled) measured under the mixed workload."""

    output_tok_per_s: float  # both classes together
    chat_ttft_p99_s: float
    chat_ttft_median_s: float
    itl_p99_s: float  # both classes
    batch_itl_median_s: float
    chat_input_tokens: int


@dataclass(frozen=True)
class Predicted:
    output_tok_per_s: float
    chat_ttft_p99_s: float
    itl_p99_s: float


def calibrate(full: SliceNumbers, gpu: str, decode_overhead_fraction: float) -> FullCardMeasurement:
    step = full.batch_itl_median_s
    return FullCardMeasurement(gpu, step, decode_overhead_fraction * step,
                               full.chat_input_tokens / full.chat_ttft_median_s)


def predict(full: SliceNumbers, card: FullCardMeasurement, share: SliceShare) -> Predicted:
    step = predict_slice(card, share, batch=1).decode_step_s  # the batch cancels in the ratios below
    slowdown = step / card.decode_step_s
    return Predicted(full.output_tok_per_s / slowdown, full.chat_ttft_p99_s / share.sm_share,
                     full.itl_p99_s * slowdown)


def error_pct(measured: float, predicted: float) -> float:
    if not predicted or math.isnan(predicted) or math.isnan(measured):
        return math.nan
    return (measured - predicted) / predicted * 100.0


@dataclass(frozen=True)
class LayoutOutcome:
    layout: str
    output_tok_per_s: float  # sum over slices
    predicted_output_tok_per_s: float
    chat_ttft_p99_s: float  # over every slice's chat requests
    predicted_chat_ttft_p99_s: float  # the worst slice's: every slice serves the same load


@dataclass(frozen=True)
class Target:
    name: str
    layout: str
    measured: float
    predicted: float
    error_pct: float
    predicted_winner: str  # the layout the model alone would pick

    @property
    def met(self) -> bool:
        return not math.isnan(self.error_pct) and abs(self.error_pct) <= TOLERANCE_PCT


def targets(outcomes: Sequence[LayoutOutcome]) -> list[Target]:
    if not outcomes:
        return []
    ttft = min(outcomes, key=lambda o: o.chat_ttft_p99_s)
    thr = max(outcomes, key=lambda o: o.output_tok_per_s)
    return [
        Target("ttft_p99_short", ttft.layout, ttft.chat_ttft_p99_s, ttft.predicted_chat_ttft_p99_s,
               error_pct(ttft.chat_ttft_p99_s, ttft.predicted_chat_ttft_p99_s),
               min(outcomes, key=lambda o: o.predicted_chat_ttft_p99_s).layout),
        Target("throughput", thr.layout, thr.output_tok_per_s, thr.predicted_output_tok_per_s,
               error_pct(thr.output_tok_per_s, thr.predicted_output_tok_per_s),
               max(outcomes, key=lambda o: o.predicted_output_tok_per_s).layout),
    ]
