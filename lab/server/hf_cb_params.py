"""What one request may ask of transformers' continuous-batching manager (`--engine hf-cb`), and how.

Torch-free. `manager_request(params, prompt_len, eos_token_id, max_model_len)` is the keyword
arguments of `ContinuousBatchingManager.add_request` for a request, or `RequestRefused` naming
the one field the manager cannot honour (a 400 whose `param` is that field):
- `temperature` > 0: the manager decodes greedily. Whether it samples (`do_sample`) is one setting
  of the whole manager, not of a request, and per-request temperature exists only inside a sampling
  manager (and `seed` not at all: it shares one generator). `top_p`, `top_k` and `seed` are accepted
  because a greedy request ignores them, as in our engine.
- `logprobs`: the manager returns at most the chosen token's logprob, and only when the whole
  manager is built for it (`return_logprobs`); no top-k alternatives.
- `min_tokens` > 0: there is no per-request processor to ban the end tokens until then.
What it can do natively: `max_tokens` (its `max_new_tokens`, capped by the context), EOS unless
`ignore_eos`, and `stop_token_ids` (both as the request's end tokens, so the manager frees the
request at once). Stop strings are ours (the backend cuts the text and cancels the request).
"""
from __future__ import annotations

from typing import Any

from lab.engine.sampling_params import SamplingParams
from lab.server.backend import RequestRefused

NO_EOS = -1  # transformers' "no end token"


def manager_request(params: SamplingParams, prompt_len: int, eos_token_id: int | None,
                    max_model_len: int) -> dict[str, Any]:
    if not params.greedy:
        raise RequestRefused(f"temperature={params.temperature:g}: --engine hf-cb serves greedy requests only "
                             "(temperature 0); transformers' continuous batching samples or not for the whole "
                             "manager, not per request", param="temperature")
    if params.logprobs is not None:
        raise RequestRefused("logprobs: --engine hf-cb cannot return them; transformers' continuous batching "
                             "gives no top logprobs per request", param="logprobs")
    if params.min_tokens > 0:
        raise RequestRefused(f"min_tokens={params.min_tokens}: --engine hf-cb cannot honour it; transformers' "
                             "continuous batching has no per-request minimum length", param="min_tokens")
    end_tokens = list(params.stop_token_ids)
    if not params.ignore_eos and eos_token_id is not None:
        end_tokens.append(eos_token_id)
    return {"max_new_tokens": min(params.max_tokens, max_model_len - prompt_len),
            "eos_token_id": end_tokens or NO_EOS}
