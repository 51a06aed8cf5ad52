"""CUDA graphs for decode steps, in batch-size buckets (nano-vllm's scheme).

Why: a decode step of a small model is ~1 ms of GPU work spread over hundreds of kernels; launching
them from Python costs about as much again. A graph replays the whole forward in one launch.

Contract: `DecodeGraphs(model, kv_caches, ...)`.capture(pool) captures `model.forward` for every
bucket size (largest first, all into one memory pool, so the buckets share activation memory) on static input
buffers. `can_run(meta)` says whether a step fits: pure decode, at most the largest bucket, every
context within `max_model_len`. `run(input_ids, positions, meta)` copies the step into the buffers,
pads the batch to its bucket (padding rows: slot -1 so they write no cache, seq len 0 so they
attend to nothing), replays, and returns hidden (B, hidden) — a view of the graph's output, valid
until the next replay. The eager forward with the same backend is the reference (`enforce_eager`).
Only the Triton backend is captured: its cost follows each sequence's own length while the block
table is padded to the full `max_model_len` width, and its cache write skips padding rows.
`twin(model)` is the same graphs' shape (buckets, buffer sizes, the same KV cache) over another module, with
its own buffers and nothing captured: a hot reload captures it beside the serving step loop
(`capture(side_stream=...)`, `lab.engine.weight_rebind`) so that its switch is a pointer swap.

`MixedGraphs(...)` does the same for steps that are not pure decode (prefill chunks, alone or
mixed with decode rows), in buckets of *tokens* up to `MAX_MIXED_GRAPH_TOKENS`, for models whose
every non-decode step can take one launch-shape-stable attention kernel (`supports_mixed_graphs`:
GQA's varlen kernel; MLA's mixed path loops over prefill chunks in Python and stays eager). The
sequence dimension is padded to `max_num_seqs`: padding sequences have an empty query span and seq
len 0 (the varlen kernel returns at once for their tiles), padding tokens sit past the last query
span (slot -1: no cache write; their rows of the output are garbage and never read, as every op
of the forward other than attention is row-wise). Why: at serving load almost every step carries
a prefill chunk, and an eager forward of a 28-layer model costs a few ms of host time per step,
more than the GPU work of a few hundred tokens.
"""
from __future__ import annotations

import copy
import time
from contextlib import contextmanager

import torch

from lab.engine.attention.metadata import AttentionMetadata


MAX_MIXED_GRAPH_TOKENS = 1024  # above this a step's GPU work dwarfs its launch cost (vLLM captures <= 512)


def bucket_sizes(max_num_seqs: int) -> list[int]:
    """1, 2, 4, 8, then steps of 16 up to max_num_seqs (which is always a bucket)."""
    sizes = [b for b in (1, 2, 4, 8) if b < max_num_seqs] + list(range(16, max_num_seqs, 16))
    return sorted(set(sizes + [max_num_seqs]))


def mixed_bucket_sizes(max_num_batched_tokens: int) -> list[int]:
    """Token buckets: 16, 32, 48, 64, 96, then steps of 32 to 512 and of 128 to the cap.

    Fine steps where serving steps live (a prefill chunk plus up to a few hundred decode rows), so
    padding costs little; capped by the step budget and `MAX_MIXED_GRAPH_TOKENS`."""
    cap = min(max_num_batched_tokens, MAX_MIXED_GRAPH_TOKENS)
    sizes = [16, 32, 48, 64, 96, *range(128, 513, 32), *range(640, MAX_MIXED_GRAPH_TOKENS + 1, 128)]
    return sorted({t for t in sizes if t < cap} | {cap})


