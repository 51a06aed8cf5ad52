"""`lab serve` refuses admin flags (hot reload, fault injection) that cannot work, before loading anything (exit 2,
saying why)."""
from __future__ import annotations

import hashlib

import pytest

from tests.server.conftest import free_port
from tests.server.test_cli import run_serve

GOOD_HASH = "sha256:" + hashlib.sha256(b"sk-admin").hexdigest()


@pytest.mark.parametrize("flags, words", [
    (("--enable-fault-injection",), "needs --admin-key-hash"),
    (("--admin-key-hash", GOOD_HASH, "--engine", "hf"), "engine core process"),  # hot reload needs the core
    (("--enable-fault-injection", "--admin-key-hash", "sk-admin"), "sha256:<64 hex digits>"),
    (("--enable-fault-injection", "--admin-key-hash", GOOD_HASH, "--engine-core", "thread"), "engine core process"),
    (("--enable-fault-injection", "--admin-key-hash", GOOD_HASH, "--engine", "hf"), "engine core process"),
])
def test_fault_injection_flags_that_cannot_work_exit_2(flags, words):
    result = run_serve(*flags, "--port", str(free_port()))
    assert result.returncode == 2 and words in result.stderr, result.stderr


def test_fault_injection_is_documented_in_help():
    text = " ".join(run_serve("--help").stdout.split())
    assert "--enable-fault-injection" in text and "--admin-key-hash" in text and "/admin/faults" in text
    assert "/admin/reload" in text
