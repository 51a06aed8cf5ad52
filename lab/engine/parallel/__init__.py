"""Tensor (and expert) parallelism: one model split over `tensor_parallel_size` processes, one device each.

    LLM("r1-distill-qwen-7b", tensor_parallel_size=2)        # or: lab serve --tensor-parallel-size 2

Where to look:
  plan.py    what each rank holds (heads, KV heads, MLP rows, experts, vocabulary) and the shape checks
  state.py   `TensorParallel`: the group, its collectives, the step broadcast (the only torch.distributed calls)
  layers.py  the layers that talk to other ranks (row-parallel linear, vocab-parallel embedding and head, MoE)
  shard.py   the transform that rewrites a built model into a rank's shard, and which checkpoint slice it loads
  launch.py  the leader starts one worker process per other rank; worker.py is what they run
  bench.py   decode step time per batch size, and the share the collectives take

The design in one paragraph: rank 0 is the engine everyone else knows (scheduler, sampler, tokenizer, the
server's engine core); each step it broadcasts its host-side inputs, and every rank runs the same forward on
them. Megatron-style splits: column-parallel q/k/v and gate/up (no communication), row-parallel o_proj and
down_proj (one all-reduce each), so a dense layer costs two all-reduces of (tokens, hidden); the embedding is
vocab-parallel (one all-reduce), the LM head gathers its logits. DeepSeek: attention heads split and MLA's
latent projection replicated (every rank caches the whole latent row: 576 values a token at V2/V3 shapes,
shared by all heads; splitting it would put a collective inside attention); MoE layers shard the routed
experts (expert parallelism: each rank runs only its experts and one all-reduce combines them with the
tensor-parallel shared experts); the dense first layers are tensor-parallel MLPs. Dummy weights are drawn
full-size and sliced, so TP=N and TP=1 serve the same model (`loader.dummy_checkpoint`).
Not yet: 8-bit weights under TP, hot reload and fault injection under TP, more than one host.
"""
