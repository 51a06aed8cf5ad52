"""Token-level stop rules, applied after each sampled token.

`check_stop(seq, eos_token_id, max_model_len)` looks at the token just appended to
`seq.output_token_ids` and answers whether the request is done:
- While fewer than `min_tokens` tokens exist, EOS and stop token ids are ignored (as in vLLM).
- EOS ends it (STOP) unless `ignore_eos`; `seq.stop_reason` stays None, vLLM's mark for EOS.
- A token in `stop_token_ids` ends it (STOP) with `seq.stop_reason` set to that id.
- `max_tokens` generated, or the context reaching `max_model_len`, ends it with LENGTH. These
  are never suppressed by `min_tokens`: the cache cannot hold more, whatever was asked.
A stop token that coincides with the length limit reports STOP, the more specific reason.

Stop *strings* need text, so the detokenizer checks them (`IncrementalDetokenizer.stopped_by`).
"""
from __future__ import annotations

from lab.engine.sequence import FinishReason, Sequence


def check_stop(seq: Sequence, eos_token_id: int | None, max_model_len: int) -> FinishReason | None:
    """The finish reason triggered by seq's last output token, or None to continue."""
    if seq.num_output_tokens == 0:
        return None  # nothing sampled yet (defensive: the engine calls this after a token)
    params = seq.sampling_params
    last = seq.output_token_ids[-1]
    if seq.num_output_tokens >= params.min_tokens:
        if eos_token_id is not None and last == eos_token_id and not params.ignore_eos:
            return FinishReason.STOP
        if last in params.stop_token_ids:
            seq.stop_reason = last
            return FinishReason.STOP
    if seq.num_output_tokens >= params.max_tokens or seq.num_tokens >= max_model_len:
        return FinishReason.LENGTH
    return None
