"""`AsyncLLMBackend`: the `ServingBackend` over our engine (`lab.engine.AsyncLLM`).

Contract: `AsyncLLMBackend.load(engine_args, served_model_name)` builds the engine (seconds to
minutes: call it off the event loop) and returns a backend whose `generate` turns the engine's
`RequestOutput`s into `Delta`s. The engine's refusal (a ValueError before the first output)
becomes `RequestRefused`; a step that failed on this request alone becomes `RequestFailed`; a
failed step (RuntimeError) becomes `BackendError`. `stall_reason` is set while the step loop has
not turned for `iteration_timeout_s`; `degraded_reason` while the engine's latest step sampled non-finite
logits (`launched_step.LogitsHealth`). No `fault_control`: fault injection needs the engine core process.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from lab.engine.outputs import RequestFailedError
from lab.engine.sampling_params import SamplingParams
from lab.server.backend import BackendError, BackendStats, Delta, RequestFailed, RequestRefused, TokenizerLike
from lab.server.limits import ENGINE_ITERATION_TIMEOUT_S

if TYPE_CHECKING:
    from lab.engine.args import EngineArgs
    from lab.engine.async_engine import AsyncLLM
    from lab.engine.outputs import RequestOutput


class AsyncLLMBackend:
    def __init__(self, llm: AsyncLLM, model_name: str,
                 iteration_timeout_s: float = ENGINE_ITERATION_TIMEOUT_S) -> None:
        self._llm = llm
        self.model_name = model_name
        self.max_model_len: int = llm.engine.max_model_len
        self.vocab_size: int = int(llm.engine.model_config.vocab_size)
        self.tokenizer: TokenizerLike = llm.engine.tokenizer
        self._iteration_timeout_s = iteration_timeout_s

    @classmethod
    def load(cls, engine_args: EngineArgs, served_model_name: str,
             iteration_timeout_s: float = ENGINE_ITERATION_TIMEOUT_S) -> AsyncLLMBackend:
        from lab.engine.async_engine import AsyncLLM  # torch: only once a model is really loaded

        return cls(AsyncLLM.from_args(engine_args), served_model_name, iteration_timeout_s)

    async def generate(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams,
        request_id: str,
        priority: int = 0,
    ) -> AsyncIterator[Delta]:
        outputs = self._llm.generate(prompt_token_ids, params, request_id, priority=priority)
        started = False
        try:
            async for out in outputs:
                started = True
                yield _delta(out)
        except ValueError as exc:
            if started:
                raise BackendError(str(exc)) from exc
            raise RequestRefused(str(exc)) from exc
        except RequestFailedError as exc:
            raise RequestFailed(str(exc)) from exc
        except RuntimeError as exc:
            raise BackendError(str(exc)) from exc
        finally:
            # AsyncLLM aborts a request whose consumer left; close it now rather than at GC.
            await outputs.aclose()

    def abort(self, request_id: str) -> None:
        try:
            self._llm.abort(request_id)
        except RuntimeError:
            pass  # the engine is already shut down: nothing left to free

    @property
    def dead_reason(self) -> str | None:
        return self._llm.dead_reason

    @property
    def stall_reason(self) -> str | None:
        stalled_s = self._llm.stalled_for_s
        if stalled_s <= self._iteration_timeout_s or self.dead_reason is not None:
            return None
        return f"the engine loop has not turned for {stalled_s:.1f}s (limit {self._iteration_timeout_s:g}s): hung"

    @property
    def degraded_reason(self) -> str | None:
        return self._llm.engine.runner.logits_health.degraded  # a racy read of one attribute: fine for a probe

    def stats(self) -> BackendStats:
        stats = self._llm.stats()
        return BackendStats(
            num_requests_running=int(stats["num_requests_running"]),
            num_requests_waiting=int(stats["num_requests_waiting"]),
            kv_cache_usage=float(stats["kv_cache_usage_perc"]),
            step_gaps=stats["step_gaps"],
        )

    def shutdown(self) -> None:
        self._llm.shutdown()


def _delta(out: RequestOutput) -> Delta:
    return Delta(
        text=out.new_text,
        token_ids=tuple(out.new_token_ids),
        num_output_tokens=out.num_output_tokens,  # no copy of the whole output each step
        finish_reason=out.finish_reason if out.finished else None,
        queue_time_s=out.metrics.time_in_queue_s,
        num_preemptions=out.metrics.num_preemptions,
        logprobs=tuple(out.new_logprobs),
    )
