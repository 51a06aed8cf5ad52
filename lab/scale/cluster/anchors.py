"""Published DeepSeek-V3/R1 serving throughputs, as data with their sources, and a prediction's error.

Contract: an `Anchor` is one number a team published (per node of `gpus_per_node` cards), the card, the
conditions it was measured under and where it was published. `compare(anchor, predicted_per_gpu)`
turns a per-GPU prediction into the anchor's unit and returns the signed error in percent. The model is
never tuned to these numbers: they are the check, so a prediction must be made before it is compared.
Where a source states a layout it is kept as text in `conditions`; building the matching `Layout` (and
choosing the workload) is the caller's, so that the assumptions show in the study that quotes the error.
What a source states about a decode step is kept as data, so that a prediction can be compared step for step:
`per_user_tokens_per_s` (DeepSeek: 20-22 output tokens/s per user) and `batch_per_gpu` (SGLang: 256 sequences
per GPU). `published_decode_step(anchor)` turns them into the batch per GPU and the seconds per step the
published throughput implies (tokens/s per GPU = batch per GPU / step, one token per sequence per step).
"""
from __future__ import annotations

from dataclasses import dataclass

DEEPSEEK_DAY6 = ("DeepSeek, 'Day 6: DeepSeek-V3/R1 Inference System Overview' (open-infra-index, "
                 "202502OpenSourceWeek, 2025-03-01)")
SGLANG_LARGE_EP = ("LMSYS/SGLang team, 'Deploying DeepSeek with PD Disaggregation and Large-scale Expert "
                   "Parallelism on 96 H100 GPUs' (lmsys.org blog, 2025-05-05)")


@dataclass(frozen=True)
class Anchor:
    name: str
    phase: str  # "prefill" (input tokens/s) or "decode" (output tokens/s)
    gpu: str  # a `hardware.CATALOG` name
    gpus_per_node: int
    tokens_per_s_per_node: float
    conditions: str
    source: str
    per_user_tokens_per_s: tuple[float, float] | None = None  # decode: the stated output speed per user (range)
    batch_per_gpu: float | None = None  # decode: the stated running sequences per GPU


ANCHORS: tuple[Anchor, ...] = (
    Anchor("deepseek-online-prefill", "prefill", "H800", 8, 73.7e3,
           "online service average over 24h; input tokens include prefix-cache hits (56.3% of input tokens "
           "hit the cache, so fewer were computed); prefill units of 4 nodes: routed experts EP32, "
           "MLA and shared expert DP32, 32 redundant experts, two-micro-batch overlap", DEEPSEEK_DAY6),
    Anchor("deepseek-online-decode", "decode", "H800", 8, 14.8e3,
           "online service average over 24h, 20-22 output tokens/s per user, average KV cache length per output "
           "token 4,989; decode units of 18 nodes: routed experts EP144, MLA and shared expert DP144, 32 redundant "
           "experts (2 routed + 1 shared per GPU); two micro-batches overlap dispatch/combine with compute",
           DEEPSEEK_DAY6, per_user_tokens_per_s=(20.0, 22.0)),
    Anchor("sglang-96xh100-prefill", "prefill", "H100-SXM", 8, 52.3e3,
           "12 nodes of 8 H100 with prefill/decode disaggregation, large EP with EPLB and two-batch overlap, "
           "2000-token inputs, benchmark load (not online traffic)", SGLANG_LARGE_EP),
    Anchor("sglang-96xh100-decode", "decode", "H100-SXM", 8, 22.3e3,
           "decode on 9 nodes (EP72), 256 sequences per GPU at KV length 2,000 (the blog's profile table: 22,282 "
           "tokens/s per node), two-batch overlap; benchmark load; the blog states ITL about 100 ms",
           SGLANG_LARGE_EP, batch_per_gpu=256.0),
)


def anchor(name: str) -> Anchor:
    for a in ANCHORS:
        if a.name == name:
            return a
    raise ValueError(f"no anchor {name!r}; known: {[a.name for a in ANCHORS]}")


@dataclass(frozen=True)
class AnchorComparison:
    anchor: Anchor
    predicted_tokens_per_s_per_node: float

    @property
    def error_pct(self) -> float:
        """(predicted - published) / published, in percent: positive when the model is optimistic."""
        return 100 * (self.predicted_tokens_per_s_per_node / self.anchor.tokens_per_s_per_node - 1)


@dataclass(frozen=True)
class PublishedDecodeStep:
    batch_per_gpu: float  # sequences decoding per GPU the source states or its numbers imply
    step_s: float  # seconds per decode step (one token per sequence) the published throughput implies
    how: str


def published_decode_step(a: Anchor) -> PublishedDecodeStep | None:
    """The decode step the published numbers imply (None: the source states neither speed per user nor batch)."""
    per_gpu = a.tokens_per_s_per_node / a.gpus_per_node
    if a.per_user_tokens_per_s is not None:
        low, high = a.per_user_tokens_per_s
        per_user = (low + high) / 2
        return PublishedDecodeStep(per_gpu / per_user, 1 / per_user,
                                   f"{per_gpu:.0f} tok/s per GPU at {low:g}-{high:g} tok/s per user: "
                                   f"{per_gpu / high:.0f}-{per_gpu / low:.0f} sequences per GPU")
    if a.batch_per_gpu is not None:
        return PublishedDecodeStep(a.batch_per_gpu, a.batch_per_gpu / per_gpu,
                                   f"{per_gpu:.0f} tok/s per GPU at {a.batch_per_gpu:g} sequences per GPU")
    return None


def compare(anchor: Anchor, predicted_tokens_per_s_per_gpu: float) -> AnchorComparison:
    if predicted_tokens_per_s_per_gpu <= 0:
        raise ValueError(f"a prediction must be a positive tokens/s, got {predicted_tokens_per_s_per_gpu}")
    return AnchorComparison(anchor, predicted_tokens_per_s_per_gpu * anchor.gpus_per_node)
