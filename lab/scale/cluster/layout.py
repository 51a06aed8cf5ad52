"""One serving instance's parallel layout, and a prefill/decode disaggregated deployment of instances.

Contract: a `Layout` spreads one model instance over `tp * dp * pp` GPUs:
- `pp` pipeline stages, each a contiguous run of layers (the embedding on the first, the head on the last);
- inside a stage, attention (and the dense MLPs, shared experts, embedding and head) runs tensor-parallel
  over `tp` GPUs and data-parallel over `dp` such groups ("DP attention"): each DP group serves its own
  sequences and holds their KV cache; MLA's compressed KV has no head axis, so every TP rank of a group
  holds the group's whole cache;
- the routed experts of a stage spread over all `tp * dp` GPUs of the stage: `ep` expert-parallel groups,
  each expert split tensor-parallel over `tp * dp / ep` GPUs; `redundant_experts` extra replicas of hot
  experts (as DeepSeek's EPLB adds) make the expert slots `routed + redundant`, which `ep` must divide.
`role` says what the instance does: "colocated" (prefill and decode), "prefill" or "decode".
`validate(model)` raises a ValueError naming each broken rule. `Deployment` pairs prefill and decode
instances (disaggregation) or holds colocated ones, and counts the GPUs.
"""
from __future__ import annotations

from dataclasses import dataclass

from lab.scale.cluster.model import ModelShape

ROLES = ("colocated", "prefill", "decode")


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    dp: int = 1
    ep: int = 1
    pp: int = 1
    redundant_experts: int = 0
    role: str = "colocated"

    @property
    def gpus(self) -> int:
        return self.tp * self.dp * self.pp

    @property
    def stage_gpus(self) -> int:
        return self.tp * self.dp

    @property
    def expert_tp(self) -> int:
        """How many GPUs split each expert's matrices (1: pure expert parallelism)."""
        return self.stage_gpus // self.ep

    def expert_slots(self, model: ModelShape) -> int:
        return model.routed_experts + self.redundant_experts

    def experts_per_gpu(self, model: ModelShape) -> int:
        return self.expert_slots(model) // self.ep

    def problems(self, model: ModelShape) -> list[str]:
        found = [f"{name} must be >= 1, got {value}" for name, value in
                 (("tp", self.tp), ("dp", self.dp), ("ep", self.ep), ("pp", self.pp)) if value < 1]
        if found:
            return found
        if self.role not in ROLES:
            found.append(f"role must be one of {ROLES}, got {self.role!r}")
        if self.redundant_experts < 0:
            found.append(f"redundant_experts must be >= 0, got {self.redundant_experts}")
        if model.num_heads % self.tp:
            found.append(f"tp={self.tp} must divide the {model.num_heads} attention heads")
        if self.expert_slots(model) % self.ep:
            found.append(f"ep={self.ep} must divide the {self.expert_slots(model)} expert slots "
                         f"({model.routed_experts} routed + {self.redundant_experts} redundant)")
        if self.stage_gpus % self.ep:
            found.append(f"ep={self.ep} must divide the tp*dp={self.stage_gpus} GPUs of a pipeline stage")
        elif model.moe_intermediate % self.expert_tp:
            found.append(f"the expert tensor split tp*dp/ep={self.expert_tp} must divide the expert width "
                         f"{model.moe_intermediate}")
        if self.pp > model.num_layers:
            found.append(f"pp={self.pp} exceeds the {model.num_layers} layers")
        return found

    def validate(self, model: ModelShape) -> Layout:
        found = self.problems(model)
        if found:
            raise ValueError(f"invalid layout {self}: " + "; ".join(found))
        return self

    def stage_layers(self, model: ModelShape) -> list[tuple[int, int]]:
        """(dense layers, MoE layers) of each pipeline stage, layers split as evenly as possible, first stages
        taking the remainder (they also hold the dense layers, which come first)."""
        base, extra = divmod(model.num_layers, self.pp)
        stages, start = [], 0
        for s in range(self.pp):
            n = base + (1 if s < extra else 0)
            dense = max(0, min(start + n, model.first_dense_layers) - start)
            stages.append((dense, n - dense))
            start += n
        return stages


@dataclass(frozen=True)
class Deployment:
    """Instances that together serve traffic: colocated ones, or prefill ones feeding decode ones."""

    instances: tuple[tuple[Layout, int], ...]  # (layout, how many instances of it)

    def __post_init__(self) -> None:
        roles = {layout.role for layout, _ in self.instances}
        if not self.instances or any(n < 1 for _, n in self.instances):
            raise ValueError("a deployment needs at least one instance of each layout it lists")
        if "colocated" in roles and roles != {"colocated"}:
            raise ValueError(f"mix colocated instances with prefill/decode ones? roles were {sorted(roles)}")
        if roles & {"prefill", "decode"} and roles != {"prefill", "decode"}:
            raise ValueError(f"a disaggregated deployment needs both prefill and decode instances, got {sorted(roles)}")

    @classmethod
    def disaggregated(cls, prefill: Layout, prefill_instances: int, decode: Layout,
                      decode_instances: int) -> Deployment:
        if prefill.role != "prefill" or decode.role != "decode":
            raise ValueError(f"expected a prefill and a decode layout, got roles {prefill.role!r}, {decode.role!r}")
        return cls(((prefill, prefill_instances), (decode, decode_instances)))

    @property
    def gpus(self) -> int:
        return sum(layout.gpus * n for layout, n in self.instances)

    def gpus_of(self, role: str) -> int:
        return sum(layout.gpus * n for layout, n in self.instances if layout.role == role)
