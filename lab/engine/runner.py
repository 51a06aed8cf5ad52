"""`ModelRunner`: turns a `SchedulerOutput` into tensors, runs the model, samples.

It owns everything with tensors in it: the model, the paged KV cache and the per-request
random generators. Inputs are laid out flat (vLLM's layout): each scheduled chunk contributes
its new tokens, and the model sees one (T,) batch with an `AttentionMetadata` describing where
each sequence's rows and cache blocks are. Unless the backend is "reference", the step's device
tensors (padded block table, seq lens, query starts) are built here, once per step, not per layer.
Pure decode steps replay a CUDA graph when `graphs` (a `DecodeGraphs`) is given and the step fits;
other steps replay one of `mixed_graphs` (a `MixedGraphs`) when given and the step fits.

Host cost per step is O(B) Python plus vectorized numpy, not O(tokens) Python: each request's
block table is mirrored in a row of one numpy array (`BlockTableRows`, synced by appending the
blocks added since the last step), positions and slots are computed with numpy, and the step's
integers cross to the device in two pinned, non-blocking copies, so preparing a step does not
wait for the GPU. `launch` enqueues a step and returns a `LaunchedStep` whose sampled tokens stay
on the device until `tokens()` is asked for them (`execute` = launch + tokens, the plain path).

Non-finite logits are caught without a sync (`lab.engine.launched_step`); `logits_health` says whether
the runner is degraded.

Tensor parallelism (`lab.engine.parallel`): a leader's runner (`parallel` given) sends each step's host arrays
(`StepArrays`) to the workers as soon as they are complete, and its chained input ids after them; a worker
runs `device_inputs` and `step_logits` on what it receives (`parallel/worker.py`), so both take one code path.
A failure inside `step_logits` on the leader marks the group broken (the workers may wait in a collective);
a failure in sampling, after the last collective, is isolated as on one device.

A hot reload's drain (`lab.engine.weight_reload`): between `begin_drain(module, generation, graphs,
mixed_graphs)` and `end_drain()`, chunks of requests admitted on `generation` run on that standby module (on
its own CUDA graph set when the reload captured one, else eager; the same paged cache) and the others on the
live model (graphs as usual); one step launches both halves and hands back one `MergedStep`.
`rebind(model, graphs, mixed_graphs)` is a reload's pointer switch: from the next step on, everything runs on
that module and its graphs (`LLMEngine.rebind_weights`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lab.engine.attention.metadata import AttentionMetadata
from lab.engine.launched_step import LaunchedStep, LogitsHealth, MergedStep
from lab.engine.sampler import Sampler
from lab.engine.scheduler import ScheduledChunk, SchedulerOutput
from lab.engine.sequence import Sequence

_ALIGN = 16  # elements: each packed segment starts 64-byte aligned (kernels specialize on pointer alignment)


@dataclass
class ModelInputs:
    input_ids: torch.Tensor  # (T,)
    positions: torch.Tensor  # (T,)
    meta: AttentionMetadata
    sample_rows: list[int]  # rows of the flat batch whose hidden state is sampled from
    sample_chunks: list[ScheduledChunk]  # the chunk each sample row belongs to


@dataclass
class StepArrays:
    """One step's inputs on the host, before they cross to the device: what a tensor-parallel worker receives
    from the leader in place of a `SchedulerOutput` (numpy arrays and a few flags: small to pickle)."""

    ids: np.ndarray  # (T,) int64; a row chained from the previous step's sampled token holds 0 here
    positions: np.ndarray  # (T,) int64
    slots: np.ndarray  # (T,) int64 flat cache rows
    table: np.ndarray  # (B, W) int32 block table, padded with block 0 past each sequence's needed blocks
    needed: np.ndarray  # (B,) int64 blocks each sequence needs this step
    seq_lens: np.ndarray  # (B,) int64
    query_start_loc: np.ndarray  # (B + 1,) int64
    pure_decode: bool
    no_cached_context: bool
    sample_rows: list[int]
    chained: bool  # some input ids are the previous step's sampled tokens, filled in on the device

    def block_table_lists(self) -> list[list[int]]:
        """Each sequence's needed blocks as a list (what `AttentionMetadata.block_tables` readers use)."""
        return [row[:n].tolist() for row, n in zip(self.table, self.needed.tolist())]