class _StepGraphs:
    """What both kinds share: static step buffers (`max_tokens` token rows, `max_seqs` sequences, a
    block table `max_model_len` wide), one graph per bucket captured over them, and loading a step
    into them. Subclasses say what a bucket's metadata is (`_meta`) and how a step picks its bucket."""

    def __init__(self, model: torch.nn.Module, kv_caches: list[tuple[torch.Tensor, ...]], block_size: int,
                 buckets: list[int], max_tokens: int, max_seqs: int, max_model_len: int, device: torch.device) -> None:
        self.model = model
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.buckets = buckets
        self.width = (max_model_len + block_size - 1) // block_size  # block-table columns, fixed
        to = dict(device=device)
        self.input_ids = torch.zeros(max_tokens, dtype=torch.long, **to)
        self.positions = torch.zeros(max_tokens, dtype=torch.long, **to)
        self.slot_mapping = torch.full((max_tokens,), -1, dtype=torch.long, **to)
        self.block_tables = torch.zeros(max_seqs, self.width, dtype=torch.int32, **to)
        self.seq_lens = torch.zeros(max_seqs, dtype=torch.int32, **to)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.capture_s = 0.0

    def _meta(self, bucket: int) -> AttentionMetadata:
        raise NotImplementedError

    def _clear(self) -> None:
        """Buffers that make warm-up and capture runs touch nothing: no cache writes, empty sequences."""
        self.slot_mapping.fill_(-1)
        self.seq_lens.zero_()

    def twin(self, model: torch.nn.Module) -> _StepGraphs:
        """These graphs' shape over `model`: the same buckets and KV cache, new static buffers (allocated on the
        current stream), nothing captured yet."""
        twin = copy.copy(self)
        twin.model, twin.graphs, twin.outputs, twin.capture_s = model, {}, {}, 0.0
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):  # the static step buffers: the twin's own, never the live ones
                setattr(twin, name, torch.zeros_like(value))
            elif callable(value) and name != "model":  # a wrapper patched onto the live graphs (a test's counter)
                delattr(twin, name)
        return twin

    @torch.inference_mode()
    def capture(self, pool=None, side_stream: torch.cuda.Stream | None = None):
        """Capture every bucket, largest first, into `pool` (a new one if None); returns the pool.

        `side_stream`: capture beside a serving step loop (a hot reload's standby, from its background thread):
        warm-ups and captures on that stream, in thread_local capture mode (`_capture_beside_serving`)."""
        start = time.perf_counter()
        with torch.cuda.stream(side_stream) if side_stream is not None else _no_stream():
            self._clear()
            for bucket in reversed(self.buckets):
                args = (self.input_ids[:bucket], self.positions[:bucket], self.kv_caches, self._meta(bucket))
                self.model(*args)  # warm-up: Triton compiles, cuBLAS picks its kernels, outside the graph
                graph = torch.cuda.CUDAGraph()
                if side_stream is None:
                    with torch.cuda.graph(graph, pool=pool):
                        self.outputs[bucket] = self.model(*args)
                else:
                    with _capture_beside_serving(graph, pool, side_stream):
                        self.outputs[bucket] = self.model(*args)
                pool = graph.pool() if pool is None else pool
                self.graphs[bucket] = graph
        if side_stream is None:
            torch.cuda.synchronize()
        else:
            side_stream.synchronize()  # this thread waits for its own stream only, never for the step loop's
        self.capture_s = time.perf_counter() - start
        return pool

    def _fits(self, meta: AttentionMetadata) -> bool:
        return (bool(self.graphs) and meta.block_tables_tensor is not None
                and meta.block_tables_tensor.shape[1] <= self.width)

    def _load(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata, token_bucket: int,
              seq_bucket: int) -> None:
        """Copy a step into the buffers; padding up to the buckets writes no cache and attends to nothing."""
        tokens, seqs = input_ids.shape[0], meta.num_seqs
        self.input_ids[:tokens].copy_(input_ids)
        self.positions[:tokens].copy_(positions)
        self.slot_mapping[:tokens].copy_(meta.slot_mapping)
        self.slot_mapping[tokens:token_bucket].fill_(-1)
        self.block_tables[:seqs, : meta.block_tables_tensor.shape[1]].copy_(meta.block_tables_tensor)  # columns past: never read
        self.seq_lens[:seqs].copy_(meta.seq_lens_tensor)
        self.seq_lens[seqs:seq_bucket].zero_()


class _no_stream:
    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None


@contextmanager
def _capture_beside_serving(graph: torch.cuda.CUDAGraph, pool, stream: torch.cuda.Stream):
    """Capture into `graph` on `stream` while another thread keeps launching steps on its own stream.

    thread_local, not PyTorch's default "global": under cudaStreamCaptureModeGlobal a capture forbids
    "potentially unsafe" CUDA calls (cudaMalloc, a synchronize, an event query) in *every* thread of the process,
    so the step loop's next allocation or token read would fail and invalidate the capture. Under
    cudaStreamCaptureModeThreadLocal only the capturing thread is held to those rules; "concurrent capture
    sequences in other threads are ignored", so the step loop may allocate, sync and query events meanwhile
    (CUDA runtime API, cudaThreadExchangeStreamCaptureMode / cudaStreamCaptureMode:
    https://docs.nvidia.com/cuda/cuda-runtime-api/group__CUDART__STREAM.html; PyTorch's `capture_error_mode`:
    https://docs.pytorch.org/docs/stable/generated/torch.cuda.graph.html). The capturing thread itself keeps the
    same rules as the startup capture (which runs this very forward in global mode), and it never synchronizes
    while capturing: `capture()` waits for its own stream only after the last capture has ended.
    Why the step loop's work cannot leak into this capture: it runs on another stream, and PyTorch's side streams
    are created non-blocking (c10/cuda/CUDAStream.cpp: `kDefaultFlags = cudaStreamNonBlocking`), so even the
    legacy default stream takes no implicit dependency on this capturing stream; the caching allocator routes to
    the graph's private pool only the allocations of the stream under this capture (its filter compares the
    stream's capture id), so the step loop's tensors stay in the ordinary pool.
    One process-wide state a capture still changes: PyTorch registers the default CUDA generator with every graph
    and puts it in capture mode, so the step loop samples from a generator of its own (`lab.engine.sampler`).
    Why not `torch.cuda.graph(..., capture_error_mode="thread_local")` itself: its `__enter__` synchronizes the
    device and empties the caching allocator and the pinned host cache before each capture; from a background
    thread that would return the step loop's cached blocks to the driver (cudaFree synchronizes the device, under
    the allocator's lock) once per bucket and stall every step meanwhile. This is the rest of what it does:
    `capture_begin` on the current stream, the forward, `capture_end`."""
    with torch.cuda.stream(stream):
        if pool is None:
            graph.capture_begin(capture_error_mode="thread_local")
        else:
            graph.capture_begin(pool, capture_error_mode="thread_local")
        try:
            yield
        except BaseException:
            try:
                graph.capture_end()  # ends the broken capture (the stream and the allocator leave capture mode)
            except Exception:  # an invalidated capture also fails to end: the first error is the one to report
                pass
            raise
        graph.capture_end()


