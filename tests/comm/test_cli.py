"""`lab bench comm`: mistakes exit 2 naming the problem, before any process starts or any file is written."""
from __future__ import annotations

from pathlib import Path

import pytest

from lab.cli import main


@pytest.mark.parametrize(("options", "message"), [
    (["--min-bytes", "1M", "--max-bytes", "1K"], "size range inverted: min 1 MiB is above max 1 KiB"),
    (["--collectives", "all_reduce,broadcast"], "unknown collective 'broadcast'; valid collectives: all_reduce"),
    (["--nproc", "1"], "nproc must be at least 2: a collective needs two ranks"),
    (["--knob", "mc:NCCL_NVLS_ENABLE=1"], "NCCL_NVLS_ENABLE: the lab never sets NVLink SHARP / multicast"),
    (["--dtype", "fp4"], "unknown dtype 'fp4'"),
])
def test_bad_input_is_named_before_anything_runs(options: list[str], message: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["bench", "comm", "--backend", "gloo", "--out-dir", str(out), "--no-track", *options]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
