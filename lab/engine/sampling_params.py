"""`SamplingParams`: how one request is decoded, in vLLM's vocabulary.

Validated at construction, so a bad request is refused before it reaches the scheduler and
nothing already accepted is disturbed. Every value must be one the sampler can represent: floats
finite, integers within 64 bits (what torch tensors and generator seeds hold), so a request that
passes here cannot make a step raise for the batch it joins. A refusal is an `InvalidParam` (a
`ValueError`) naming the field in `.param`. What depends on the model (token ids inside the
vocabulary) is checked by `prompt_checks.check_sampling_ids` when the engine admits the request.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # OpenAI's range for `seed`; torch's for every integer tensor
MAX_LOGPROBS = 20  # most top logprobs per token (vLLM's default max_logprobs, OpenAI's top_logprobs bound)
# Like vLLM: a positive temperature below this is raised to it, since logits / 1e-40 overflow float32
# to inf and the softmax turns to NaN; at 0.01 sampling is already all but greedy.
MIN_POSITIVE_TEMPERATURE = 1e-2


class InvalidParam(ValueError):
    """A sampling field the engine cannot honour; `param` names it (e.g. "top_p")."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


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
    logprobs: int | None = None  # None: no logprobs; k: each sampled token's logprob and the k most likely

    def __post_init__(self) -> None:
        # Accept a bare string or a list for the sequence fields, as vLLM does.
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        if not all(_is_int(t) for t in self.stop_token_ids):
            raise InvalidParam("stop_token_ids", f"stop_token_ids must be integers, got {list(self.stop_token_ids)!r}")
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if self.top_k == -1:
            object.__setattr__(self, "top_k", 0)
        self._validate()
        if 0.0 < self.temperature < MIN_POSITIVE_TEMPERATURE:
            object.__setattr__(self, "temperature", MIN_POSITIVE_TEMPERATURE)

    def _validate(self) -> None:
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise InvalidParam("max_tokens", f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not _is_int(self.min_tokens) or not 0 <= self.min_tokens <= self.max_tokens:
            raise InvalidParam(
                "min_tokens", f"min_tokens must be in [0, max_tokens={self.max_tokens}], got {self.min_tokens!r}"
            )
        if not _is_number(self.temperature) or not math.isfinite(self.temperature) or self.temperature < 0:
            raise InvalidParam("temperature", f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not _is_number(self.top_p) or not 0.0 < self.top_p <= 1.0:  # NaN fails the comparison too
            raise InvalidParam("top_p", f"top_p must be in (0, 1], got {self.top_p!r}")
        if not _is_int(self.top_k) or not 0 <= self.top_k <= INT64_MAX:
            raise InvalidParam("top_k", f"top_k must be an integer in [1, {INT64_MAX}], or 0 or -1 to disable it, "
                                        f"got {self.top_k!r}")
        if self.seed is not None and (not _is_int(self.seed) or not INT64_MIN <= self.seed <= INT64_MAX):
            raise InvalidParam("seed", f"seed must be a 64-bit signed integer in [{INT64_MIN}, {INT64_MAX}], "
                                       f"got {self.seed!r}")
        if any(t < 0 for t in self.stop_token_ids):
            raise InvalidParam("stop_token_ids", f"stop_token_ids must be >= 0, got {list(self.stop_token_ids)!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise InvalidParam("stop", "stop strings must be non-empty strings")
        if self.logprobs is not None and (not _is_int(self.logprobs) or not 0 <= self.logprobs <= MAX_LOGPROBS):
            raise InvalidParam("logprobs", f"logprobs must be an integer in [0, {MAX_LOGPROBS}], got {self.logprobs!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # numpy integers too


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
