"""`LLMEngine`: the synchronous core. Each `step()` is schedule → run → postprocess.

It validates and admits requests, asks the scheduler what to compute, has the runner compute
it, then appends sampled tokens, detokenizes (one tokenizer call per step), applies stop rules
and returns one `RequestOutput` per request that changed. With `async_scheduling`, step N+1 is
scheduled and launched before step N's tokens are processed, so host work overlaps the GPU. A bad request is refused in `add_request` with an
error that names the problem, before it can disturb the requests already running.

Per-request failure isolation (defence in depth behind that validation): when running a step's
batch raises, the engine runs the step again one request at a time; a request whose own chunk
raises ends alone (finish reason "abort", the error in `RequestOutput.error`), and the others get
this step's tokens as if nothing had happened. One poison request never fails its batch.
Non-finite logits (`launched_step.NonFiniteLogitsError`, seen without a host sync) take the same road: each
request they hit ends with an error naming them, never with garbage tokens.
With `tensor_parallel_size > 1` this engine is rank 0 of a group (`lab.engine.parallel`): the model is split over
one worker process per other rank, each step's inputs go to them from the runner, and `shutdown()` stops them.
Fault injection (`lab.engine.faults`) acts through `fault_hook`, the first thing `step()` checks; a hot
reload (`update_weights`, `lab.engine.weight_reload`) acts right after it, between two steps.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from dataclasses import dataclass

import torch

from lab.engine.args import EngineArgs
from lab.engine.block_manager import BlockManager
from lab.engine.detokenizer import IncrementalDetokenizer, decode_windows
from lab.engine.kv_cache import allocate_kv_cache
from lab.engine.kv_sizing import blocks_from_budget, cuda_kv_budget_bytes, profile_peak_activation_bytes
from lab.engine.loader import load_model
from lab.engine.cuda_graphs import DecodeGraphs, MixedGraphs
from lab.engine.models.layers import set_fused_ops
from lab.engine.models.moe import set_moe_backend
from lab.engine.launched_step import NonFiniteLogitsError
from lab.engine.runner import ModelRunner
from lab.engine.prompt_checks import check_prompt_ids, check_sampling_ids
from lab.engine.outputs import CompletionOutput, RequestMetrics, RequestOutput, TokenLogprob
from lab.engine.scheduler_output import SchedulerOutput
from lab.engine.sampling_params import SamplingParams
from lab.engine.scheduler import Scheduler
from lab.engine.sequence import FinishReason, Sequence
from lab.engine.startup import StartupPhases, device_sync
from lab.engine.stop_checker import check_stop
from lab.engine.tokenizer_loading import load_tokenizer
from lab.engine.weight_rebind import reserved_bytes
from lab.engine.weight_reload import WeightReloader, source_label
from lab.engine.weight_standby import ReloadError

logger = logging.getLogger(__name__)
# Failures of the engine itself, not of a request's input, even when a request fails alone: memory runs out
# for every request alike, and corrupt weights give every request garbage. Another replica may serve them.
ENGINE_FAULTS = (torch.cuda.OutOfMemoryError, NonFiniteLogitsError)


@dataclass
class _Request:
    prompt: str | None
    detokenizer: IncrementalDetokenizer
    emitted_tokens: int = 0  # output tokens already reported in a RequestOutput
    emitted_chars: int = 0  # output text already reported in a RequestOutput
    logprobs: list[TokenLogprob] = dataclasses.field(default_factory=list)  # one per output token, if asked


class LLMEngine:
    def __init__(self, args: EngineArgs, memory_timeline=None, parallel=None) -> None:
        """`parallel`: a tensor-parallel worker's `TensorParallel` (`parallel/worker.py`); the leader starts its
        own group here when `args.tensor_parallel_size > 1` (`parallel/launch.py`)."""
        self.args = args
        self.parallel = parallel
        self.device = args.resolve_device() if parallel is None else parallel.device
        tp_init_s = 0.0
        if parallel is None and args.tensor_parallel_size > 1:
            start = time.perf_counter()
            self._start_tensor_parallel()
            tp_init_s = time.perf_counter() - start
        try:
            self._build(args, memory_timeline, tp_init_s)
        except BaseException as exc:
            if self.parallel is not None and self.parallel.is_leader:
                self.parallel.mark_broken(exc)  # the workers may be anywhere in their own construction
                self.parallel.shutdown()
            raise

    def _start_tensor_parallel(self) -> None:
        """Check that the model splits (before any process starts), then start the workers and join them."""
        from lab.engine.loader import model_config
        from lab.engine.parallel.launch import rank_device, start_tensor_parallel
        from lab.engine.parallel.plan import check_tensor_parallel

        check_tensor_parallel(model_config(self.args.model, self.args.hf_overrides or None),
                              self.args.tensor_parallel_size)
        self.parallel = start_tensor_parallel(self.args, self.device)
        self.device = rank_device(self.device, 0)

    def _build(self, args: EngineArgs, memory_timeline, tp_init_s: float) -> None:
        self.dtype = args.resolve_dtype(self.device)
        # Seconds per phase of this constructor (`lab bench coldstart` reads them), synced on CUDA at each boundary.
        # `memory_timeline` (a lab.gpu.memory_timeline.MemoryTimeline, optional) books the allocator's bytes to the same phases.
        self.startup_phases = phases = StartupPhases(device_sync(self.device),
                                                     memory_timeline.phase if memory_timeline is not None else None)
        with phases.phase("device_init"):
            pass  # its sync creates the CUDA context, which would otherwise land in the first weight phase
        if tp_init_s:  # the leader's: its workers started and every rank joined the group
            phases.add("tensor_parallel_init", tp_init_s)
        loaded = load_model(args.model, self.dtype, self.device, seed=args.seed, hf_overrides=args.hf_overrides or None,
                            load_format=args.load_format, phases=phases, quantization=args.quantization,
                            tp=self.parallel)
        self.model = loaded.module
        self.model_config = loaded.config
        self.checkpoint_dir = loaded.checkpoint_dir  # None for a preset (dummy weights)
        self.max_model_len = self._resolve_max_model_len(loaded.config.max_position_embeddings)
        with phases.phase("tokenizer"):
            self.tokenizer = load_tokenizer(args.tokenizer, loaded.checkpoint_dir)
        self.eos_token_id = self._resolve_eos()
        self.kv_cache_spec = self.model.kv_cache_spec(self.dtype).with_cache_dtype(args.kv_cache_dtype)
        with phases.phase("kv_profile"):  # activation profiling (CUDA) and the block count
            self.num_blocks = self._size_kv_cache()
        with phases.phase("kv_allocation"):
            kv_caches = allocate_kv_cache(self.kv_cache_spec, self.num_blocks, args.block_size, self.device)
        self.block_manager = BlockManager(self.num_blocks, args.block_size)
        self.scheduler = Scheduler(args.scheduler_config(), self.block_manager, max_model_len=self.max_model_len)
        self.attention_backend = args.resolve_attention_backend(self.device)
        set_moe_backend(self.model, args.resolve_moe_backend(self.device))
        set_fused_ops(self.model, args.use_fused_ops(self.device))
        with phases.phase("graph_capture"):  # ~0 when eager
            reserved = reserved_bytes(self.device)
            self.graphs, self.mixed_graphs = self._capture_graphs(kv_caches) if args.use_cuda_graphs(self.device) else (None, None)
            self.graph_pool_bytes = reserved_bytes(self.device) - reserved  # a reload's second graph set needs as much
        self.runner = ModelRunner(
            self.model, kv_caches, args.block_size, self.device, self.eos_token_id, self.attention_backend, self.graphs,
            self.mixed_graphs, self.parallel if self.parallel is not None and self.parallel.is_leader else None,
        )
        self._requests: dict[str, _Request] = {}
        self.async_scheduling = args.use_async_scheduling(self.device)
        self._one_token_texts: dict[bool, dict[int, str]] = {True: {}, False: {}}  # skip_special_tokens -> id -> text
        self._in_flight = None  # async scheduling: (SchedulerOutput, LaunchedStep) of the step on the GPU
        self.fault_hook = None  # lab.engine.faults: called first in step() while a fault is armed, else None
        self.reloader = WeightReloader(self, source_label(str(args.model), args.seed))  # hot reload, one at a time

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
        check_sampling_ids(params, self.model_config.vocab_size)  # ids the sampler would index the logits with
        prompt_text = text if text is not None else prompt_text
        seq = Sequence(
            request_id=request_id,
            prompt_token_ids=prompt_ids,
            sampling_params=params,
            arrival_time=arrival_time if arrival_time is not None else time.time(),
            priority=priority,
            deadline=deadline,
        )
        seq.weights_generation = self.reloader.admission_generation  # a drain admits on the new weights
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
        check_prompt_ids(prompt_ids, self.model_config.vocab_size, self.max_model_len)

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Cancel a request (its client left); frees its KV blocks. Unknown ids are ignored."""
        seq = self.scheduler.abort(request_id)
        if seq is None or request_id not in self._requests:
            return None
        return self._finish_output(seq)

    # ---- the step loop ---------------------------------------------------------------------
    def step(self, final_only: bool = False) -> list[RequestOutput]:
        """One step; outputs of the requests it changed. `final_only`: only those that finished
        (vLLM's FINAL_ONLY: an offline caller skips building the running requests' outputs; a
        final output's deltas then cover everything since the previous output it was given)."""
        if self.fault_hook is not None:  # an injected fault (lab serve --enable-fault-injection); else free
            self.fault_hook()
        if self.reloader.busy:  # a hot reload acts between steps: here, before this one is scheduled
            self.reloader.poll()
        if self.async_scheduling:
            return self._step_overlapped(final_only)
        output = self.scheduler.schedule()
        try:
            launched = self.runner.launch(output)
            sampled, logprobs = launched.tokens(), launched.logprobs_by_request()
        except Exception as exc:
            return self._run_alone(output, exc, final_only) + self._ended_outputs(output)
        outputs = self._process_tokens(self.scheduler.update_from_output(output, sampled), final_only, logprobs)
        return outputs + self._ended_outputs(output)

    def _step_overlapped(self, final_only: bool) -> list[RequestOutput]:
        """Async scheduling: launch step N+1, then wait for step N's tokens and process them.

        Step N's sampled tokens are placeholders on the host (`Sequence.num_pending_tokens`)
        until they arrive; step N+1 reads them from the device. A request that step N finishes
        (a stop token, a stop string) was also computed in step N+1; that token is discarded.
        """
        previous, self._in_flight = self._in_flight, None
        output = self.scheduler.schedule()
        launched, error = None, None
        try:
            launched = self.runner.launch(output, previous[1] if previous else None) if output.scheduled else None
        except Exception as exc:  # isolated below, once step N's tokens are in
            error = exc
        outputs: list[RequestOutput] = []
        if previous is not None:  # the GPU now has step N+1 queued behind step N: host work overlaps
            prev_output, prev_launched = previous
            received = self.scheduler.apply_sampled(prev_output, prev_launched.tokens())
            outputs = self._process_tokens(received, final_only, prev_launched.logprobs_by_request())
        if error is not None:  # step N's tokens are applied: no pending token left to chain from
            outputs += self._run_alone(output, error, final_only)
        elif launched is not None:
            self.scheduler.commit(output)
            self._in_flight = (output, launched)
        return outputs + self._ended_outputs(output)

    def _run_alone(self, output: SchedulerOutput, error: Exception, final_only: bool) -> list[RequestOutput]:
        """The batch of `output` raised `error`: run each request's chunk alone (not yet counted as
        computed, so running it again is safe); fail those whose own chunk raises, keep the rest."""
        logger.warning("a step of %d request(s) failed (%r): running them one at a time", len(output.scheduled), error)
        sampled: dict[str, int] = {}
        logprobs: dict[str, TokenLogprob] = {}
        failed: list[RequestOutput] = []
        for chunk in output.scheduled:
            seq = chunk.seq
            if seq.is_finished or seq.request_id not in self._requests:
                continue  # ended meanwhile (step N's stop rules, async scheduling)
            alone = SchedulerOutput([chunk], [], [], chunk.num_new_tokens)
            try:
                launched = self.runner.launch(alone)
                sampled.update(launched.tokens())
                logprobs.update(launched.logprobs_by_request())
            except Exception as exc:
                logger.error("request %r fails alone in a step: %r; aborting it", seq.request_id, exc)
                self.scheduler.finish(seq, FinishReason.ABORT)
                failed.append(dataclasses.replace(
                    self._finish_output(seq), error=f"the engine step failed on this request: {type(exc).__name__}: {exc}",
                    error_is_request_fault=not isinstance(exc, ENGINE_FAULTS)))
        received = self.scheduler.update_from_output(output, sampled)  # the failed ones are finished: skipped
        return failed + self._process_tokens(received, final_only, logprobs)

    def _ended_outputs(self, output) -> list[RequestOutput]:
        """Requests the scheduler ended itself: past their deadline, or grown beyond the whole cache."""
        ended = output.expired + output.kv_exhausted
        return [self._finish_output(seq) for seq in ended if seq.request_id in self._requests]

    # ---- hot reload ------------------------------------------------------------------------------
    def update_weights(self, source: str, *, seed: int | None = None, policy: str = "switch",
                       staging: str = "auto") -> dict:
        """Load `source` (a checkpoint directory, or a preset with `seed`) beside the live weights, check and
        probe it, then switch (`lab.engine.weight_reload`). Blocking; returns the reload's record (outcome
        `switched`, or `draining`: the old requests finish on the old weights over the next steps). A source
        that fails is refused with a `ReloadError` naming the problem; the live weights never change."""
        self.reloader.start(source, seed=seed, policy=policy, staging=staging, background=False)
        record = self.reloader.take_completed()[-1]  # this reload's; an earlier drain's `promoted` may precede it
        if record["outcome"] == "refused":
            raise ReloadError(record["error"])
        return record

    def rebind_weights(self, module: torch.nn.Module, graphs: DecodeGraphs | None,
                       mixed_graphs: MixedGraphs | None) -> None:
        """A hot reload's pointer switch (`lab.engine.weight_rebind`): `module`, and the graphs captured over it (None:
        eager), replace the live ones wherever the engine holds them; the caller drops the retired ones."""
        self.model, self.graphs, self.mixed_graphs = module, graphs, mixed_graphs
        self.runner.rebind(module, graphs, mixed_graphs)

    @property
    def weights_version(self) -> str:
        return self.reloader.version.label

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    def shutdown(self) -> None:
        """Stop the tensor-parallel workers and leave their group (nothing to do on one device). Idempotent."""
        if self.parallel is not None and self.parallel.is_leader:
            self.parallel.shutdown()

    def _process_tokens(self, seqs: list[Sequence], final_only: bool = False,
                        logprobs: dict[str, TokenLogprob] | None = None) -> list[RequestOutput]:
        """Stop rules and text for each request that just received a token (one tokenizer call)."""
        reasons: list[FinishReason | None] = []
        to_decode: list[IncrementalDetokenizer] = []
        for seq in seqs:
            reason = check_stop(seq, self.eos_token_id, self.max_model_len)
            state = self._requests[seq.request_id]
            if seq.sampling_params.logprobs is not None:
                state.logprobs.append(logprobs[seq.request_id])  # a KeyError here is a bug: never misalign them
            detok = state.detokenizer
            if reason is not FinishReason.STOP and detok.push(seq.output_token_ids[-1]):  # a stop token is not text
                to_decode.append(detok)
            reasons.append(reason)
        self._decode(to_decode)
        outputs = []
        for seq, reason in zip(seqs, reasons):
            state = self._requests[seq.request_id]
            if reason is not FinishReason.STOP and state.detokenizer.stopped_by is not None:
                reason = FinishReason.STOP
                seq.stop_reason = state.detokenizer.stopped_by
            if reason is None:
                if not final_only:
                    outputs.append(self._make_output(seq, state, finished=False))
            else:
                self.scheduler.finish(seq, reason)
                outputs.append(self._finish_output(seq))
        return outputs

    def _decode(self, detoks: list[IncrementalDetokenizer]) -> None:
        for skip in (True, False):  # one decode_windows call per flag value
            group = [d for d in detoks if d.skip_special_tokens is skip]
            if not group:
                continue
            windows = [w for d in group for w in d.windows()]
            texts = decode_windows(self.tokenizer, windows, skip, self._one_token_texts[skip])
            for i, detok in enumerate(group):
                detok.accept(texts[2 * i], texts[2 * i + 1])

    def _finish_output(self, seq: Sequence) -> RequestOutput:
        state = self._requests.pop(seq.request_id)
        self.runner.release(seq.request_id)
        if state.detokenizer.stopped_by is None:
            state.detokenizer.finish()
        return self._make_output(seq, state, finished=True)

    def _make_output(self, seq: Sequence, state: _Request, finished: bool) -> RequestOutput:
        num_tokens = seq.num_output_tokens - seq.num_pending_tokens  # placeholders are not output yet
        new_tokens = seq.output_token_ids[state.emitted_tokens : num_tokens]
        new_logprobs = state.logprobs[state.emitted_tokens : num_tokens]
        detok = state.detokenizer
        new_text = detok.text_since(state.emitted_chars)
        state.emitted_tokens, state.emitted_chars = num_tokens, detok.num_text_chars
        completion = CompletionOutput.snapshot(
            index=0,
            text_source=detok.text_snapshot(),
            token_source=(seq.output_token_ids, num_tokens),
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
            new_logprobs=new_logprobs,
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

    def _capture_graphs(self, kv_caches: list[tuple[torch.Tensor, ...]]) -> tuple[DecodeGraphs | None, MixedGraphs | None]:
        """Decode graphs in batch buckets, then (where the model allows) graphs for steps with prefill
        chunks in token buckets, all in one memory pool, the larger activations first. A capture that
        fails leaves that kind of step eager, with a warning saying why."""
        args = self.args
        mixed = None
        pool = None
        if args.mixed_cuda_graphs and getattr(self.model, "supports_mixed_graphs", False):
            mixed = MixedGraphs(self.model, kv_caches, args.block_size, args.max_num_seqs,
                                args.max_num_batched_tokens, self.max_model_len, self.device)
            try:
                pool = mixed.capture()
            except Exception as exc:  # the eager path is always correct; say why the fast one is off
                warnings.warn(f"CUDA graph capture for mixed steps failed, running them eager: "
                              f"{type(exc).__name__}: {exc}", stacklevel=2)
                mixed, pool = None, None
        decode = DecodeGraphs(self.model, kv_caches, args.block_size, args.max_num_seqs, self.max_model_len, self.device,
                              sizes=args.cuda_graph_sizes)
        try:
            decode.capture(pool)
        except Exception as exc:
            warnings.warn(f"CUDA graph capture failed, running decode eager: {type(exc).__name__}: {exc}", stacklevel=2)
            decode = None
        return decode, mixed

    def _size_kv_cache(self) -> int:
        blocks = self._size_rank_kv_cache()
        return blocks if self.parallel is None else self.parallel.min_int(blocks)  # every rank holds every block

    def _size_rank_kv_cache(self) -> int:
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
