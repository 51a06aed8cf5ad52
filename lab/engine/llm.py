"""`LLM`: offline batch generation, read like vLLM's.

    from lab.engine import LLM, SamplingParams
    llm = LLM("tiny")
    outs = llm.generate(["Hello, my name is"], SamplingParams(temperature=0, max_tokens=16))
    print(outs[0].text, outs[0].metrics.time_to_first_token_s)

Every prompt of a call is validated before any is queued, so one bad prompt fails the call
without leaving half of it inside the engine.
"""
from __future__ import annotations

import itertools
from typing import Sequence as Seq

from lab.engine.args import EngineArgs
from lab.engine.engine import LLMEngine
from lab.engine.outputs import RequestOutput
from lab.engine.sampling_params import SamplingParams

Prompt = str | list[int]


class LLM:
    def __init__(self, model: str = "tiny", **kwargs) -> None:
        self.engine = LLMEngine(EngineArgs(model=model, **kwargs))
        self._ids = itertools.count()

    def get_tokenizer(self):
        return self.engine.tokenizer

    def generate(
        self,
        prompts: Prompt | Seq[Prompt],
        sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        priority: int | Seq[int] = 0,
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """Generate for every prompt; outputs come back in the order of `prompts`."""
        prompt_list = _as_prompt_list(prompts)
        n = len(prompt_list)
        params = _broadcast(sampling_params or SamplingParams(), n, "sampling_params")
        priorities = _broadcast(priority, n, "priority")
        request_ids = [f"llm-{next(self._ids)}" for _ in range(n)]
        validated = []
        for i, prompt in enumerate(prompt_list):
            try:
                validated.append(self.engine.validate_prompt(prompt))
            except ValueError as exc:
                raise ValueError(f"prompt {i}: {exc}") from None
        for rid, (text, ids), p, prio in zip(request_ids, validated, params, priorities):
            self.engine.add_request(rid, ids, p, priority=prio, prompt_text=text)
        return self._run(request_ids, use_tqdm)

    def chat(
        self,
        messages: list[dict],
        sampling_params: SamplingParams | None = None,
        **kwargs,
    ) -> list[RequestOutput]:
        """One conversation through the model's chat template."""
        prompt = self.engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = self.engine.tokenizer.encode(prompt, add_special_tokens=False)
        return self.generate([ids], sampling_params, **kwargs)

    def update_weights(self, source: str, *, seed: int | None = None, policy: str = "switch",
                       staging: str = "auto") -> dict:
        """Hot reload (`LLMEngine.update_weights`): the reload's record; `ReloadError` if refused."""
        return self.engine.update_weights(source, seed=seed, policy=policy, staging=staging)

    def shutdown(self) -> None:
        """Stop the tensor-parallel workers (`tensor_parallel_size > 1`); nothing to do on one device."""
        self.engine.shutdown()

    def _run(self, request_ids: list[str], use_tqdm: bool) -> list[RequestOutput]:
        finished: dict[str, RequestOutput] = {}
        bar = None
        if use_tqdm:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(request_ids), desc="generate", unit="req")
        try:
            while self.engine.has_unfinished_requests():
                for out in self.engine.step(final_only=True):  # running requests' outputs: never read here
                    if out.finished:
                        finished[out.request_id] = out
                        if bar is not None:
                            bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return [finished[rid] for rid in request_ids]


def _as_prompt_list(prompts: Prompt | Seq[Prompt]) -> list[Prompt]:
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    if prompts and all(isinstance(t, int) for t in prompts):
        return [prompts]  # one prompt given as token ids
    if not prompts:
        raise ValueError("no prompts given")
    return prompts


def _broadcast(value, n: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} entries for {n} prompts")
        return list(value)
    return [value] * n
