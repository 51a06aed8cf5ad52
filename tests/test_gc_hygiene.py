"""A test that freezes the GC (as `lab gateway bench-latency` does in-process) must not make the session end with
nanobind's "leaked ..." lines: tests/conftest.py unfreezes after every test, so exit frees Triton's objects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FREEZER = '''
import gc
import triton  # noqa: F401  (a nanobind extension: it reports what is still alive at exit)


def test_freezes_the_heap():
    gc.collect()
    gc.freeze()
'''


def run_session(test_file: Path, *plugins: str) -> str:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugins, str(test_file)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_a_frozen_heap_is_unfrozen_so_triton_is_freed_at_exit(tmp_path: Path) -> None:
    pytest.importorskip("triton", reason="triton is not installed")
    test_file = tmp_path / "test_freezer.py"
    test_file.write_text(FREEZER)
    if "nanobind: leaked" not in run_session(test_file):  # the control: no conftest, the heap stays frozen
        pytest.skip("this triton reports no leaks at exit, frozen or not")
    assert "nanobind: leaked" not in run_session(test_file, "-p", "tests.conftest")
