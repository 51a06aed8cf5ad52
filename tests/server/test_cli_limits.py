"""`lab serve`'s protective flags: documented with their defaults, bad values exit 2 naming the flag."""
from __future__ import annotations

from tests.server.conftest import free_port
from tests.server.test_cli import run_serve


def test_limit_flags_are_documented_with_their_defaults():
    text = " ".join(run_serve("--help").stdout.split())
    assert "--max-request-bytes" in text and "8388608" in text and "413" in text
    assert "--engine-iteration-timeout-s" in text and "default 30" in text and "engine_unresponsive" in text


def test_a_non_positive_limit_exits_2_naming_it():
    result = run_serve("--max-request-bytes", "0", "--port", str(free_port()))
    assert result.returncode == 2 and "max_request_bytes must be >= 1, got 0" in result.stderr
    result = run_serve("--engine-iteration-timeout-s", "0", "--port", str(free_port()))
    assert result.returncode == 2 and "engine_iteration_timeout_s must be > 0" in result.stderr


def test_the_iteration_timeout_is_refused_with_the_hf_engine():
    result = run_serve("--engine", "hf", "--engine-iteration-timeout-s", "5", "--port", str(free_port()))
    assert result.returncode == 2 and "--engine-iteration-timeout-s" in result.stderr and "--engine hf" in result.stderr
