"""Broken reload sources for the study's refused reload, each one exercising a real refusal path of the replica.

Contract: `make_corrupt_source(kind, preset, hf_overrides, folder, seed)` writes under `folder` (which must
exist) and returns a `CorruptSource`: the `path` to send as the reload's source, what is wrong with it
(`defect`), and `expect_in_error`, a phrase the replica's refusal must contain (so a refusal for some other
reason does not pass for this one). Kinds (`config.CORRUPT_KINDS`):
- `nan-checkpoint`: the preset's own dummy weights written as a Hugging Face checkpoint
  (`lab.engine.checkpoint_writer`) with one tensor (the first floating one in name order, of the first shard)
  set to NaN: same architecture, every tensor present, so the replica reads it all and refuses it naming that
  tensor. It costs one write of the whole model (bfloat16) to disk.
- `other-architecture`: the preset's config (with `hf_overrides`) with one field changed (one the overrides
  leave alone, since the replica applies its overrides to a reload's config too) and a one-tensor
  safetensors file: refused from the config, naming the field, before any tensor is read.
- `missing`: a folder that does not exist: refused at once as neither a preset nor a checkpoint.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.errors import LabError
from lab.studies.hot_reload.config import CORRUPT_KINDS

# The field `other-architecture` changes: the first of these that the overrides do not set.
ARCHITECTURE_FIELDS = ("num_hidden_layers", "vocab_size", "hidden_size")
SAFETENSORS_INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class CorruptSource:
    kind: str
    path: Path  # the reload's source
    defect: str  # what is wrong with it, in words
    expect_in_error: str  # the refusal must contain this


def make_corrupt_source(kind: str, preset: str, hf_overrides: Mapping[str, Any], folder: Path,
                        seed: int = 0) -> CorruptSource:
    if kind not in CORRUPT_KINDS:
        raise LabError(f"corrupt source kind must be one of {', '.join(CORRUPT_KINDS)}, got {kind!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise LabError(f"{folder} is not a folder to write the corrupt source into")
    if kind == "missing":
        path = folder / "no-such-checkpoint"
        return CorruptSource(kind, path, f"{path} does not exist", "neither a preset")
    if kind == "other-architecture":
        return _other_architecture(preset, hf_overrides, folder / "other-architecture")
    return _nan_checkpoint(preset, hf_overrides, folder / "nan-checkpoint", seed)


def _other_architecture(preset: str, hf_overrides: Mapping[str, Any], path: Path) -> CorruptSource:
    import torch
    from safetensors.torch import save_file

    from lab.engine.presets import get_preset

    config = {**get_preset(preset), **hf_overrides}
    changed = next((f for f in ARCHITECTURE_FIELDS if f not in hf_overrides and f in config), None)
    if changed is None:
        raise LabError(f"hf_overrides set every field the other-architecture source could change "
                       f"({', '.join(ARCHITECTURE_FIELDS)}); use corrupt source 'nan-checkpoint' or 'missing'")
    config[changed] = int(config[changed]) + 1
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({"x": torch.zeros(1)}, str(path / "model.safetensors"))
    return CorruptSource("other-architecture", path, f"config.json with {changed}={config[changed]} (one more than "
                         "the live model's)", changed)


def _nan_checkpoint(preset: str, hf_overrides: Mapping[str, Any], path: Path, seed: int) -> CorruptSource:
    import torch
    from safetensors.torch import load_file, save_file

    from lab.engine.checkpoint_writer import write_checkpoint

    write_checkpoint(preset, path, seed=seed, hf_overrides=dict(hf_overrides) or None)
    index = path / SAFETENSORS_INDEX
    shard = path / (sorted(set(json.loads(index.read_text())["weight_map"].values()))[0] if index.is_file()
                    else "model.safetensors")
    tensors = load_file(str(shard))
    name = next(n for n in sorted(tensors) if tensors[n].is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(shard), metadata={"format": "pt"})
    return CorruptSource("nan-checkpoint", path, f"the preset's seed-{seed} checkpoint with {name} set to NaN", name)
