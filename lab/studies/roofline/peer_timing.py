"""How a batch-1 decode peer is timed: warm-up apart, then the difference of two generations.

A peer (`DecodePeer`: transformers' static-cache generate, our gpt-fast-style loop) generates greedily
from one prompt and returns the new tokens as a host list, so each call ends in a device sync.
`measure_decode_peer` first runs `warmup_calls` rounds of the calls it will time: torch.compile traces and
generates code and CUDA graphs are recorded there, so that time is `compile_warmup_s`, reported apart and
excluded from the rate. Then, `repeats` times, it times a 1-token generation (the prompt's prefill and the
first token) and a `new_tokens` generation (the same, plus `new_tokens - 1` decode steps). The decode step
is the difference of the two times over the steps between them: prefill and per-call set-up cancel, as in
our engine's decode point, which times pure decode steps. Each time is the fastest of its `repeats` calls,
as `timeit` takes it: other work on the machine only ever adds time. Where it hid the steps all the same
(the long call no slower than the short one), up to `2 x repeats` more rounds run before the point is refused. A compiled peer whose first call hits a graph
break under `fullgraph=True` is compiled again without it (`allow_graph_breaks`), and the point says so.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class DecodePeer(Protocol):
    compiled: bool  # the one-token step runs through torch.compile
    fullgraph: bool  # torch.compile(fullgraph=True): one graph, no breaks

    def generate(self, prompt: list[int], new_tokens: int) -> list[int]: ...

    def allow_graph_breaks(self) -> None: ...


@dataclass(frozen=True)
class DecodePeerPoint:
    compiled: bool
    fullgraph: bool  # False also when not compiled
    prompt_len: int
    new_tokens: int  # tokens of the timed generation: new_tokens - 1 decode steps after the prefill's token
    compile_warmup_s: float  # the warm-up calls: compile, CUDA-graph recording, their own generation
    prefill_s: float  # fastest 1-token generation: the prompt's prefill and its token
    decode_step_s: float  # steady state: (fastest t(new_tokens) - fastest t(1)) / (new_tokens - 1)
    tokens_per_s: float  # 1 / decode_step_s
    ms_per_token: float  # decode_step_s in ms
    agree_prefix_tokens: int  # leading tokens equal to transformers' plain generate on the same prompt


def decode_step_s(one_token_s: float, n_tokens_s: float, new_tokens: int) -> float:
    """Seconds per decode step from the time of a 1-token and of a `new_tokens` generation."""
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be >= 2 (one decode step at least), got {new_tokens}")
    if n_tokens_s <= one_token_s:
        raise ValueError(f"a {new_tokens}-token generation took {n_tokens_s:.6f} s, no longer than a 1-token one "
                         f"({one_token_s:.6f} s): the decode steps are lost in noise; time more tokens")
    return (n_tokens_s - one_token_s) / (new_tokens - 1)


def agree_prefix(tokens: list[int], reference: list[int]) -> int:
    """How many leading tokens two greedy generations share."""
    n = 0
    for a, b in zip(tokens, reference):
        if a != b:
            break
        n += 1
    return n


def measure_decode_peer(peer: DecodePeer, prompt: list[int], new_tokens: int, reference: list[int],
                        warmup_calls: int = 2, repeats: int = 3) -> DecodePeerPoint:
    if warmup_calls < 1 or repeats < 1:
        raise ValueError(f"warmup_calls and repeats must be >= 1, got {warmup_calls} and {repeats}")
    start = time.perf_counter()
    try:
        _warm_up(peer, prompt, new_tokens, warmup_calls)
    except Exception as exc:
        if not (peer.compiled and peer.fullgraph and _is_graph_break(exc)):
            raise
        peer.allow_graph_breaks()
        _warm_up(peer, prompt, new_tokens, warmup_calls)
    compile_warmup_s = time.perf_counter() - start
    ones, ns, tokens = [], [], []
    # `repeats` rounds; while the fastest long call is not yet longer than the fastest short one (a busy machine),
    # up to twice as many more, and then decode_step_s refuses to give a number.
    while len(ones) < repeats or (min(ns) <= min(ones) and len(ones) < 3 * repeats):
        ones.append(_timed(lambda: peer.generate(prompt, 1))[0])
        elapsed, tokens = _timed(lambda: peer.generate(prompt, new_tokens))
        ns.append(elapsed)
    step = decode_step_s(min(ones), min(ns), new_tokens)
    return DecodePeerPoint(
        compiled=peer.compiled, fullgraph=peer.compiled and peer.fullgraph, prompt_len=len(prompt),
        new_tokens=new_tokens, compile_warmup_s=compile_warmup_s, prefill_s=min(ones),
        decode_step_s=step, tokens_per_s=1.0 / step, ms_per_token=step * 1e3,
        agree_prefix_tokens=agree_prefix(tokens, reference),
    )


def _warm_up(peer: DecodePeer, prompt: list[int], new_tokens: int, calls: int) -> None:
    for _ in range(calls):
        peer.generate(prompt, 1)
        peer.generate(prompt, new_tokens)


def _timed(call: Callable[[], list[int]]) -> tuple[float, list[int]]:
    start = time.perf_counter()
    tokens = call()  # a host list: the device work is done
    return time.perf_counter() - start, tokens


def _is_graph_break(exc: BaseException) -> bool:
    import torch._dynamo.exc

    return isinstance(exc, torch._dynamo.exc.Unsupported)
