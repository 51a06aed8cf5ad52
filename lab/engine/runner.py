"""`ModelRunner`: turns a `SchedulerOutput` into tensors, runs the model, samples.

It owns everything with tensors in it: the model, the paged KV cache and the per-request
random generators. Inputs are laid out flat (vLLM's layout): each scheduled chunk contributes
its new tokens, and the model sees one (T,) batch with an `AttentionMetadata` describing where
each sequence's rows and cache blocks are. Unless the backend is "reference", the step's device
tensors (padded block table, seq lens, query starts) are built once here, not per layer. Pure
decode steps replay a CUDA graph when `graphs` (a `DecodeGraphs`) is given and the step fits.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lab.engine.attention import AttentionMetadata, build_step_tensors
from lab.engine.sampler import Sampler
from lab.engine.scheduler import ScheduledChunk, SchedulerOutput


@dataclass
class ModelInputs:
    input_ids: torch.Tensor  # (T,)
    positions: torch.Tensor  # (T,)
    meta: AttentionMetadata
    sample_rows: list[int]  # rows of the flat batch whose hidden state is sampled from
    sample_chunks: list[ScheduledChunk]  # the chunk each sample row belongs to


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
    ) -> None:
        self.model = model
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.device = device
        self.eos_token_id = eos_token_id
        self.attention_backend = attention_backend
        self.graphs = graphs
        self.sampler = Sampler()
        self._generators: dict[str, torch.Generator] = {}

    def prepare_inputs(self, output: SchedulerOutput) -> ModelInputs:
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        query_start_loc = [0]
        seq_lens: list[int] = []
        block_tables: list[list[int]] = []
        sample_rows: list[int] = []
        sample_chunks: list[ScheduledChunk] = []
        bs = self.block_size
        pure_decode, no_context = True, True
        for chunk in output.scheduled:
            seq = chunk.seq
            pure_decode &= chunk.num_new_tokens == 1
            no_context &= chunk.start_position == 0
            start, end = chunk.start_position, chunk.end_position
            tokens = seq.token_ids
            for pos in range(start, end):
                ids.append(tokens[pos])
                positions.append(pos)
                slots.append(seq.block_table[pos // bs] * bs + pos % bs)
            query_start_loc.append(len(ids))
            seq_lens.append(end)
            block_tables.append(seq.block_table)
            if chunk.samples:
                sample_rows.append(len(ids) - 1)
                sample_chunks.append(chunk)
        to = dict(dtype=torch.long, device=self.device)
        meta = AttentionMetadata(
            query_start_loc=query_start_loc,
            seq_lens=seq_lens,
            block_tables=block_tables,
            slot_mapping=torch.tensor(slots, **to),
            block_size=bs,
            backend=self.attention_backend,
            no_cached_context=no_context,
            pure_decode=pure_decode,
        )
        if self.attention_backend != "reference":
            build_step_tensors(meta, self.device)
        return ModelInputs(torch.tensor(ids, **to), torch.tensor(positions, **to), meta, sample_rows, sample_chunks)

    @torch.inference_mode()
    def execute(self, output: SchedulerOutput) -> dict[str, int]:
        """Run one step; return the sampled token of every chunk that reached its sequence's end."""
        if not output.scheduled:
            return {}
        inputs = self.prepare_inputs(output)
        if self.graphs is not None and self.graphs.can_run(inputs.meta):
            hidden = self.graphs.run(inputs.input_ids, inputs.positions, inputs.meta)
        else:
            hidden = self.model(inputs.input_ids, inputs.positions, self.kv_caches, inputs.meta)
        if not inputs.sample_rows:
            return {}
        rows = torch.tensor(inputs.sample_rows, dtype=torch.long, device=self.device)
        logits = self.model.compute_logits(hidden.index_select(0, rows))  # (N, V)
        seqs = [c.seq for c in inputs.sample_chunks]
        params = [s.sampling_params for s in seqs]
        generators = [self._generator_for(s.request_id, s.sampling_params.seed) for s in seqs]
        banned = [self._banned_tokens(s) for s in seqs]
        tokens = self.sampler(logits, params, generators, banned)
        return {s.request_id: t for s, t in zip(seqs, tokens)}

    def release(self, request_id: str) -> None:
        """Forget a finished request's generator."""
        self._generators.pop(request_id, None)

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
