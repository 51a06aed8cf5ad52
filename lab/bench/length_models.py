"""Request-length distributions for synthetic workloads, fitted to a trace at run time.

Contract: `LognormalLengths.fit(rows)` fits a bivariate lognormal to a trace's (ContextTokens,
GeneratedTokens) pairs: the mean, standard deviation and correlation of their natural logs
(maximum likelihood; counts below 1 are taken as 1). Chat traffic (the ShareGPT conversations
vLLM benchmarks with, the Azure LLM 2023 conversation trace shipped here) is right-skewed with a
long tail in both lengths, which a lognormal captures with two numbers per length; the
correlation keeps long prompts slightly likelier to get long answers, as in the trace. Nothing
is hard-coded: a different trace gives a different fit (the shipped Azure conversation trace
gives input ~ e^N(6.63, 0.99^2), median ~760 tokens; output ~ e^N(5.02, 0.86^2), median ~150).
`sample(n, rng, max_context_tokens)` draws n (input, output) token counts, each >= 1, with
output clipped to `max_context_tokens - 1` and input to what is left, as `TraceWorkload` clips.
`describe()` gives the fitted parameters for a result record.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lab.bench.traces import TraceRow
from lab.errors import LabError


@dataclass(frozen=True)
class LognormalLengths:
    input_log_mean: float
    input_log_std: float
    output_log_mean: float
    output_log_std: float
    log_correlation: float  # of log input and log output, in [-1, 1]

    @classmethod
    def fit(cls, rows: Sequence[TraceRow]) -> LognormalLengths:
        if len(rows) < 2:
            raise LabError(f"fitting request lengths needs at least 2 trace rows, got {len(rows)}")
        logs = np.log(np.maximum(np.array([(r.context_tokens, r.generated_tokens) for r in rows], dtype=float), 1.0))
        mean, std = logs.mean(axis=0), logs.std(axis=0)  # (2,) each: input, output
        centered = logs - mean
        covariance = float((centered[:, 0] * centered[:, 1]).mean())
        correlation = covariance / (std[0] * std[1]) if std[0] > 0 and std[1] > 0 else 0.0
        return cls(float(mean[0]), float(std[0]), float(mean[1]), float(std[1]), float(np.clip(correlation, -1, 1)))

    def sample(self, n: int, rng: np.random.Generator, max_context_tokens: int) -> list[tuple[int, int]]:
        """n (input_tokens, output_tokens) pairs; see the module docstring."""
        cov = self.log_correlation * self.input_log_std * self.output_log_std
        logs = rng.multivariate_normal([self.input_log_mean, self.output_log_mean],
                                       [[self.input_log_std ** 2, cov], [cov, self.output_log_std ** 2]], size=n)
        pairs = []
        for log_in, log_out in logs:  # (n, 2)
            output_tokens = min(max(round(math.exp(log_out)), 1), max_context_tokens - 1)
            input_tokens = min(max(round(math.exp(log_in)), 1), max_context_tokens - output_tokens)
            pairs.append((input_tokens, output_tokens))
        return pairs

    def describe(self) -> dict[str, float]:
        return {"input_log_mean": self.input_log_mean, "input_log_std": self.input_log_std,
                "output_log_mean": self.output_log_mean, "output_log_std": self.output_log_std,
                "log_correlation": self.log_correlation}
