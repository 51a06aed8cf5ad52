"""`SamplingParams` refuses, naming the field, every value the sampler cannot represent.

Floats must be finite (a NaN temperature or top_p turns the softmax to NaN), integers must fit in
64 bits (torch tensors and generator seeds), logprobs within [0, 20]; valid edge values pass.
"""
from __future__ import annotations

import math

import pytest

from lab.engine.sampling_params import INT64_MAX, INT64_MIN, MIN_POSITIVE_TEMPERATURE, InvalidParam, SamplingParams


@pytest.mark.parametrize(("fields", "param"), [
    (dict(temperature=-0.5), "temperature"),
    (dict(temperature=math.nan), "temperature"),
    (dict(temperature=math.inf), "temperature"),
    (dict(top_p=math.nan), "top_p"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_k=INT64_MAX + 1), "top_k"),
    (dict(top_k=-2), "top_k"),
    (dict(seed=INT64_MAX + 1), "seed"),
    (dict(seed=INT64_MIN - 1), "seed"),
    (dict(stop_token_ids=(-1,)), "stop_token_ids"),
    (dict(stop_token_ids=("7",)), "stop_token_ids"),
    (dict(min_tokens=17, max_tokens=16), "min_tokens"),
    (dict(logprobs=21), "logprobs"),
    (dict(logprobs=-1), "logprobs"),
    (dict(stop=("",)), "stop"),
])
def test_values_the_sampler_cannot_represent_are_refused_by_name(fields, param):
    with pytest.raises(InvalidParam) as refused:
        SamplingParams(**fields)
    assert refused.value.param == param and param in str(refused.value)


def test_edge_values_that_fit_are_accepted():
    p = SamplingParams(seed=INT64_MIN, top_k=INT64_MAX, logprobs=20, temperature=0.0)
    assert (p.seed, p.top_k, p.logprobs, p.greedy) == (INT64_MIN, INT64_MAX, 20, True)
    assert SamplingParams(seed=INT64_MAX, top_k=-1).top_k == 0


def test_a_tiny_positive_temperature_is_raised_to_the_floor_as_vllm_does():
    assert SamplingParams(temperature=1e-40).temperature == MIN_POSITIVE_TEMPERATURE
    assert SamplingParams(temperature=0.5).temperature == 0.5