class BlockTableRows:
    """Every live request's block table, mirrored in one row of a growing (R, W) int32 array.

    `row_for(seq)` syncs the row incrementally: tables only grow by appends between steps, and
    the block manager replaces the list when it frees a table (preemption), which resets the row.
    """

    def __init__(self, rows: int = 64, width: int = 64) -> None:
        self.array = np.zeros((rows, width), dtype=np.int32)
        self._entries: dict[str, list] = {}  # request id -> [row, table list object, entries synced]
        self._free_rows = list(range(rows - 1, -1, -1))

    def row_for(self, seq: Sequence) -> int:
        entry = self._entries.get(seq.request_id)
        table = seq.block_table
        if entry is None:
            if not self._free_rows:
                self._grow(rows=2 * self.array.shape[0])
            entry = self._entries[seq.request_id] = [self._free_rows.pop(), table, 0]
        elif entry[1] is not table:
            entry[1], entry[2] = table, 0
        synced, n = entry[2], len(table)
        if n != synced:
            if n < synced:  # shrank in place: resync from the start
                synced = 0
            if n > self.array.shape[1]:
                self._grow(width=max(n, 2 * self.array.shape[1]))
            self.array[entry[0], synced:n] = table[synced:n]
            entry[2] = n
        return entry[0]

    def release(self, request_id: str) -> None:
        entry = self._entries.pop(request_id, None)
        if entry is not None:
            self._free_rows.append(entry[0])

    def _grow(self, rows: int | None = None, width: int | None = None) -> None:
        old = self.array
        new_rows, new_width = rows or old.shape[0], width or old.shape[1]
        self.array = np.zeros((new_rows, new_width), dtype=np.int32)
        self.array[: old.shape[0], : old.shape[1]] = old
        self._free_rows = list(range(new_rows - 1, old.shape[0] - 1, -1)) + self._free_rows


