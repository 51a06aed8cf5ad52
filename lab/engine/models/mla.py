"""DeepSeek Multi-head Latent Attention over a paged cache of latents.

Contract: `MLAttention(config)(hidden (T, H), rot, (cache,), meta) -> (T, H)`. Per token the cache
holds one row, [c_kv (kv_lora_rank) after kv_a_layernorm | k_pe (qk_rope_head_dim) after RoPE],
shared by all heads: (kv_lora_rank + qk_rope_head_dim) elements instead of num_heads x
(qk_head_dim + v_head_dim) for expanded K/V. kv_b_proj maps c_kv to every head's [k_nope | v].
Two paths compute the same attention:
  expanded: per sequence, expand the context's K/V from the latents with kv_b_proj (prefill).
  absorbed: fold W_UK into the query (q_nope @ W_UK lives in latent space) and apply W_UV after
    attending over the latents, so the cache is never expanded (decode; memory-bound). Decode
    steps on the "torch"/"triton" backends read the step's device tensors (`lab/engine/attention/decode.py`).
`mode` = "auto" takes absorbed for pure-decode steps and expanded otherwise; "absorbed" and
"expanded" force one (tests compare them). On the "reference" backend "expanded" is the
per-sequence float32 oracle loop. On "torch" / "triton", a non-decode step in "auto" mode is
split (`AttentionMetadata.split`): its one-token sequences take the absorbed decode path as one
batch (split-K Triton kernel or vectorized torch), and each prefill span takes torch SDPA over K/V
expanded from its sequence's latents with a lower-right causal mask (without cached context, the
step's own latents are expanded once for all sequences and no cache row is read back).
Why not one absorbed varlen kernel for the whole step: absorbed, every (query, key, head) costs
2 x (R + rope + R) = 2,176 FLOPs at V2/V3 shapes against 2 x (qk_head + v_head) = 640 expanded, and
its (rows x R) float32 accumulator (512 wide) leaves little register room for the query tiles that
prefill needs, whereas expanding costs one GEMM over the context (2 x L x R x H x (nope + v)),
which a chunk of hundreds of queries amortizes; flash/memory-efficient SDPA is already tuned for
the expanded shapes. Decode rows are the opposite case (one query per sequence, memory-bound),
hence the split. The absorbed weights come from
`process_weights_after_loading()`, which the loader calls. With fused ops on the "triton" backend,
an absorbed pure-decode step runs RoPE(q_pe), kv_a_layernorm, RoPE(k_pe) and the cache write as one
kernel (`kernels/mla_latent_write.py`); up to 16 tokens it also multiplies by W_UK and W_UV with one
per-head GEMM launch each (`kernels/head_gemm.py`), writing into the attention query and o_proj's rows.
Softmax scale: qk_head_dim**-0.5 times DeepSeek's YaRN mscale**2. q_a/kv_a layernorms use eps 1e-6
whatever rms_norm_eps is, as HF does.
"""
from __future__ import annotations

import torch
from torch import nn

from lab.engine.attention.decode import cache_write, mla_decode_attention
from lab.engine.attention.metadata import AttentionMetadata
from lab.engine.attention.mla import absorbed_latent_attention
from lab.engine.attention.prefill import causal_sdpa, prefill_attention_sdpa
from lab.engine.attention.reference import attend, causal_mask, gather_from_cache, gather_sequence
from lab.engine.kv_quant import as_cached
from lab.engine.model_config import ModelConfig
from lab.engine.models.layers import Linear, RMSNorm
from lab.engine.models.rope import Rotation, mla_softmax_scale

LATENT_NORM_EPS = 1e-6  # transformers' and DeepSeek's q_a/kv_a layernorms ignore rms_norm_eps
MLA_MODES = ("auto", "absorbed", "expanded")


class MLAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.kv_lora_rank = config.kv_lora_rank
        self.qk_nope_head_dim, self.qk_rope_head_dim = config.qk_nope_head_dim, config.qk_rope_head_dim
        self.qk_head_dim = config.qk_head_dim
        self.v_head_dim = config.v_head_dim
        hidden, heads = config.hidden_size, config.num_attention_heads
        self.has_q_lora = config.q_lora_rank is not None
        if not self.has_q_lora:
            self.q_proj = Linear(hidden, heads * self.qk_head_dim, bias=False)
        else:
            self.q_a_proj = Linear(hidden, config.q_lora_rank, bias=config.qkv_bias)
            self.q_a_layernorm = RMSNorm(config.q_lora_rank, LATENT_NORM_EPS)
            self.q_b_proj = Linear(config.q_lora_rank, heads * self.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = Linear(hidden, self.kv_lora_rank + self.qk_rope_head_dim, bias=config.qkv_bias)
        self.kv_a_layernorm = RMSNorm(self.kv_lora_rank, LATENT_NORM_EPS)
        self.kv_b_proj = Linear(self.kv_lora_rank, heads * (self.qk_nope_head_dim + self.v_head_dim), bias=False)
        self.o_proj = Linear(heads * self.v_head_dim, hidden, bias=config.o_proj_bias)
        self.scale = mla_softmax_scale(self.qk_head_dim, config.rope_scaling)
        self.mode = "auto"
        # absorbed projections, derived from kv_b_proj by process_weights_after_loading()
        self.register_buffer("w_uk", None, persistent=False)  # (H, qk_nope, R)
        self.register_buffer("w_uv_t", None, persistent=False)  # (H, R, v)

    def process_weights_after_loading(self) -> None:
        w = self.kv_b_proj.weight.detach().view(self.num_heads, self.qk_nope_head_dim + self.v_head_dim, self.kv_lora_rank)
        self.w_uk = w[:, : self.qk_nope_head_dim].contiguous()  # (H, qk_nope, R)
        self.w_uv_t = w[:, self.qk_nope_head_dim :].transpose(1, 2).contiguous()  # (H, R, v)

    def forward(
        self, hidden: torch.Tensor, rot: Rotation, kv_cache: tuple[torch.Tensor, ...], meta: AttentionMetadata
    ) -> torch.Tensor:
        num_tokens = hidden.shape[0]
        if self.has_q_lora:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(hidden)))
        else:
            q = self.q_proj(hidden)
        q = q.view(num_tokens, self.num_heads, self.qk_head_dim)  # (T, H, qk_nope + qk_rope)
        q_nope, q_pe = q.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
        kv_a = self.kv_a_proj_with_mqa(hidden)  # (T, R + rope): [c_kv | k_pe] before norm and RoPE
        (cache,) = kv_cache
        if self.mode not in MLA_MODES:
            raise ValueError(f"MLA mode must be one of {MLA_MODES}, got {self.mode!r}")
        absorbed = self.mode == "absorbed" or (self.mode == "auto" and meta.is_pure_decode)
        if self.takes_fused_latent_write(rot, meta):
            from lab.engine.kernels.head_gemm import MAX_ROWS, head_gemm  # CUDA only
            from lab.engine.kernels.mla_latent_write import mla_rope_latent_write_triton

            # one kernel for RoPE(q_pe), kv_a_layernorm, RoPE(k_pe) and the cache row: decode reads only the cache
            write = (q_pe, kv_a, self.kv_a_layernorm.weight, self.kv_a_layernorm.eps, rot.cos, rot.sin, rot.interleaved,
                     cache, meta.slot_mapping)
            if num_tokens > MAX_ROWS:
                out = self._absorbed(q_nope, mla_rope_latent_write_triton(*write), cache, meta)
                return self.o_proj(out.reshape(num_tokens, self.num_heads * self.v_head_dim))
            # small batches: the absorbed query is assembled in place (rotated q_pe beside q_nope @ W_UK) and
            # W_UV writes the rows o_proj reads: no cat, no transpose copy, no cuBLAS launches
            rank = self.kv_lora_rank
            q = q_nope.new_empty(num_tokens, self.num_heads, rank + self.qk_rope_head_dim)
            mla_rope_latent_write_triton(*write, q_out=q[..., rank:])
            w_uk, w_uv_t = self._absorbed_weights()
            head_gemm(q_nope, w_uk, out=q[..., :rank])
            out_latent = mla_decode_attention(q, cache, meta, rank, self.scale)  # (T, H, R)
            out = head_gemm(out_latent, w_uv_t)  # (T, H, v), contiguous
            return self.o_proj(out.view(num_tokens, self.num_heads * self.v_head_dim))
        q_pe = rot.apply(q_pe)
        c_kv, k_pe = kv_a.split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        c_kv = self.kv_a_layernorm(c_kv)  # (T, R)
        k_pe = rot.apply(k_pe.unsqueeze(1)).squeeze(1)  # (T, rope): one key rotation shared by all heads
        latent = torch.cat([c_kv, k_pe], dim=-1)  # (T, R + rope): the cache row
        cache_write(cache, meta.slot_mapping, latent, meta)
        if absorbed:
            out = self._absorbed(q_nope, q_pe, cache, meta)
        elif self.mode == "expanded" or meta.backend == "reference":
            out = self._expanded(q_nope, q_pe, cache, meta)  # the oracle
        elif meta.no_cached_context:
            # the step's own latents are every sequence's whole context, read as the cache holds them
            c_kv, k_pe = as_cached(latent, cache).split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
            k, v = self._expand(c_kv, k_pe)
            out = prefill_attention_sdpa(torch.cat([q_nope, q_pe], dim=-1), k, v, meta, self.scale)
        else:
            out = self._mixed(q_nope, q_pe, cache, meta)
        return self.o_proj(out.reshape(num_tokens, self.num_heads * self.v_head_dim))

    def takes_fused_latent_write(self, rot: Rotation, meta: AttentionMetadata) -> bool:
        """`kernels/mla_latent_write.py` instead of five launches: fused ops on, Triton backend (CUDA; padding
        slots skipped), an absorbed pure-decode step (it reads the latents back from the cache only)."""
        return self.mode in ("absorbed", "auto") and rot.fused and meta.backend == "triton" and meta.is_pure_decode

    def _expand(self, c_kv: torch.Tensor, k_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head K (L, H, qk_head) and V (L, H, v) from latents c_kv (L, R) and k_pe (L, rope)."""
        kv = self.kv_b_proj(c_kv).view(c_kv.shape[0], self.num_heads, -1)  # (L, H, qk_nope + v)
        k_nope, v = kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)
        k = torch.cat([k_nope, k_pe[:, None, :].expand(-1, self.num_heads, -1)], dim=-1)
        return k, v

    def _mixed(self, q_nope: torch.Tensor, q_pe: torch.Tensor, cache: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """Decode rows absorbed as one batch; each prefill span expanded over its cached context with SDPA."""
        split = meta.split
        out = q_nope.new_empty(q_nope.shape[0], self.num_heads, self.v_head_dim)
        if split.decode_meta is not None:
            rows = split.decode_rows
            out[rows] = self._absorbed(q_nope.index_select(0, rows), q_pe.index_select(0, rows), cache, split.decode_meta)
        for span in split.prefills:
            ctx = gather_sequence(cache, meta, span.seq)  # (L, R + rope), the span's own rows included
            k, v = self._expand(*ctx.split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1))
            q = torch.cat([q_nope[span.start : span.end], q_pe[span.start : span.end]], dim=-1)  # (Lq, H, qk_head)
            out[span.start : span.end] = causal_sdpa(q, k, v, self.scale)
        return out

    def _expanded(self, q_nope: torch.Tensor, q_pe: torch.Tensor, cache: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        q = torch.cat([q_nope, q_pe], dim=-1)  # (T, H, qk_head)
        out = q.new_empty(q.shape[0], self.num_heads, self.v_head_dim)
        for i in range(meta.num_seqs):
            start, end, seq_len = meta.query_start_loc[i], meta.query_start_loc[i + 1], meta.seq_lens[i]
            ctx = gather_from_cache(cache, meta.block_tables[i], seq_len)  # (L, R + rope)
            k, v = self._expand(*ctx.split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1))  # (L, H, qk_head), (L, H, v)
            out[start:end] = attend(q[start:end], k, v, causal_mask(end - start, seq_len, q.device), self.scale)
        return out

    def _absorbed_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.w_uk is None:
            raise RuntimeError("absorbed MLA needs process_weights_after_loading() after the weights are loaded")
        return self.w_uk, self.w_uv_t

    def _absorbed(self, q_nope: torch.Tensor, q_pe: torch.Tensor, cache: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        w_uk, w_uv_t = self._absorbed_weights()
        q_latent = torch.bmm(q_nope.transpose(0, 1), w_uk).transpose(0, 1)  # (T, H, R)
        q = torch.cat([q_latent, q_pe], dim=-1)  # (T, H, R + rope): scores against whole cache rows
        out_latent = absorbed_latent_attention(q, cache, meta, self.kv_lora_rank, self.scale)  # (T, H, R)
        return torch.bmm(out_latent.transpose(0, 1), w_uv_t).transpose(0, 1)  # (T, H, v)