class DecodeGraphs(_StepGraphs):
    def __init__(self, model: torch.nn.Module, kv_caches: list[tuple[torch.Tensor, ...]], block_size: int,
                 max_num_seqs: int, max_model_len: int, device: torch.device,
                 sizes: list[int] | tuple[int, ...] | None = None) -> None:
        # `sizes` (EngineArgs.cuda_graph_sizes): fewer buckets capture faster; batches above the largest run eager
        buckets = sorted(set(sizes)) if sizes else bucket_sizes(max_num_seqs)
        super().__init__(model, kv_caches, block_size, buckets, buckets[-1], buckets[-1], max_model_len, device)

    def _meta(self, batch: int) -> AttentionMetadata:
        return AttentionMetadata(
            query_start_loc=list(range(batch + 1)),
            seq_lens=[1] * batch,  # only steers Python-side dispatch during capture; kernels read the tensors
            block_tables=[[0]] * batch,
            slot_mapping=self.slot_mapping[:batch],
            block_size=self.block_size,
            block_tables_tensor=self.block_tables[:batch],
            seq_lens_tensor=self.seq_lens[:batch],
            backend="triton",
            pure_decode=True,
        )

    def can_run(self, meta: AttentionMetadata) -> bool:
        return self._fits(meta) and meta.is_pure_decode and meta.num_seqs <= self.buckets[-1]

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        batch = meta.num_seqs
        bucket = next(b for b in self.buckets if b >= batch)
        self._load(input_ids, positions, meta, bucket, bucket)
        self.graphs[bucket].replay()
        return self.outputs[bucket][:batch]


class MixedGraphs(_StepGraphs):
    """Graphs for non-decode steps in token buckets, sequences padded to `max_num_seqs` (module docstring)."""

    def __init__(self, model: torch.nn.Module, kv_caches: list[tuple[torch.Tensor, ...]], block_size: int,
                 max_num_seqs: int, max_num_batched_tokens: int, max_model_len: int, device: torch.device) -> None:
        buckets = mixed_bucket_sizes(max_num_batched_tokens)
        super().__init__(model, kv_caches, block_size, buckets, buckets[-1], max_num_seqs, max_model_len, device)
        self.max_num_seqs = max_num_seqs
        self.query_start_loc = torch.zeros(max_num_seqs + 1, dtype=torch.int32, device=device)

    def _meta(self, num_tokens: int) -> AttentionMetadata:
        s = self.max_num_seqs
        # The lists only steer Python-side dispatch (not decode, cached context possible: the varlen
        # kernel, with its largest tile, whatever the step); the kernels read the tensors.
        return AttentionMetadata(
            query_start_loc=[0] + [num_tokens] * s,
            seq_lens=[num_tokens] + [0] * (s - 1),
            block_tables=[[0]] * s,
            slot_mapping=self.slot_mapping[:num_tokens],
            block_size=self.block_size,
            block_tables_tensor=self.block_tables,
            seq_lens_tensor=self.seq_lens,
            query_start_loc_tensor=self.query_start_loc,
            backend="triton",
            no_cached_context=False,
            pure_decode=False,
        )

    def _clear(self) -> None:
        super()._clear()
        self.query_start_loc.zero_()  # every sequence empty: attention does nothing while capturing

    def can_run(self, meta: AttentionMetadata, num_tokens: int) -> bool:
        return (self._fits(meta) and not meta.is_pure_decode and meta.backend == "triton"
                and num_tokens <= self.buckets[-1] and meta.num_seqs <= self.max_num_seqs
                and meta.query_start_loc_tensor is not None)

    def load(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> int:
        """Copy a step into the buffers (padding sequences: empty spans after the last one); returns its bucket."""
        tokens, seqs = input_ids.shape[0], meta.num_seqs
        bucket = next(t for t in self.buckets if t >= tokens)
        self._load(input_ids, positions, meta, bucket, self.max_num_seqs)
        self.query_start_loc[: seqs + 1].copy_(meta.query_start_loc_tensor)
        self.query_start_loc[seqs + 1 :].fill_(tokens)
        return bucket

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        bucket = self.load(input_ids, positions, meta)
        self.graphs[bucket].replay()
        return self.outputs[bucket][: input_ids.shape[0]]