class ModelRunner:
    def __init__(
        self,
        model: torch.nn.Module,
        kv_caches: list[tuple[torch.Tensor, ...]],
        block_size: int,
        device: torch.device,
        eos_token_id: int | None,
        attention_backend: str = "reference",
        graphs=None,  # lab.engine.cuda_graphs.DecodeGraphs, captured, or None for eager
        mixed_graphs=None,  # lab.engine.cuda_graphs.MixedGraphs (steps with prefill chunks), or None
        parallel=None,  # lab.engine.parallel.state.TensorParallel of a leader (rank 0), or None
    ) -> None:
        self.model = model
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.device = device
        self.eos_token_id = eos_token_id
        self.attention_backend = attention_backend
        self.graphs = graphs
        self.mixed_graphs = mixed_graphs
        self.sampler = Sampler()
        self.logits_health = LogitsHealth()
        self._generators: dict[str, torch.Generator] = {}
        self._block_rows = BlockTableRows()
        self.standby: torch.nn.Module | None = None  # a drain's new weights, and the generation they serve
        self.standby_generation: int | None = None
        self.parallel = parallel  # tensor parallelism: each step's inputs go to the workers (parallel/worker.py)
        self.standby_graphs: tuple = (None, None)  # the standby's (DecodeGraphs, MixedGraphs), None where eager

    def begin_drain(self, module: torch.nn.Module, generation: int, graphs=None, mixed_graphs=None) -> None:
        self.standby, self.standby_generation = module, generation
        self.standby_graphs = (graphs, mixed_graphs)

    def end_drain(self) -> None:
        self.standby, self.standby_generation, self.standby_graphs = None, None, (None, None)

    def rebind(self, model: torch.nn.Module, graphs, mixed_graphs) -> None:
        """Run every later step on `model` and its graphs (captured over it on this runner's KV cache)."""
        self.model, self.graphs, self.mixed_graphs = model, graphs, mixed_graphs

    def prepare_inputs(self, output: SchedulerOutput, previous: LaunchedStep | None = None) -> ModelInputs:
        """The step's flat inputs. A pending token (async scheduling) is read from `previous` on the device.
        A tensor-parallel leader sends them to its workers once they are complete (nothing after this can fail
        on the host before the model's first collective)."""
        step, block_tables, sample_chunks, chained = self._host_step(output)
        inputs = self.device_inputs(step, block_tables, sample_chunks)
        if chained:
            inputs.input_ids = self._chain(inputs.input_ids, chained, previous)
        if self.parallel is not None:
            self.parallel.send_step(step)
            if chained:  # the chained ids exist on this rank's device only
                self.parallel.broadcast(inputs.input_ids)
        return inputs

    def _host_step(self, output: SchedulerOutput):
        """(StepArrays, block tables, sample chunks, chained rows) of a step, built on the host."""
        chunks = output.scheduled
        bs = self.block_size
        ids: list[int] = []
        starts: list[int] = []
        num_new: list[int] = []
        rows: list[int] = []
        block_tables: list[list[int]] = []
        sample_rows: list[int] = []
        sample_chunks: list[ScheduledChunk] = []
        row_for = self._block_rows.row_for
        total = 0
        pure_decode = True
        chained: list[tuple[int, str]] = []  # (flat row, request id): the input is previous's sampled token
        for chunk in chunks:
            seq = chunk.seq
            start, n = chunk.start_position, chunk.num_new_tokens
            if seq.num_pending_tokens and start + n > seq.num_tokens - seq.num_pending_tokens:
                if n != 1 or seq.num_pending_tokens != 1:
                    raise RuntimeError(f"request {seq.request_id!r}: a chunk of {n} reads a pending token")
                chained.append((total, seq.request_id))
                ids.append(0)
            elif n == 1:
                ids.append(seq.token_id_at(start))
            else:
                pure_decode = False
                ids.extend(seq.token_slice(start, start + n))
            total += n
            starts.append(start)
            num_new.append(n)
            rows.append(row_for(seq))
            block_tables.append(seq.block_table)
            if chunk.samples:
                sample_rows.append(total - 1)
                sample_chunks.append(chunk)
        B = len(chunks)
        start_arr = np.array(starts, dtype=np.int64)
        new_arr = np.array(num_new, dtype=np.int64)
        seq_lens = start_arr + new_arr
        if pure_decode:
            query_start_loc = np.arange(B + 1, dtype=np.int64)
            positions, token_rows = start_arr, np.arange(B)
        else:
            query_start_loc = np.zeros(B + 1, dtype=np.int64)
            np.cumsum(new_arr, out=query_start_loc[1:])
            token_rows = np.repeat(np.arange(B), new_arr)
            positions = np.arange(total, dtype=np.int64) + np.repeat(start_arr - query_start_loc[:-1], new_arr)
        # The step's block table: each sequence's row, padded with block 0 past its needed blocks.
        needed = (seq_lens + bs - 1) // bs
        width = max(int(needed.max(initial=1)), 1)
        table = self._block_rows.array[rows, :width]  # fancy indexing: a copy
        table[np.arange(width)[None, :] >= needed[:, None]] = 0
        slots = table[token_rows, positions // bs].astype(np.int64) * bs + positions % bs
        step = StepArrays(np.array(ids, dtype=np.int64), positions, slots, table, needed, seq_lens, query_start_loc,
                          pure_decode, not start_arr.any(), sample_rows, bool(chained))
        return step, block_tables, sample_chunks, chained

    def device_inputs(self, step: StepArrays, block_tables: list[list[int]],
                      sample_chunks: list[ScheduledChunk]) -> ModelInputs:
        """The step's tensors on the device (two packed copies) and its attention metadata."""
        longs = self._to_device([step.ids, step.positions, step.slots], np.int64)
        meta = AttentionMetadata(
            query_start_loc=step.query_start_loc.tolist(),
            seq_lens=step.seq_lens.tolist(),
            block_tables=block_tables,
            slot_mapping=longs[2],
            block_size=self.block_size,
            backend=self.attention_backend,
            no_cached_context=step.no_cached_context,
            pure_decode=step.pure_decode,
        )
        if self.attention_backend != "reference":
            table = step.table
            ints = self._to_device([table.reshape(-1), step.seq_lens, step.query_start_loc], np.int32)
            meta.block_tables_tensor = ints[0].view(*table.shape)
            meta.seq_lens_tensor = ints[1]
            meta.query_start_loc_tensor = ints[2]
        return ModelInputs(longs[0], longs[1], meta, step.sample_rows, sample_chunks)

    def _chain(self, input_ids: torch.Tensor, chained: list[tuple[int, str]], previous: LaunchedStep | None) -> torch.Tensor:
        """Write previous step's sampled tokens (still on the device) into their rows of input_ids."""
        if previous is None or previous.token_tensor is None:
            raise RuntimeError("a pending token, but no previous step to read it from")
        index = {rid: i for i, rid in enumerate(previous.request_ids)}
        try:
            src = [index[rid] for _, rid in chained]
        except KeyError as exc:
            raise RuntimeError(f"request {exc.args[0]!r}: its pending token is not in the previous step") from None
        dst = [row for row, _ in chained]
        rows = self._to_device([np.array(dst, dtype=np.int64), np.array(src, dtype=np.int64)], np.int64)
        input_ids[rows[0]] = previous.token_tensor[rows[1]]
        return input_ids

    def _to_device(self, arrays: list[np.ndarray], dtype) -> list[torch.Tensor]:
        """The arrays as 1-D device tensors of `dtype`, through one packed (pinned on CUDA) copy."""
        if self.device.type != "cuda":  # no copy to make: the arrays' own memory
            return [torch.from_numpy(np.ascontiguousarray(a, dtype=dtype)) for a in arrays]
        sizes = [a.size for a in arrays]
        padded = [-(-n // _ALIGN) * _ALIGN for n in sizes]
        packed = np.zeros(sum(padded), dtype=dtype)
        offset = 0
        for a, n, p in zip(arrays, sizes, padded):
            packed[offset : offset + n] = a
            offset += p
        dev = torch.from_numpy(packed).pin_memory().to(self.device, non_blocking=True)
        out, offset = [], 0
        for n, p in zip(sizes, padded):
            out.append(dev[offset : offset + n])
            offset += p
        return out

    @torch.inference_mode()
    def launch(self, output: SchedulerOutput, previous: LaunchedStep | None = None) -> LaunchedStep:
        """Enqueue one step (forward and sampling) without waiting for it.

        `previous`: the step launched before this one, whose sampled tokens are still pending.
        """
        if not output.scheduled:
            return LaunchedStep([], None)
        if self.standby is not None:
            return self._launch_drain(output, previous)
        return self._launch(output, previous, self.model, self.graphs, self.mixed_graphs)

    def _launch_drain(self, output: SchedulerOutput, previous) -> LaunchedStep | MergedStep:
        new = [c for c in output.scheduled if c.seq.weights_generation == self.standby_generation]
        old = [c for c in output.scheduled if c.seq.weights_generation != self.standby_generation]
        halves = ((old, self.model, (self.graphs, self.mixed_graphs)), (new, self.standby, self.standby_graphs))
        parts = [self._launch(SchedulerOutput(chunks, [], [], sum(c.num_new_tokens for c in chunks)), previous, model,
                              *graphs) for chunks, model, graphs in halves if chunks]
        return parts[0] if len(parts) == 1 else MergedStep(parts)

    def _launch(self, output: SchedulerOutput, previous, model: torch.nn.Module, graphs, mixed_graphs) -> LaunchedStep:
        """`graphs` and `mixed_graphs` were captured over `model` (each None: eager)."""
        inputs = self.prepare_inputs(output, previous)
        if self.parallel is None:
            logits = self.step_logits(inputs, model, (graphs, mixed_graphs))
        else:
            try:
                logits = self.step_logits(inputs, model, (graphs, mixed_graphs))
            except BaseException as exc:  # the workers got this step: they may now wait in a collective
                self.parallel.mark_broken(exc)
                raise
        if logits is None:
            return LaunchedStep([], None)
        return self._sample(inputs, logits)  # this rank only: a failure here leaves the ranks in step

    def run_model(self, inputs: ModelInputs, model: torch.nn.Module, graph_sets: tuple | None = None) -> torch.Tensor:
        """The model's hidden states for the step (a replay of a graph captured over `model` where one fits), then
        only the sampled rows. `graph_sets`: (DecodeGraphs, MixedGraphs) captured over `model`, each None for eager;
        None: the runner's own when `model` is the live one, else eager."""
        if graph_sets is None:
            graph_sets = (self.graphs, self.mixed_graphs) if model is self.model else (None, None)
        graphs, mixed_graphs = graph_sets
        if graphs is not None and graphs.can_run(inputs.meta):
            hidden = graphs.run(inputs.input_ids, inputs.positions, inputs.meta)
        elif mixed_graphs is not None and mixed_graphs.can_run(inputs.meta, inputs.input_ids.shape[0]):
            hidden = mixed_graphs.run(inputs.input_ids, inputs.positions, inputs.meta)
        else:
            hidden = model(inputs.input_ids, inputs.positions, self.kv_caches, inputs.meta)
        if inputs.sample_rows and len(inputs.sample_rows) != hidden.shape[0]:  # else every row samples: no gather
            rows = self._to_device([np.array(inputs.sample_rows, dtype=np.int64)], np.int64)[0]
            hidden = hidden.index_select(0, rows)
        return hidden

    def step_logits(self, inputs: ModelInputs, model: torch.nn.Module,
                    graph_sets: tuple | None = None) -> torch.Tensor | None:
        """(N, V) logits of the sampled rows (None: nothing samples this step); every collective of a step."""
        hidden = self.run_model(inputs, model, graph_sets)
        return model.compute_logits(hidden) if inputs.sample_rows else None

    def _sample(self, inputs: ModelInputs, logits: torch.Tensor) -> LaunchedStep:
        # Before the sampler writes -inf bans into `logits`: a row summing to NaN or inf had a non-finite logit.
        finite = logits.sum(dim=-1).isfinite()  # (N,) bool, read back with the tokens
        seqs = [c.seq for c in inputs.sample_chunks]
        params = [s.sampling_params for s in seqs]
        generators = [self._generator_for(s.request_id, s.sampling_params.seed) for s in seqs]
        banned = [self._banned_tokens(s) for s in seqs]
        tokens = self.sampler.sample(logits, params, generators, banned)
        return LaunchedStep([s.request_id for s in seqs], tokens, self.sampler.take_logprobs(), finite,
                            self.logits_health)

    def execute(self, output: SchedulerOutput) -> dict[str, int]:
        """Run one step; return the sampled token of every chunk that reached its sequence's end."""
        return self.launch(output).tokens()

    def release(self, request_id: str) -> None:
        """Forget a finished request's generator and block-table row."""
        self._generators.pop(request_id, None)
        self._block_rows.release(request_id)

    def _generator_for(self, request_id: str, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        gen = self._generators.get(request_id)
        if gen is None:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(seed)
            self._generators[request_id] = gen
        return gen

    def _banned_tokens(self, seq) -> list[int]:
        """While below min_tokens, the tokens that would end the request cannot be drawn."""
        params = seq.sampling_params
        if seq.num_output_tokens >= params.min_tokens:
            return []
        banned = list(params.stop_token_ids)
        if not params.ignore_eos and self.eos_token_id is not None:
            banned.append(self.eos_token_id)
        return banned
