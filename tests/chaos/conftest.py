"""Fixtures of the chaos tests: a whole local service of real processes (`tests/chaos/services.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.services import Service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """Two upstreams (replica-a behind a fault proxy) and a gateway, fresh for each test: faults change state."""
    started = Service(tmp_path).start()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The same service shared by a module's tests; a test that sets a fault clears it before it ends."""
    started = Service(tmp_path_factory.mktemp("service")).start()
    try:
        yield started
    finally:
        started.close()
