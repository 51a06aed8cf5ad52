"""A launched step: its sampled tokens (and logprobs, and finiteness flags) on their way back to the host.

Contract: `ModelRunner.launch` returns a `LaunchedStep` as soon as the step's GPU work is enqueued; the
tokens are copied back to pinned memory without blocking and `tokens()` waits for them once. Each sampled
row's logits are summed and checked with `isfinite` on the device and the flags travel in the same copy as
the tokens, so the check costs no extra sync: `tokens()` raises `NonFiniteLogitsError` naming the rows'
requests rather than hand out garbage, and `LogitsHealth` says the runner is degraded until a later step
samples finite logits for every row (or `reset()`, after a repair). `logprobs_by_request()` reads the
logprobs of the rows that asked for them.
"""
from __future__ import annotations

import torch

from lab.engine.outputs import TokenLogprob
from lab.engine.sampler import SampledLogprobs


class NonFiniteLogitsError(RuntimeError):
    """A step's logits were not finite (NaN or inf) for these requests: their sampled tokens are garbage."""

    def __init__(self, request_ids: list[str]) -> None:
        super().__init__(f"non-finite logits (NaN or inf) for {len(request_ids)} request(s): the model's weights "
                         "or activations are corrupt; no token was emitted")
        self.request_ids = request_ids


class LogitsHealth:
    """Non-finite logits the runner saw: `degraded` (a reason, or None) from a step that sampled any until a
    step samples finite logits for every row."""

    DEGRADED = "non-finite logits (NaN or inf) in the latest step: the model's output is garbage"

    def __init__(self) -> None:
        self.degraded: str | None = None

    def saw_nonfinite(self) -> None:
        self.degraded = self.DEGRADED

    def saw_finite(self) -> None:
        self.degraded = None

    def reset(self) -> None:
        self.degraded = None


class LaunchedStep:
    """A step whose GPU work is enqueued; `tokens()` waits for its sampled tokens (once);
    `logprobs_by_request()` reads the logprobs of the rows that asked for them (after the tokens)."""

    def __init__(self, request_ids: list[str], tokens: torch.Tensor | None,
                 logprobs: SampledLogprobs | None = None, finite: torch.Tensor | None = None,
                 health: LogitsHealth | None = None) -> None:
        self.request_ids = request_ids
        self.token_tensor = tokens  # (N,) int64 on the device, in `request_ids` order; None: nothing sampled
        self.logprobs = logprobs  # None when no row asked for logprobs
        self._health = health
        # What the host reads: the tokens, then (with `finite`) one 0/1 flag per row, in one copy.
        self._readback = tokens if tokens is None or finite is None else torch.cat([tokens, finite.to(tokens.dtype)])
        self._host: torch.Tensor | None = None
        self._event = None
        if tokens is not None and tokens.is_cuda:  # start the copy back now; wait for it later
            self._host = torch.empty(self._readback.shape, dtype=tokens.dtype, pin_memory=True)
            self._host.copy_(self._readback, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        self._result: dict[str, int] | None = None

    def tokens(self) -> dict[str, int]:
        """{request id: sampled token}; `NonFiniteLogitsError` when any row's logits were not finite."""
        if self._result is None:
            if self._readback is None:
                values: list[int] = []
            elif self._event is not None:
                self._event.synchronize()
                values = self._host.tolist()
            else:
                values = self._readback.tolist()
            if self._readback is not None and self._health is not None:
                self._check_finite(values[len(self.request_ids):])
            self._result = dict(zip(self.request_ids, values))  # zip stops at the tokens: the flags follow
        return self._result

    def _check_finite(self, flags: list[int]) -> None:
        health = self._health
        if 0 in flags:
            bad = [rid for rid, ok in zip(self.request_ids, flags) if not ok]
            health.saw_nonfinite()
            raise NonFiniteLogitsError(bad)
        if health.degraded is not None:
            health.saw_finite()

    def logprobs_by_request(self) -> dict[str, TokenLogprob]:
        return {} if self.logprobs is None else self.logprobs.by_request(self.request_ids)  # waits for the step


class MergedStep:
    """The halves of one step launched on two weight versions (a hot reload's drain), read as one step:
    `request_ids` and `token_tensor` concatenated in part order (what the next step chains from)."""

    def __init__(self, parts: list[LaunchedStep]) -> None:
        self.parts = parts
        self.request_ids = [rid for part in parts for rid in part.request_ids]
        tensors = [part.token_tensor for part in parts if part.token_tensor is not None]
        self.token_tensor = torch.cat(tensors) if tensors else None

    def tokens(self) -> dict[str, int]:
        merged: dict[str, int] = {}
        bad: list[str] = []
        for part in self.parts:  # every part is read, so each updates the health it shares
            try:
                merged.update(part.tokens())
            except NonFiniteLogitsError as exc:
                bad.extend(exc.request_ids)
        if bad:
            raise NonFiniteLogitsError(bad)
        return merged

    def logprobs_by_request(self) -> dict[str, TokenLogprob]:
        return {rid: lp for part in self.parts for rid, lp in part.logprobs_by_request().items()}
