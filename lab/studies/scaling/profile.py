"""Notebook 04's engine profile: the illustrative default, a profile file, or a measured lab record.

Contract: `study_profile(path, preset, prefill_s_per_token, kv_cache_tokens)` returns `default_profile()` when
`path` is empty, else `lab.scale.engine_profile.load_profile` of the file, with `preset` (which preset of a
roofline record; empty: its only one) and the two numbers a record made before the roofline study logged
them lacks (0, the notebook's literal for "not given": read from the record). A relative path that does not
exist from the working directory is read from the project root, so a profile's `reports/records/...` works
from papermill's working directory too.
"""
from __future__ import annotations

from pathlib import Path

from lab.paths import project_root
from lab.scale.engine_profile import EngineProfile, default_profile, load_profile


def study_profile(path: str = "", preset: str = "", prefill_s_per_token: float = 0.0,
                  kv_cache_tokens: int = 0) -> EngineProfile:
    if not path:
        if preset or prefill_s_per_token or kv_cache_tokens:
            raise ValueError("a preset or numbers to fill in were given without a record to read: set the path")
        return default_profile()
    file = Path(path)
    if not file.is_absolute() and not file.exists():
        file = project_root() / file
    if not file.exists():
        raise FileNotFoundError(f"no engine profile or record at {path!r} (nor under the project root)")
    return load_profile(file, preset or None, prefill_s_per_token=prefill_s_per_token or None,
                        kv_cache_tokens=kv_cache_tokens or None)
