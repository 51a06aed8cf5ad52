"""The KV budget on a GPU, by hand (`lab.engine.kv_sizing.kv_budget_bytes`): an engine's share of the card less
its own memory, capped by what is free; another process on the card does not shrink the share."""
from __future__ import annotations

import pytest

from lab.engine.kv_sizing import FREE_MARGIN_BYTES, NON_TORCH_BYTES, kv_budget_bytes

GIB = 2**30


def test_alone_on_the_card_the_share_less_weights_context_and_peak():
    # 80 GiB card at 0.4: 32 GiB; weights 3 GiB reserved; peak 1 GiB; 76 GiB free
    budget = kv_budget_bytes(80 * GIB, 76 * GIB, 3 * GIB, 0.4, 1 * GIB)
    assert budget == pytest.approx(32 * GIB - 3 * GIB - NON_TORCH_BYTES - 1 * GIB)


def test_a_second_engine_beside_a_first_gets_its_own_share():
    # the first engine holds 32 GiB of the card: 44 GiB free when the second sizes its cache
    budget = kv_budget_bytes(80 * GIB, 44 * GIB, 3 * GIB, 0.4, 1 * GIB)
    assert budget == pytest.approx(32 * GIB - 3 * GIB - NON_TORCH_BYTES - 1 * GIB) and budget > 0


def test_never_more_than_is_free():
    budget = kv_budget_bytes(80 * GIB, 10 * GIB, 3 * GIB, 0.9, 1 * GIB)
    assert budget == pytest.approx(10 * GIB - 1 * GIB - FREE_MARGIN_BYTES)
