"""The typed records a scheduler step hands to the runner and the engine.

`ScheduledChunk`: compute one request's tokens `start_position .. end_position` this step; when
the chunk reaches the end of the request's known tokens (`samples`), the runner samples one
token for it. `SchedulerOutput`: the step's chunks, plus the requests the step preempted or
ended, so the engine can report them. Re-exported by `lab.engine.scheduler`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lab.engine.sequence import Sequence


@dataclass(frozen=True, eq=False)
class ScheduledChunk:
    """Compute seq's tokens `start_position .. start_position + num_new_tokens` this step."""

    seq: Sequence
    num_new_tokens: int
    # Snapshotted at construction: both change once the step's output is applied.
    start_position: int = field(init=False)  # seq.num_computed_tokens when scheduled
    samples: bool = field(init=False)  # the chunk reaches the end of seq's tokens: sample one

    def __post_init__(self) -> None:
        if self.num_new_tokens < 1:
            raise ValueError(f"a chunk computes at least one token, got {self.num_new_tokens}")
        start = self.seq.num_computed_tokens
        object.__setattr__(self, "start_position", start)
        object.__setattr__(self, "samples", start + self.num_new_tokens == self.seq.num_tokens)

    @property
    def end_position(self) -> int:
        return self.start_position + self.num_new_tokens


@dataclass(frozen=True, eq=False)
class SchedulerOutput:
    scheduled: list[ScheduledChunk]
    preempted: list[Sequence]  # back to waiting, KV freed, to be recomputed later
    expired: list[Sequence]  # finished this step with FinishReason.DEADLINE
    num_batched_tokens: int  # sum of the chunks' new tokens
    kv_exhausted: list[Sequence] = field(default_factory=list)  # finished with LENGTH: cache too small

    @property
    def is_empty(self) -> bool:
        return not self.scheduled
