"""`lab serve --engine hf-cb` flags: documented in --help, refused where they would be ignored (exit 2)."""
from __future__ import annotations

import subprocess
import sys

from tests.server.conftest import ROOT, free_port
from tests.server.test_cli import run_serve


def test_hf_cb_engine_and_its_sizes_are_documented():
    text = " ".join(run_serve("--help").stdout.split())  # argparse wraps lines
    assert "hf-cb: the native deployment, transformers' continuous batching manager" in text
    for flag, field in (("--hf-cb-max-batch-tokens", "max_batch_tokens"), ("--hf-cb-num-blocks", "num_blocks"),
                        ("--hf-cb-block-size", "page_size"), ("--hf-cb-max-requests-per-batch", "max_requests_per_batch")):
        assert f"{flag} N" in text and f"({field}" in text


def test_hf_cb_sizes_need_the_hf_cb_engine_and_positive_values():
    result = run_serve("--hf-cb-num-blocks", "8", "--port", str(free_port()))
    assert result.returncode == 2 and "--hf-cb-num-blocks: apply to --engine hf-cb only" in result.stderr
    result = run_serve("--engine", "hf", "--hf-cb-block-size", "16", "--port", str(free_port()))
    assert result.returncode == 2 and "--hf-cb-block-size: apply to --engine hf-cb only" in result.stderr
    result = run_serve("--engine", "hf-cb", "--hf-cb-max-batch-tokens", "0", "--port", str(free_port()))
    assert result.returncode == 2 and "--hf-cb-max-batch-tokens must be >= 1, got 0" in result.stderr


def test_our_engines_flags_with_the_hf_cb_engine_exit_2_naming_them():
    result = run_serve("--engine", "hf-cb", "--num-gpu-blocks", "8", "--engine-core", "thread", "--hf-batch-size", "2",
                       "--port", str(free_port()))
    assert result.returncode == 2 and "--hf-batch-size applies to --engine hf only" in result.stderr
    result = run_serve("--engine", "hf-cb", "--num-gpu-blocks", "8", "--engine-core", "thread", "--port", str(free_port()))
    assert result.returncode == 2 and "--num-gpu-blocks, --engine-core" in result.stderr
    assert "--engine hf-cb runs transformers' continuous batching manager" in result.stderr


def test_the_hf_cb_backend_imports_without_torch():
    code = ("import sys\nimport lab.server.hf_cb_backend, lab.server.hf_cb_params, lab.server.hf_cb_config\n"
            "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\nassert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
