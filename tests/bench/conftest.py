"""Fixtures of the bench tests: one prompt builder per session (building it reads the whole
DeepSeek vocabulary, about a second) and a scripted OpenAI-compatible server per test."""

from __future__ import annotations

import pytest

from lab.bench.prompts import PromptBuilder
from tests.bench.fake_openai import FakeBehaviour, FakeServer


@pytest.fixture(scope="session")
def prompt_builder() -> PromptBuilder:
    return PromptBuilder.deepseek()


@pytest.fixture
def fake_server(request):
    """A running fake server; parametrize indirectly with a `FakeBehaviour` to script it."""
    behaviour = getattr(request, "param", None) or FakeBehaviour()
    with FakeServer(behaviour) as server:
        yield server
