"""`SamplingParams`: how one request is decoded, in vLLM's vocabulary.

Validated at construction, so a bad request is refused before it reaches the scheduler and
nothing already accepted is disturbed.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0  # nucleus mass kept, in (0, 1]
    top_k: int = 0  # 0 (or -1) disables top-k
    seed: int | None = None  # per-request generator; same seed, same tokens
    max_tokens: int = 16  # upper bound on generated tokens
    min_tokens: int = 0  # stop conditions are ignored until this many tokens exist
    stop: tuple[str, ...] = ()  # stop strings (excluded from the text)
    stop_token_ids: tuple[int, ...] = ()  # extra tokens that end the request
    ignore_eos: bool = False  # keep going past the model's end-of-sequence token
    skip_special_tokens: bool = True  # when detokenizing

    def __post_init__(self) -> None:
        # Accept a bare string or a list for the sequence fields, as vLLM does.
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if self.top_k == -1:
            object.__setattr__(self, "top_k", 0)
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if self.min_tokens < 0 or self.min_tokens > self.max_tokens:
            raise ValueError(
                f"min_tokens must be in [0, max_tokens={self.max_tokens}], got {self.min_tokens!r}"
            )
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (or -1 to disable), got {self.top_k!r}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
