"""Our models over a paged KV cache vs transformers on the same tiny checkpoints (float32, CPU).

Every kind in `hf_fixtures.KINDS` is saved with `save_pretrained`, loaded with `load_model`, and
driven like the engine drives it: flat steps over several sequences, shuffled block ids,
block_size 4, so sequences straddle non-contiguous blocks.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import torch

from lab.engine.attention.metadata import AttentionMetadata
from lab.engine.kv_cache import allocate_kv_cache
from lab.engine.loader import load_model
from lab.engine.models.mla import MLAttention
from lab.engine.models.moe import MoEGate
from tests.engine.hf_fixtures import KINDS, VOCAB, load_reference, make_tiny_checkpoint, reference_logits

DEEPSEEK_KINDS = [k for k in KINDS if k.startswith("deepseek")]
ATOL = 1e-4  # logits are O(1-5); float32 differences from summation order are ~1e-6


class PagedRunner:
    """Drives a model step by step over a paged cache, allocating blocks in shuffled order."""

    def __init__(self, model: torch.nn.Module, num_blocks: int = 48, block_size: int = 4, seed: int = 0) -> None:
        self.model = model
        self.block_size = block_size
        self.cache = allocate_kv_cache(model.kv_cache_spec(torch.float32), num_blocks, block_size, torch.device("cpu"))
        self.free = list(range(num_blocks))
        random.Random(seed).shuffle(self.free)
        self.tables: dict[str, list[int]] = {}
        self.lens: dict[str, int] = {}

    @torch.inference_mode()
    def step(self, chunks: dict[str, list[int]]) -> dict[str, torch.Tensor]:
        """Feed each sequence its next tokens in one flat step; logits (n_new, vocab) per sequence."""
        ids, positions, slots, starts, seq_lens, tables = [], [], [], [0], [], []
        for sid, tokens in chunks.items():
            start = self.lens.get(sid, 0)
            end = start + len(tokens)
            table = self.tables.setdefault(sid, [])
            while len(table) * self.block_size < end:
                table.append(self.free.pop())
            for pos in range(start, end):
                positions.append(pos)
                slots.append(table[pos // self.block_size] * self.block_size + pos % self.block_size)
            ids += tokens
            starts.append(len(ids))
            seq_lens.append(end)
            tables.append(list(table))
            self.lens[sid] = end
        meta = AttentionMetadata(starts, seq_lens, tables, torch.tensor(slots), self.block_size)
        hidden = self.model(torch.tensor(ids), torch.tensor(positions), self.cache, meta)
        logits = self.model.compute_logits(hidden)
        return {sid: logits[starts[i] : starts[i + 1]] for i, sid in enumerate(chunks)}


@dataclass
class Pair:
    kind: str
    ref: torch.nn.Module  # transformers
    model: torch.nn.Module  # ours


@pytest.fixture(scope="module", params=list(KINDS))
def pair(request, tmp_path_factory) -> Pair:
    path = make_tiny_checkpoint(request.param, tmp_path_factory.mktemp(request.param))
    return Pair(request.param, load_reference(path), load_model(str(path), torch.float32, "cpu").module)


@pytest.fixture(scope="module", params=DEEPSEEK_KINDS)
def ds_pair(request, tmp_path_factory) -> Pair:
    path = make_tiny_checkpoint(request.param, tmp_path_factory.mktemp(request.param))
    return Pair(request.param, load_reference(path), load_model(str(path), torch.float32, "cpu").module)


def tokens(n: int, seed: int) -> list[int]:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_prefill_batch_matches_transformers(pair: Pair) -> None:
    seqs = {"a": tokens(5, 1), "b": tokens(11, 2), "c": tokens(8, 3)}
    out = PagedRunner(pair.model).step(seqs)
    for sid, ids in seqs.items():
        torch.testing.assert_close(out[sid], reference_logits(pair.ref, ids), atol=ATOL, rtol=0)


def test_incremental_decode_matches_transformers(pair: Pair) -> None:
    full = {"a": tokens(14, 4), "b": tokens(9, 5)}
    prefix = {"a": 6, "b": 3}
    runner = PagedRunner(pair.model, seed=1)
    got = {sid: [rows] for sid, rows in runner.step({s: full[s][: prefix[s]] for s in full}).items()}
    pos = dict(prefix)
    while any(pos[s] < len(full[s]) for s in full):
        live = {s: [full[s][pos[s]]] for s in full if pos[s] < len(full[s])}
        for sid, rows in runner.step(live).items():  # pure decode: one token per sequence
            got[sid].append(rows)
            pos[sid] += 1
    for sid, ids in full.items():
        torch.testing.assert_close(torch.cat(got[sid]), reference_logits(pair.ref, ids), atol=ATOL, rtol=0)


def test_chunked_prefill_equals_one_shot(pair: Pair) -> None:
    seq, other = tokens(13, 6), tokens(5, 7)
    one_shot = PagedRunner(pair.model).step({"s": seq})["s"]
    chunked = PagedRunner(pair.model, seed=2)
    first = chunked.step({"s": seq[:7], "o": other[:4]})["s"]
    # the second chunk shares its step with another sequence's decode token (a mixed step)
    second = chunked.step({"o": other[4:], "s": seq[7:]})["s"]
    torch.testing.assert_close(torch.cat([first, second]), one_shot, atol=1e-5, rtol=0)


def _run_mode(model: torch.nn.Module, mode: str) -> list[torch.Tensor]:
    model.set_mla_mode(mode)
    try:
        runner = PagedRunner(model, seed=3)
        a, b = tokens(10, 8), tokens(6, 9)
        outs = list(runner.step({"a": a[:7], "b": b[:2]}).values())
        outs += list(runner.step({"b": b[2:5], "a": a[7:8]}).values())  # chunk + decode token
        for i in range(8, 10):
            outs += list(runner.step({"a": a[i : i + 1], "b": b[i - 3 : i - 2]}).values())  # pure decode
        return outs
    finally:
        model.set_mla_mode("auto")


def test_mla_absorbed_path_equals_expanded_path(ds_pair: Pair) -> None:
    absorbed, expanded = _run_mode(ds_pair.model, "absorbed"), _run_mode(ds_pair.model, "expanded")
    for x, y in zip(absorbed, expanded):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


def test_mla_auto_mode_absorbs_only_pure_decode_steps(ds_pair: Pair) -> None:
    attn = next(m for m in ds_pair.model.modules() if isinstance(m, MLAttention))
    calls = []
    original = attn._absorbed
    attn._absorbed = lambda *a: calls.append(1) or original(*a)
    try:
        runner = PagedRunner(ds_pair.model)
        runner.step({"a": tokens(5, 10), "b": tokens(3, 11)})
        assert calls == []
        runner.step({"a": [3], "b": [4]})
        assert calls == [1]
    finally:
        del attn._absorbed


def test_mla_caches_only_the_latent(ds_pair: Pair) -> None:
    cfg = ds_pair.model.config
    spec = ds_pair.model.kv_cache_spec(torch.float32)
    assert spec.per_token_shapes == ((cfg.kv_lora_rank + cfg.qk_rope_head_dim,),)
    assert spec.num_layers == cfg.num_hidden_layers


def test_moe_routes_tokens_to_many_experts(ds_pair: Pair) -> None:
    chosen: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: chosen.append(out[1])) for m in ds_pair.model.modules()
             if isinstance(m, MoEGate)]
    try:
        PagedRunner(ds_pair.model).step({"a": tokens(12, 12)})
    finally:
        for h in hooks:
            h.remove()
    assert chosen, "no MoE layer ran"
    for ids in chosen:
        assert ids.unique().numel() >= 4  # of 8 experts


def test_router_matches_transformers(ds_pair: Pair) -> None:
    cfg = ds_pair.model.config
    layer = next(i for i in range(cfg.num_hidden_layers) if cfg.is_moe_layer(i))
    ours, theirs = ds_pair.model.model.layers[layer].mlp.gate, ds_pair.ref.model.layers[layer].mlp.gate
    x = torch.randn(32, ds_pair.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w, ids = ours(x)
        _, ref_w, ref_ids = theirs(x)
    ids, order = ids.sort(dim=-1)
    ref_ids, ref_order = ref_ids.sort(dim=-1)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(w.gather(1, order), ref_w.gather(1, ref_order), atol=1e-6, rtol=0)


def test_rope_and_softmax_scale_match_transformers(pair: Pair) -> None:
    ours, theirs = pair.model.model.rotary_emb, pair.ref.model.rotary_emb
    torch.testing.assert_close(ours.inv_freq, theirs.inv_freq, atol=0, rtol=1e-6)
    assert ours.attention_factor == pytest.approx(theirs.attention_scaling)
    attn = pair.model.model.layers[0].self_attn
    assert attn.scale == pytest.approx(pair.ref.model.layers[0].self_attn.scaling)
