"""The peers' flat metrics, named like the engine's own (`<preset>_decode_b1_tokens_per_s`, `<preset>_hf_...`).

`peer_metrics(prefix, peers, engine_b1_tokens_per_s, engine_offline_tokens_per_s)`:
  <p>_<peer>_decode_b1_tokens_per_s, _decode_b1_ms_per_token      steady state (warm-up excluded); no
      `_decode_b1_step_s`: `<prefix>_decode_b{B}_step_s` names an engine sweep, which the scaler's profile reads
  <p>_<peer>_compile_warmup_s, _prefill_s, _compiled, _fullgraph, _agree_prefix_tokens
      for peer in hf_static (transformers generate + static cache + compile) and gptfast (our loop + compile)
  <p>_hf_cb_offline_output_tokens_per_s, _offline_output_tokens, _offline_wall_s, _startup_s
  <p>_decode_b1_speedup_vs_<peer>             engine batch-1 tokens/s over the peer's
  <p>_decode_b1_speedup_vs_fastest_compiled   over the faster compiled decode peer (only when one was compiled)
  <p>_offline_speedup_vs_hf_cb                engine offline output tokens/s over transformers' continuous batching
  <p>_peer_failures                           how many peers could not run (their errors are in the params)
A ratio is left out when either side is missing (no batch-1 point, a failed peer), never filled in.
"""
from __future__ import annotations

from lab.studies.roofline.peer_timing import DecodePeerPoint
from lab.studies.roofline.peers import PeerResults


def peer_metrics(p: str, peers: PeerResults, engine_b1_tokens_per_s: float | None,
                 engine_offline_tokens_per_s: float) -> dict[str, float]:
    out: dict[str, float] = {f"{p}_peer_failures": float(len(peers.failures))}
    decode = {name: point for name, point in (("hf_static", peers.hf_static), ("gptfast", peers.gptfast)) if point}
    for name, point in decode.items():
        out.update(decode_peer_metrics(f"{p}_{name}", point))
        if engine_b1_tokens_per_s is not None:
            out[f"{p}_decode_b1_speedup_vs_{name}"] = engine_b1_tokens_per_s / point.tokens_per_s
    compiled = [point.tokens_per_s for point in decode.values() if point.compiled]
    if compiled and engine_b1_tokens_per_s is not None:
        out[f"{p}_decode_b1_speedup_vs_fastest_compiled"] = engine_b1_tokens_per_s / max(compiled)
    cb = peers.hf_cb
    if cb is not None:
        out.update({f"{p}_hf_cb_offline_output_tokens_per_s": cb.output_tokens_per_s,
                    f"{p}_hf_cb_offline_output_tokens": float(cb.output_tokens),
                    f"{p}_hf_cb_offline_wall_s": cb.wall_s, f"{p}_hf_cb_startup_s": cb.startup_s,
                    f"{p}_offline_speedup_vs_hf_cb": engine_offline_tokens_per_s / cb.output_tokens_per_s})
    return out


def decode_peer_metrics(q: str, d: DecodePeerPoint) -> dict[str, float]:
    return {
        f"{q}_decode_b1_tokens_per_s": d.tokens_per_s, f"{q}_decode_b1_ms_per_token": d.ms_per_token,
        f"{q}_compile_warmup_s": d.compile_warmup_s,
        f"{q}_prefill_s": d.prefill_s, f"{q}_compiled": float(d.compiled), f"{q}_fullgraph": float(d.fullgraph),
        f"{q}_agree_prefix_tokens": float(d.agree_prefix_tokens),
    }
