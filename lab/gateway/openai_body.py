"""What the gateway reads from an OpenAI request body, and how it rewrites it for a replica.

Contract: `parse_body(raw, default_max_tokens)` checks the little the gateway needs (a JSON
object nested at most `MAX_JSON_DEPTH` deep, a non-negative integer `max_tokens`/`max_completion_tokens`
if given; anything else is a 400 in OpenAI's error shape, never a 500) and returns a
`ClientRequest`: the body, whether it streams, and its token cost for the buckets (a prompt
estimate of ~4 characters per token, plus max_tokens). Everything else is the replica's to
validate. `for_replica(request, priority, model)` is the body sent upstream: the client's `priority`
is replaced by its tier's, so a client can never raise its own rank. When the client sent no
`priority` and no model is rewritten, the field is spliced into the client's bytes (`"priority": N`
before the closing brace) instead of re-serializing the whole body; `dumps_for_replica` is the plain
path and the test oracle (both parse to the same object).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lab.gateway.errors import bad_request

CHARS_PER_TOKEN = 4  # a rough BPE average; the buckets need a cost, not an exact count
# OpenAI bodies nest a few levels (messages -> content parts, tools -> JSON schemas): 64 leaves room for
# deep schemas and keeps every recursive reader (ours, json.dumps, the replica's) far from Python's limit.
MAX_JSON_DEPTH = 64


@dataclass(frozen=True)
class ClientRequest:
    body: dict[str, Any]
    stream: bool
    prompt_tokens: int
    max_tokens: int
    raw: bytes = b""  # the client's bytes, as received

    @property
    def token_cost(self) -> int:
        return self.prompt_tokens + self.max_tokens


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    if "messages" in body:
        text = "".join(_text(m.get("content")) for m in body["messages"] if isinstance(m, dict))
    else:
        text = _text(body.get("prompt"))
    return max(1, len(text) // CHARS_PER_TOKEN)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # a list of prompts, token ids or content parts
        parts = (v.get("text") if isinstance(v, dict) else v for v in value)
        return "".join("x" * CHARS_PER_TOKEN if isinstance(p, int) else _text(p) for p in parts)
    return ""


def _too_deep(raw: bytes, body: Any) -> bool:
    """True when `body` nests containers more than MAX_JSON_DEPTH deep."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return False  # the common case, at C speed: too few brackets to nest that deep
    level: list[Any] = [body]
    for _ in range(MAX_JSON_DEPTH):  # breadth first, containers only
        level = [child for value in level
                 for child in (value.values() if isinstance(value, dict) else value)
                 if isinstance(child, (dict, list))]
        if not level:
            return False
    return True


def parse_body(raw: bytes, default_max_tokens: int) -> ClientRequest:
    try:
        body = json.loads(raw)
    except RecursionError:
        raise bad_request(f"request body nests deeper than the gateway's limit of {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise bad_request(f"request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    if _too_deep(raw, body):
        raise bad_request(f"request body nests deeper than the gateway's limit of {MAX_JSON_DEPTH} levels")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is None:
        max_tokens = default_max_tokens
    elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise bad_request(f"max_tokens must be a non-negative integer, got {max_tokens!r}", param="max_tokens")
    return ClientRequest(body, bool(body.get("stream")), estimate_prompt_tokens(body), max_tokens, raw)


def for_replica(request: ClientRequest, priority: int, model: str | None) -> bytes:
    raw = request.raw.rstrip()
    # Only a plain UTF-8 object (json.loads also takes UTF-16/32 and a BOM), without a priority to replace.
    if not model and "priority" not in request.body and raw[:1] == b"{" and raw[-1:] == b"}":
        return raw[:-1] + (b',"priority":%d}' if request.body else b'"priority":%d}') % priority
    return dumps_for_replica(request.body, priority, model)


def dumps_for_replica(body: dict[str, Any], priority: int, model: str | None) -> bytes:
    upstream = dict(body)
    upstream["priority"] = priority  # vLLM's field: lower is served first; overwrites the client's
    if model:
        upstream["model"] = model
    return json.dumps(upstream).encode()
