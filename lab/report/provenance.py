"""What hardware and which code a measurement came from, in the words the report prints.

Contract: both functions read the environment flattened to dotted keys (`device`, `gpu.count`,
`cpu_count`, `git_sha`, `git_dirty`, `git_diff_sha256`, `git_untracked`, `git_unavailable_reason`):
a record's `flatten(environment)`, or an MLflow run's `lab.*` tags without the prefix, where every value
is a string. `describe_hardware` -> "1× NVIDIA H200", "NVIDIA H100 80GB HBM3 (8 on the machine)",
"2-core CPU (AMD EPYC)"; `describe_code` -> "commit 3d02e495d1be", "commit ... + diff sha256 ...",
"commit ... + uncommitted changes (diff not recorded)", or "not identified: <why>".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

UNKNOWN = "-"
CPU_PREFIX = "cpu:"  # `collect_environment()` names a machine without a GPU "cpu: <model>"
SHORT_SHA = 12


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool) or value is None:
        return value
    return {"true": True, "false": False}.get(str(value).lower())


def _count(listing: Any) -> int:
    if isinstance(listing, str):  # an MLflow tag holds the list as JSON
        try:
            listing = json.loads(listing)
        except ValueError:
            return 0
    return len(listing) if isinstance(listing, list) else 0


def describe_hardware(env: Mapping[str, Any]) -> str:
    device = env.get("device")
    if not device:
        return UNKNOWN
    if device.startswith(CPU_PREFIX):
        model = device[len(CPU_PREFIX):].strip()
        cores = _int(env.get("cpu_count"))
        name = f"{cores}-core CPU" if cores else "CPU"
        return f"{name} ({model})" if model else name
    gpus = _int(env.get("gpu.count")) or 1
    # The machine's count, not necessarily what the study used: say so rather than "8×".
    return f"1× {device}" if gpus == 1 else f"{device} ({gpus} on the machine)"


def describe_code(env: Mapping[str, Any]) -> str:
    sha = env.get("git_sha")
    if not sha:
        reason = env.get("git_unavailable_reason")
        return f"not identified: {reason}" if reason else "not identified (no git sha recorded)"
    text = f"commit {sha[:SHORT_SHA]}"
    diff_sha256 = env.get("git_diff_sha256")
    untracked = _count(env.get("git_untracked"))
    if diff_sha256:
        text += f" + diff sha256 {diff_sha256[:SHORT_SHA]}"
    if untracked:
        text += f" + {untracked} untracked file{'s' if untracked > 1 else ''}"
    if _flag(env.get("git_dirty")) and not (diff_sha256 or untracked):
        text += " + uncommitted changes (diff not recorded)"
    return text
