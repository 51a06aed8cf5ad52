"""A bad hot reload as a chaos fault: a corrupt checkpoint written on disk, then offered to a replica.

Contract (chaostoolkit actions: JSON-able arguments, the replica by its own URL and admin key):
- `write_corrupt_checkpoint(directory, model, hf_overrides=None, corruption="nan", seed=1)`: writes the
  preset `model`'s dummy weights (with the replica's `hf_overrides`, so the checkpoint fits it) as a real
  safetensors checkpoint (`lab.engine.checkpoint_writer`), then corrupts it: `nan` (one tensor of layer 0
  filled with NaN), `missing` (one tensor dropped), `truncated` (the weights file cut in half). Returns a
  `FaultRecord` dict with `path`, `corruption` and the tensor it hit.
- `reload_weights(replica_url, admin_key, source, seed=None, policy="switch", expect="refused")`: `POST
  /admin/reload` on the replica, with its live version read before and after (`GET /admin/reload`).
  The record holds the answer (`status`, the reload record or the refusal's message), `version_before`,
  `version_after` and `old_version_serving`. When the outcome is not `expect` ("refused" or "reloaded") it
  raises `LabError`, so the drill's activity fails: a corrupt checkpoint that is accepted fails the drill.
- `remove_checkpoint(directory)`: the rollback; a directory already gone is fine.
- `new_checkpoint_dir(directory, drill)`: a fresh folder name under `directory` (a probe for the configuration).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx

from lab.chaos.model_faults import answer_message
from lab.chaos.records import FaultRecord, Instant
from lab.errors import LabError

__all__ = ["write_corrupt_checkpoint", "reload_weights", "remove_checkpoint", "new_checkpoint_dir"]

CORRUPTIONS = ("nan", "missing", "truncated")
EXPECTS = ("refused", "reloaded")
RELOAD_TIMEOUT_S = 900.0  # a replica answers once it has read and checked the whole checkpoint


def write_corrupt_checkpoint(directory: str, model: str, hf_overrides: dict | str | None = None,
                             corruption: str = "nan", seed: int = 1) -> dict:
    if isinstance(hf_overrides, str):  # an experiment's env configuration carries it as JSON text
        import json

        hf_overrides = json.loads(hf_overrides or "{}")
    if corruption not in CORRUPTIONS:
        raise LabError(f"corruption must be one of {CORRUPTIONS}, got {corruption!r}")
    import torch
    from safetensors.torch import load_file, save_file

    from lab.engine.checkpoint_writer import write_checkpoint

    path = Path(directory)
    if path.exists():
        shutil.rmtree(path)  # a leftover of an earlier run: this drill's checkpoint is written fresh
    write_checkpoint(model, path, seed=int(seed), dtype=torch.bfloat16, hf_overrides=hf_overrides or None)
    files = sorted(path.glob("*.safetensors"))
    target = files[0]
    tensors = load_file(str(target))
    hit = next((name for name in sorted(tensors) if ".layers.0." in name and tensors[name].ndim == 2),
               sorted(tensors)[0])
    if corruption == "truncated":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    else:
        if corruption == "nan":
            tensors[hit][0, 0] = float("nan")  # one value is enough: a real corruption is rarely wholesale
        else:
            tensors.pop(hit)
        save_file(tensors, str(target), metadata={"format": "pt"})
    return FaultRecord("write_corrupt_checkpoint", str(path), "disk",
                       {"path": str(path), "corruption": corruption, "tensor": hit, "model": model}).as_dict()


def reload_weights(replica_url: str, admin_key: str, source: str, seed: int | None = None, policy: str = "switch",
                   expect: str = "refused") -> dict:
    if expect not in EXPECTS:
        raise LabError(f"expect must be one of {EXPECTS}, got {expect!r}")
    url, auth = f"{replica_url.rstrip('/')}/admin/reload", {"Authorization": f"Bearer {admin_key}"}
    before = _version(url, auth)
    started = Instant.now()  # the fault is the whole reload: from the offer to the replica's answer
    body: dict[str, Any] = {"source": source, "policy": policy, **({} if seed is None else {"seed": int(seed)})}
    answer = httpx.post(url, headers=auth, json=body, timeout=RELOAD_TIMEOUT_S)
    after = _version(url, auth)
    refused = answer.status_code == 400
    detail = {"status": answer.status_code, "source": source, "version_before": before, "version_after": after,
              "old_version_serving": after == before,
              "answer": answer.json() if answer.status_code == 200 else answer_message(answer),
              "duration_s": Instant.now().monotonic_s - started.monotonic_s}
    record = FaultRecord("reload_weights", replica_url, "replica", detail, at=started).as_dict()
    outcome = "refused" if refused else "reloaded" if answer.status_code == 200 else f"HTTP {answer.status_code}"
    if outcome != expect:
        raise LabError(f"the reload of {source} was {outcome}, expected {expect}: {detail['answer']}")
    return record


def new_checkpoint_dir(directory: str, drill: str) -> str:
    import time

    folder = Path(directory)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = folder / f"{drill}-checkpoint-{stamp}{f'-{n}' if n else ''}"
        if not path.exists():
            return str(path)
    raise LabError(f"no free checkpoint folder name in {folder} for {drill}")


def remove_checkpoint(directory: str) -> dict:
    path = Path(directory)
    existed = path.exists()
    shutil.rmtree(path, ignore_errors=True)
    return FaultRecord("remove_checkpoint", str(path), "disk", {"removed": existed}).as_dict()


def _version(url: str, auth: dict) -> str:
    answer = httpx.get(url, headers=auth, timeout=30.0)
    if answer.status_code != 200:
        raise LabError(f"GET {url}: HTTP {answer.status_code}: {answer_message(answer)}")
    return str(answer.json()["version"])
