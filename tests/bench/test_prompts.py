"""Prompts have exactly the requested number of tokens for the DeepSeek tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from lab.bench.arrivals import PoissonArrivals
from lab.bench.prompts import PromptBuilder
from lab.bench.tiers import TierMix, TierShare, single_tier
from lab.bench.workloads import RandomWorkload, plan_requests
from lab.engine.tokenizer import Tokenizer


@pytest.fixture
def builder(prompt_builder: PromptBuilder) -> PromptBuilder:
    return prompt_builder


@pytest.fixture(scope="module")
def server_tokenizer() -> Tokenizer:
    """What `lab serve` counts a prompt with: the engine's tokenizer, BOS rules included."""
    return Tokenizer.deepseek()


@pytest.mark.parametrize("num_tokens", [1, 2, 7, 128, 1000, 4096])
def test_text_prompts_encode_to_the_exact_count(builder, server_tokenizer, num_tokens):
    prompt = builder.text(num_tokens, np.random.default_rng(num_tokens))
    assert len(server_tokenizer.encode(prompt.value)) == num_tokens == prompt.num_tokens


def test_token_id_prompts_have_the_count_and_decode_to_words(builder, server_tokenizer):
    prompt = builder.token_ids(50, np.random.default_rng(0))
    assert len(prompt.payload()) == 50
    assert len(server_tokenizer.encode(server_tokenizer.decode(list(prompt.value)))) == 50


def test_prompts_differ_between_requests_and_repeat_with_the_seed(builder):
    a = builder.text(64, np.random.default_rng(5)).value
    assert a == builder.text(64, np.random.default_rng(5)).value
    assert a != builder.text(64, np.random.default_rng(6)).value


def test_plan_is_seeded_and_assigns_tiers(builder):
    tiers = TierMix((TierShare("vip", "k-vip", 1.0), TierShare("batch", "k-batch", 3.0)))
    plan = plan_requests(RandomWorkload(400, 16, 4), PoissonArrivals(10.0), tiers, builder, "token-ids", seed=3)
    again = plan_requests(RandomWorkload(400, 16, 4), PoissonArrivals(10.0), tiers, builder, "token-ids", seed=3)
    assert plan == again
    vip = sum(1 for p in plan if p.tier.name == "vip")
    assert vip / 400 == pytest.approx(0.25, abs=0.06)
    assert all(len(p.prompt.payload()) == 16 and p.output_tokens == 4 for p in plan)
    # Changing the rate keeps prompts and tiers (independent random streams).
    faster = plan_requests(RandomWorkload(400, 16, 4), PoissonArrivals(20.0), tiers, builder, "token-ids", seed=3)
    assert [p.prompt for p in faster] == [p.prompt for p in plan]
    assert faster[-1].arrival_s == pytest.approx(plan[-1].arrival_s / 2)


def test_single_tier_sends_the_run_key(builder):
    plan = plan_requests(RandomWorkload(2, 3, 1), None, single_tier("sk"), builder, "text", seed=0)
    assert [p.tier.api_key for p in plan] == ["sk", "sk"] and plan[0].arrival_s == plan[1].arrival_s == 0.0


def test_a_vocab_limit_keeps_every_prompt_id_below_it(server_tokenizer):
    # DeepSeek-V2-Lite has 102,400 embedding rows under V3's tokenizer: text built without the limit hits ids above.
    limited = PromptBuilder.deepseek(vocab_size=102_400)
    text = limited.text(2000, np.random.default_rng(1)).value
    ids = server_tokenizer.encode(text)
    assert len(ids) == 2000 and max(ids) < 102_400
    assert max(limited.token_ids(2000, np.random.default_rng(2)).value) < 102_400
    unlimited = PromptBuilder.deepseek().token_ids(2000, np.random.default_rng(2)).value
    assert max(unlimited) >= 102_400  # the case the limit is for


def test_a_vocab_limit_too_small_for_prompts_is_refused():
    with pytest.raises(ValueError, match="below id 50"):
        PromptBuilder.deepseek(vocab_size=50)
