"""`LLMEngine`: the synchronous core. Each `step()` is schedule → run → postprocess.

It validates and admits requests, asks the scheduler what to compute, has the runner compute
it, then appends sampled tokens, detokenizes, applies stop rules and returns one
`RequestOutput` per request that changed. A bad request is refused in `add_request` with an
error that names the problem, before it can disturb the requests already running.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch

from lab.engine.args import EngineArgs
from lab.engine.block_manager import BlockManager
from lab.engine.detokenizer import IncrementalDetokenizer
from lab.engine.kv_cache import allocate_kv_cache
from lab.engine.kv_sizing import blocks_from_budget, cuda_kv_budget_bytes, profile_peak_activation_bytes
from lab.engine.loader import load_model
from lab.engine.cuda_graphs import DecodeGraphs
from lab.engine.models.layers import set_fused_ops
from lab.engine.models.moe import set_moe_backend
from lab.engine.runner import ModelRunner
from lab.engine.outputs import CompletionOutput, RequestMetrics, RequestOutput
from lab.engine.sampling_params import SamplingParams
from lab.engine.scheduler import Scheduler
from lab.engine.sequence import FinishReason, Sequence
from lab.engine.stop_checker import check_stop
from lab.engine.tokenizer_loading import load_tokenizer


@dataclass
class _Request:
    prompt: str | None
    detokenizer: IncrementalDetokenizer
    emitted_tokens: int = 0  # output tokens already reported in a RequestOutput
    emitted_chars: int = 0  # output text already reported in a RequestOutput


class LLMEngine:
    def __init__(self, args: EngineArgs) -> None:
        self.args = args
        self.device = args.resolve_device()
        self.dtype = args.resolve_dtype(self.device)
        loaded = load_model(args.model, self.dtype, self.device, seed=args.seed, hf_overrides=args.hf_overrides or None)
        self.model = loaded.module
        self.model_config = loaded.config
        self.max_model_len = self._resolve_max_model_len(loaded.config.max_position_embeddings)
        self.tokenizer = load_tokenizer(args.tokenizer, loaded.checkpoint_dir)
        self.eos_token_id = self._resolve_eos()
        self.kv_cache_spec = self.model.kv_cache_spec(self.dtype)
        self.num_blocks = self._size_kv_cache()
        kv_caches = allocate_kv_cache(self.kv_cache_spec, self.num_blocks, args.block_size, self.device)
        self.block_manager = BlockManager(self.num_blocks, args.block_size)
        self.scheduler = Scheduler(args.scheduler_config(), self.block_manager)
        self.attention_backend = args.resolve_attention_backend(self.device)
        set_moe_backend(self.model, args.resolve_moe_backend(self.device))
        set_fused_ops(self.model, args.use_fused_ops(self.device))
        self.graphs = self._capture_graphs(kv_caches) if args.use_cuda_graphs(self.device) else None
        self.runner = ModelRunner(
            self.model, kv_caches, args.block_size, self.device, self.eos_token_id, self.attention_backend, self.graphs
        )
        self._requests: dict[str, _Request] = {}

    # ---- admission -------------------------------------------------------------------------
    def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        *,
        priority: int = 0,
        deadline: float | None = None,
        arrival_time: float | None = None,
        prompt_text: str | None = None,
    ) -> None:
        """Validate and queue a request. Raises ValueError naming the problem; nothing else changes.

        `prompt_text` names the text of a prompt given as already-validated token ids.
        """
        params = params or SamplingParams()
        if request_id in self._requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        text, prompt_ids = self.validate_prompt(prompt)
        prompt_text = text if text is not None else prompt_text
        seq = Sequence(
            request_id=request_id,
            prompt_token_ids=prompt_ids,
            sampling_params=params,
            arrival_time=arrival_time if arrival_time is not None else time.time(),
            priority=priority,
            deadline=deadline,
        )
        self.scheduler.add(seq)  # may refuse a prompt that can never fit the cache or budget
        detok = IncrementalDetokenizer(
            self.tokenizer, prompt_ids, skip_special_tokens=params.skip_special_tokens, stop=params.stop
        )
        self._requests[request_id] = _Request(prompt_text, detok)

    def validate_prompt(self, prompt: str | list[int]) -> tuple[str | None, list[int]]:
        """(text or None, token ids) of a prompt the engine can serve; else ValueError saying why."""
        if isinstance(prompt, str):
            text, prompt_ids = prompt, self.tokenizer.encode(prompt)
        elif isinstance(prompt, (list, tuple)) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            text, prompt_ids = None, list(prompt)
        else:
            raise ValueError("prompt must be a string or a list of token ids (ints)")
        self._check_prompt_ids(prompt_ids)
        return text, prompt_ids

    def _check_prompt_ids(self, prompt_ids: list[int]) -> None:
        if not prompt_ids:
            raise ValueError("prompt is empty: at least one token is needed")
        if len(prompt_ids) >= self.max_model_len:
            raise ValueError(
                f"prompt has {len(prompt_ids)} tokens but the model's context (max_model_len) is "
                f"{self.max_model_len}: it must leave room for at least one output token"
            )
        vocab = self.model_config.vocab_size
        bad = [t for t in prompt_ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt token ids {bad[:5]} are outside the model's vocabulary [0, {vocab})")

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Cancel a request (its client left); frees its KV blocks. Unknown ids are ignored."""
        seq = self.scheduler.abort(request_id)
        if seq is None or request_id not in self._requests:
            return None
        return self._finish_output(seq)

    # ---- the step loop ---------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        output = self.scheduler.schedule()
        sampled = self.runner.execute(output)
        outputs = [self._postprocess(seq) for seq in self.scheduler.update_from_output(output, sampled)]
        # Requests the scheduler ended itself: past their deadline, or grown beyond the whole cache.
        ended = output.expired + output.kv_exhausted
        outputs += [self._finish_output(seq) for seq in ended if seq.request_id in self._requests]
        return outputs

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    def _postprocess(self, seq: Sequence) -> RequestOutput:
        state = self._requests[seq.request_id]
        token = seq.output_token_ids[-1]
        reason = check_stop(seq, self.eos_token_id, self.max_model_len)
        if reason is not FinishReason.STOP:  # a stop token is not part of the text
            state.detokenizer.add(token)
            if state.detokenizer.stopped_by is not None:
                reason = FinishReason.STOP
                seq.stop_reason = state.detokenizer.stopped_by
        if reason is None:
            return self._make_output(seq, state, finished=False)
        self.scheduler.finish(seq, reason)
        return self._finish_output(seq)

    def _finish_output(self, seq: Sequence) -> RequestOutput:
        state = self._requests.pop(seq.request_id)
        self.runner.release(seq.request_id)
        if state.detokenizer.stopped_by is None:
            state.detokenizer.finish()
        return self._make_output(seq, state, finished=True)

    def _make_output(self, seq: Sequence, state: _Request, finished: bool) -> RequestOutput:
        new_tokens = seq.output_token_ids[state.emitted_tokens :]
        text = state.detokenizer.text
        new_text = text[state.emitted_chars :]
        state.emitted_tokens, state.emitted_chars = seq.num_output_tokens, len(text)
        completion = CompletionOutput(
            index=0,
            text=text,
            token_ids=list(seq.output_token_ids),
            finish_reason=seq.finish_reason.value if finished and seq.finish_reason else None,
            stop_reason=seq.stop_reason,
        )
        metrics = RequestMetrics(
            arrival_time=seq.arrival_time,
            first_scheduled_time=seq.first_scheduled_time,
            first_token_time=seq.first_token_time,
            finished_time=seq.finished_time,
            num_preemptions=seq.num_preemptions,
        )
        return RequestOutput(
            request_id=seq.request_id,
            prompt=state.prompt,
            prompt_token_ids=seq.prompt_token_ids,
            outputs=[completion],
            finished=finished,
            metrics=metrics,
            new_text=new_text,
            new_token_ids=new_tokens,
        )

    # ---- construction helpers --------------------------------------------------------------
    def _resolve_max_model_len(self, model_len: int) -> int:
        if self.args.max_model_len is None:
            return model_len
        if self.args.max_model_len > model_len:
            raise ValueError(
                f"max_model_len={self.args.max_model_len} exceeds the model's context of {model_len} tokens"
            )
        return self.args.max_model_len

    def _resolve_eos(self) -> int | None:
        eos = self.model_config.eos_token_id
        if isinstance(eos, (list, tuple)):
            eos = eos[0] if eos else None
        return eos if eos is not None else self.tokenizer.eos_token_id

    def _capture_graphs(self, kv_caches: list[tuple[torch.Tensor, ...]]) -> DecodeGraphs | None:
        """Decode graphs in batch buckets; a capture that fails leaves the engine eager, with a warning."""
        graphs = DecodeGraphs(
            self.model, kv_caches, self.args.block_size, self.args.max_num_seqs, self.max_model_len, self.device
        )
        try:
            graphs.capture()
        except Exception as exc:  # the eager path is always correct; say why the fast one is off
            warnings.warn(f"CUDA graph capture failed, running eager: {type(exc).__name__}: {exc}", stacklevel=2)
            return None
        return graphs

    def _size_kv_cache(self) -> int:
        args = self.args
        if args.num_gpu_blocks is not None:
            return args.num_gpu_blocks
        if self.device.type == "cuda":
            num_tokens = min(args.max_num_batched_tokens, self.max_model_len)
            peak = profile_peak_activation_bytes(
                self.model, self.kv_cache_spec, num_tokens, min(args.max_num_seqs, num_tokens), args.block_size, self.device
            )
            budget = cuda_kv_budget_bytes(self.device, args.gpu_memory_utilization, peak)
        else:
            budget = args.cpu_kv_cache_space_gib * 2**30
        return blocks_from_budget(budget, self.kv_cache_spec, args.block_size)

    @property
    def kv_cache_usage(self) -> float:
        return self.block_manager.usage
