"""A model of MIG slices: each profile's share of the card, its predicted decode/prefill speed, what fits in it.

Contract (torch-free): `slice_share(profile, table)` gives a profile's SM share (its SM count over the
full card's, MIG off), its memory-bandwidth, L2 and capacity share (memory slices / 8) and capacity in
GiB. `predict_slice(card, share, batch)` turns a full-card measurement (`FullCardMeasurement`) into a
slice's decode step time and prefill tokens/s; `predict_layout` sums a layout's slices. `memory_fit`
says how many KV tokens a model leaves room for in a slice. Inputs are measured numbers; nothing here
measures or invents one.

Assumptions, stated once (the notebook's table checks them against slices; issue 18 wants 15 %):
- Decode at a fixed batch is memory-bound: the step is a fixed overhead (launches, sampling, the host
  loop) plus a bandwidth-bound part (weights + KV read, the DESIGN's roofline). The overhead is the
  same on a slice; the bandwidth-bound part scales with 1 / (memory slices / 8), because a MIG slice
  owns that share of the memory controllers.
- Prefill is compute-bound and scales with the SM share. On A100 a 7g slice has 98 of 108 SMs, so
  even "the whole card" under MIG prefills ~9 % slower than with MIG off.
- L2 is split with the memory slices; its share is reported but not modelled (a smaller L2 can only
  make a slice slower than predicted when the working set fit the full L2).
- Memory: a slice holds `memory_share` of the card's capacity (or the size the inventory reads), minus
  a reserve for the CUDA context, activations and allocator slack, minus the weights; the rest is KV.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.errors import LabError
from lab.gpu.mig_profiles import MigProfile, MigProfileTable

GIB = 2**30


@dataclass(frozen=True)
class FullCardMeasurement:
    """What was measured on the whole card, MIG off, for one model at one batch and context."""

    gpu: str
    decode_step_s: float  # mean decode step time
    decode_overhead_s: float  # the part that does not shrink with more bandwidth (e.g. the step at ~0 bytes)
    prefill_tokens_per_s: float

    def __post_init__(self) -> None:
        if self.decode_step_s <= 0 or self.prefill_tokens_per_s <= 0:
            raise LabError("decode_step_s and prefill_tokens_per_s must be positive measurements")
        if not 0 <= self.decode_overhead_s < self.decode_step_s:
            raise LabError(f"decode_overhead_s ({self.decode_overhead_s}) must lie in [0, decode_step_s "
                           f"= {self.decode_step_s})")

    @property
    def decode_bandwidth_s(self) -> float:
        return self.decode_step_s - self.decode_overhead_s


@dataclass(frozen=True)
class SliceShare:
    profile: str
    sm_share: float
    memory_share: float  # of bandwidth and capacity
    l2_share: float
    memory_gib: float


def slice_share(profile: MigProfile, table: MigProfileTable, memory_gib: float | None = None) -> SliceShare:
    """A profile's shares; `memory_gib` overrides the nominal capacity with the inventory's figure."""
    share = profile.memory_share
    return SliceShare(
        profile=profile.name,
        sm_share=profile.sm_count / table.full_sm_count,
        memory_share=share,
        l2_share=share,
        memory_gib=share * table.memory_gib if memory_gib is None else memory_gib,
    )


@dataclass(frozen=True)
class SlicePrediction:
    profile: str
    batch: int
    decode_step_s: float
    decode_tokens_per_s: float
    prefill_tokens_per_s: float


def predict_slice(card: FullCardMeasurement, share: SliceShare, batch: int) -> SlicePrediction:
    step = card.decode_overhead_s + card.decode_bandwidth_s / share.memory_share
    return SlicePrediction(share.profile, batch, step, batch / step, card.prefill_tokens_per_s * share.sm_share)


@dataclass(frozen=True)
class LayoutPrediction:
    slices: tuple[SlicePrediction, ...]

    @property
    def decode_tokens_per_s(self) -> float:
        return sum(s.decode_tokens_per_s for s in self.slices)

    @property
    def prefill_tokens_per_s(self) -> float:
        return sum(s.prefill_tokens_per_s for s in self.slices)


def predict_layout(card: FullCardMeasurement, table: MigProfileTable, profiles: list[MigProfile],
                   batch_per_slice: int) -> LayoutPrediction:
    """Every slice running the same model at the same batch, all busy at once."""
    return LayoutPrediction(tuple(predict_slice(card, slice_share(p, table), batch_per_slice) for p in profiles))


@dataclass(frozen=True)
class ModelFootprint:
    name: str
    weights_bytes: int
    kv_bytes_per_token: int  # all layers, K and V (or MLA's latent), in the cache dtype


@dataclass(frozen=True)
class MemoryFit:
    profile: str
    model: str
    capacity_gib: float
    weights_gib: float
    reserve_gib: float
    kv_tokens: int  # tokens of KV cache the slice can hold (0 when the weights do not fit)

    @property
    def weights_fit(self) -> bool:
        return self.capacity_gib - self.reserve_gib >= self.weights_gib

    def fits_context(self, context_tokens: int, sequences: int = 1) -> bool:
        return self.weights_fit and self.kv_tokens >= context_tokens * sequences


def memory_fit(share: SliceShare, model: ModelFootprint, reserve_gib: float) -> MemoryFit:
    weights_gib = model.weights_bytes / GIB
    kv_gib = share.memory_gib - reserve_gib - weights_gib
    kv_tokens = int(kv_gib * GIB // model.kv_bytes_per_token) if kv_gib > 0 else 0
    return MemoryFit(share.profile, model.name, share.memory_gib, weights_gib, reserve_gib, kv_tokens)
