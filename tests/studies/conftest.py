"""Fixtures the study tests share with the bench tests: the session's prompt builder and the scripted
OpenAI-compatible server (`tests/bench/conftest.py`)."""

from tests.bench.conftest import fake_server, prompt_builder  # noqa: F401  (pytest finds fixtures by name)
