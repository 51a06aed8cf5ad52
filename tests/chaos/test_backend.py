"""The backend probe answers from what it tried, and leaves nothing behind."""

from __future__ import annotations

import subprocess

from lab.chaos.backend import network_fault_backend
from tests.scheduling import NETWORK_NAMESPACES

pytestmark = NETWORK_NAMESPACES


def namespaces() -> str:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else ""


def test_netns_is_chosen_exactly_when_every_check_passed() -> None:
    result = network_fault_backend()
    assert result["backend"] in ("netns", "proxy")
    assert (result["backend"] == "netns") == all(why == "ok" for why in result["checks"].values())


def test_the_reason_names_the_first_failed_check() -> None:
    result = network_fault_backend()
    failed = [name for name, why in result["checks"].items() if why != "ok"]
    if failed:
        assert result["reason"].startswith(f"the netns backend is unavailable ({failed[0]}:")


def test_the_probe_namespace_is_deleted() -> None:
    network_fault_backend()
    assert "lab-probe" not in namespaces()
