"""Notebook 04's engine profile: the illustrative default, or a record found from papermill's `notebooks/` too."""
from __future__ import annotations

from pathlib import Path

import pytest

from lab.scale.engine_profile import default_profile
from lab.studies.scaling.profile import study_profile

H100 = "reports/records/01_engine_roofline-gpu-h100/record.json"  # as experiments/gpu.yaml names it


def test_no_path_is_the_illustrative_default() -> None:
    assert study_profile() == default_profile()
    with pytest.raises(ValueError, match="without a record"):
        study_profile("", "deepseek-v2-lite")


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / H100).exists(), reason="no committed H100 record")
def test_a_relative_record_path_is_read_from_the_project_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # papermill runs notebook 04 in notebooks/, not at the root
    with pytest.raises(ValueError, match="lacks deepseek_v2_lite_prefill_s_per_token"):
        study_profile(H100, "deepseek-v2-lite")
    p = study_profile(H100, "deepseek-v2-lite", prefill_s_per_token=1e-4, kv_cache_tokens=1_000_000)
    assert p.model == "deepseek-v2-lite" and p.batch_sizes == (1, 8, 32, 128, 256)
    with pytest.raises(FileNotFoundError, match="no engine profile or record at 'reports/nothing.json'"):
        study_profile("reports/nothing.json")
