"""Load a model: a preset with seeded dummy weights, or a local Hugging Face checkpoint directory.

Contract: `load_model(model, dtype, device, seed, hf_overrides, *, load_format, phases, quantization) -> LoadedModel`.
  - `model` is a preset name (`presets.PRESETS`) or a directory with config.json and either
    model.safetensors or a sharded model.safetensors.index.json; anything else is a ValueError
    naming the presets. Nothing is downloaded.
  - The module is built on the meta device and materialized straight on `device` in `dtype`
    (routers stay float32), so a large preset never takes a CPU float32 detour.
  - Presets: dummy weights, like `vllm --load-format dummy`: normal(0, 0.02) matrices, ones for
    norm weights, zeros for biases. Each tensor draws from its own generator seeded by (seed, name)
    on `device`: same seed and device type -> same weights (CPU and CUDA streams differ).
  - Checkpoints: tensors stream from safetensors into `load_weights`, which names missing,
    mis-shaped and unexpected tensors. Then `process_weights_after_loading()`; eval mode.
  - Block-FP8 checkpoints (DeepSeek-V3/R1: config.json `quantization_config` with quant_method "fp8"):
    `iter_checkpoint` dequantizes each fp8 `X.weight` with its `X.weight_scale_inv` as it streams in
    (`lab.engine.fp8.dequantize_stream`), so `load_weights` never sees fp8 bytes or scales and the
    parameters hold the engine dtype; bf16 tensors (embeddings, norms, lm_head, router) pass through.
    This is the plain path, correct on every device; no FP8 GEMM is built (`lab.engine.fp8`). Since the
    stream is what hot reload reads too, and `quantization_config` is kept out of `ModelConfig`, a reload
    may swap a bf16 checkpoint for an fp8 one of the same model and back: it changes stored bits, not shapes.
  - `quantization="fp8"` (`QUANTIZATIONS`; vLLM's `--quantization fp8`): after loading bf16/f32 weights
    (preset or checkpoint), every weight an FP8 checkpoint stores as fp8 is rounded through block fp8
    (`fake_quantize_block_fp8_`, 128x128 tiles), so the engine computes with the numbers FP8 storage gives.
    An fp8 checkpoint is left as loaded (already fp8 numbers). A hot reload (`update_weights`) does not
    re-apply it: bf16 weights reloaded into such an engine stay unrounded.
  `LoadedModel.quantization` says which block-FP8 config the weights went through, None for none.
`hf_overrides` patch the HF config dict before parsing (e.g. {"num_hidden_layers": 2}).
`load_format` (`LOAD_FORMATS`) picks how a checkpoint's bytes reach the device; every one gives the
same bits (presets ignore it):
  - "auto": safetensors opens each shard on the device and reads and copies each tensor itself;
  - "cpu": each tensor is read into host memory and `load_weights` copies it to the device (the plain
    path a user writes: `load_file`, then `param.copy_`);
  - "overlap": a reader thread reads raw bytes into pinned staging buffers while this thread copies
    the previous chunks to the device on a side stream (`lab.engine.safetensors_stream`).
`phases` (a `StartupPhases`) receives config, model_build, then weight_init (preset) or weight_read and
weight_transfer (checkpoint: the time spent waiting for the next tensor, then the rest of the copy into
the parameters; with "auto" the read includes safetensors' own host->device copy; an fp8 checkpoint's
dequantization happens inside the stream, so it counts as read), and weight_postprocess (which includes
`quantization="fp8"`'s rounding).
safetensors maps a file into memory, so where the OS still has to fetch bytes from disk (a CPU device,
"auto" or "cpu"), that read lands in whichever phase first touches them: the transfer.
"""
from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from lab.engine.fp8 import BlockFP8Config, dequantize_stream, fake_quantize_block_fp8_, parse_quantization_config
from lab.engine.model_config import ModelConfig
from lab.engine.models import get_model_class
from lab.engine.presets import PRESETS, get_preset
from lab.engine.safetensors_stream import iter_overlapped
from lab.engine.startup import StartupPhases

DUMMY_STD = 0.02  # std of dummy matrices, as HF's initializer_range
LOAD_FORMATS = ("auto", "cpu", "overlap")  # how checkpoint bytes reach the device (module docstring)
QUANTIZATIONS = ("fp8",)  # weight quantizations applied on load (module docstring)


@dataclass
class LoadedModel:
    module: nn.Module
    config: ModelConfig
    checkpoint_dir: Path | None
    preset: str | None
    quantization: BlockFP8Config | None = None  # the block fp8 the weights went through (checkpoint or on load)


def load_model(
    model: str | Path,
    dtype: torch.dtype,
    device: torch.device | str,
    seed: int = 0,
    hf_overrides: dict | None = None,
    *,
    load_format: str = "auto",
    phases: StartupPhases | None = None,
    quantization: str | None = None,
) -> LoadedModel:
    device = torch.device(device)
    _check_load_format(load_format)
    check_quantization(quantization)
    phases = phases if phases is not None else StartupPhases()
    name = str(model)
    if name in PRESETS:
        with phases.phase("config"):
            config = ModelConfig.from_hf_dict({**get_preset(name), **(hf_overrides or {})})
        with phases.phase("model_build"):
            module = build_model(config, dtype, device)
        with phases.phase("weight_init"):
            init_dummy_weights(module, seed)
        checkpoint_dir, preset, stored = None, name, None
    elif Path(name).is_dir():
        checkpoint_dir, preset = Path(name), None
        with phases.phase("config"):
            config = ModelConfig.from_pretrained_dir(checkpoint_dir, hf_overrides)
            stored = checkpoint_quantization(checkpoint_dir)
        with phases.phase("model_build"):
            module = build_model(config, dtype, device)
        with phases.phase("weight_transfer") as phase:  # what is left of loading once the reads are carved out
            tensors = iter_checkpoint(checkpoint_dir, device, load_format=load_format, dtype=dtype)
            module.load_weights(phase.carve("weight_read", tensors))
    else:
        raise ValueError(
            f"model {name!r} is neither a preset ({', '.join(PRESETS)}) nor an existing checkpoint "
            "directory: the path does not exist"
        )
    with phases.phase("weight_postprocess"):
        if quantization == "fp8" and stored is None:
            stored = BlockFP8Config()
            fake_quantize_block_fp8_(module, stored.weight_block_size)
        if hasattr(module, "process_weights_after_loading"):
            module.process_weights_after_loading()
    return LoadedModel(module.eval(), config, checkpoint_dir, preset, stored)


def _check_load_format(load_format: str) -> None:
    if load_format not in LOAD_FORMATS:
        raise ValueError(f"load_format must be one of {LOAD_FORMATS}, got {load_format!r}")


def check_quantization(quantization: str | None) -> None:
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be None or one of {QUANTIZATIONS}, got {quantization!r}")


def checkpoint_quantization(checkpoint_dir: Path) -> BlockFP8Config | None:
    """The block-FP8 config a checkpoint's config.json declares, None for a bf16/fp16/fp32 one."""
    file = checkpoint_dir / "config.json"
    if not file.is_file():
        raise ValueError(f"{checkpoint_dir} has no config.json")
    return parse_quantization_config(json.loads(file.read_text()))


def build_model(config: ModelConfig, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """The model with uninitialized parameters on `device`: constructed on meta, then materialized."""
    with torch.device("meta"):
        module = get_model_class(config)(config)
    for mod in module.modules():
        keep_fp32 = getattr(mod, "fp32_params", ())
        for pname, param in list(mod.named_parameters(recurse=False)):
            dt = torch.float32 if pname in keep_fp32 else dtype
            setattr(mod, pname, nn.Parameter(torch.empty(param.shape, dtype=dt, device=device), requires_grad=False))
    # buffers (rotary inverse frequencies) were built on CPU in float32; move them without casting
    return module.to(device)


def _param_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


@torch.no_grad()
def init_dummy_weights(module: nn.Module, seed: int, std: float = DUMMY_STD) -> None:
    for name, param in module.named_parameters():
        fill_dummy(name, param, seed, std)


@torch.no_grad()
def fill_dummy(name: str, param: torch.Tensor, seed: int, std: float = DUMMY_STD) -> None:
    """Parameter `name`'s dummy value, drawn on `param`'s device from its own generator seeded by (seed, name)."""
    if param.ndim >= 2:
        gen = torch.Generator(device=param.device)
        gen.manual_seed(_param_seed(seed, name))
        param.normal_(0.0, std, generator=gen)
    elif name.endswith("bias"):  # linear biases and DeepSeek's e_score_correction_bias
        param.zero_()
    else:  # RMSNorm weights
        param.fill_(1.0)


def checkpoint_files(checkpoint_dir: Path) -> list[Path]:
    index = checkpoint_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not weight_map:
            raise ValueError(f"{index} has no weight_map")
        files = [checkpoint_dir / f for f in sorted(set(weight_map.values()))]
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise ValueError(f"{index} names shard files that do not exist: {absent}")
        return files
    single = checkpoint_dir / "model.safetensors"
    if single.is_file():
        return [single]
    raise ValueError(f"{checkpoint_dir} has neither model.safetensors nor model.safetensors.index.json")


def iter_checkpoint(checkpoint_dir: Path, device: torch.device, *, load_format: str = "auto",
                    dtype: torch.dtype = torch.float32) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of every shard, one at a time: on `device` ("auto", "overlap"), or
    in host memory for the consumer to copy ("cpu"; see the module docstring). A block-FP8 checkpoint's fp8
    weights come out dequantized to `dtype` (float32 by default: the exact product, which the consumer's
    copy rounds as DeepSeek's `weight_dequant` rounds it), its scale tensors consumed."""
    _check_load_format(load_format)
    quantization = checkpoint_quantization(checkpoint_dir)
    tensors = _iter_files(checkpoint_files(checkpoint_dir), device, load_format)
    if quantization is None:
        yield from tensors
    else:
        yield from dequantize_stream(tensors, quantization.weight_block_size, dtype)


def _iter_files(files: list[Path], device: torch.device, load_format: str) -> Iterator[tuple[str, torch.Tensor]]:
    if load_format == "overlap":
        yield from iter_overlapped(files, device)
        return
    target = str(device) if device.type == "cuda" and load_format == "auto" else "cpu"
    for path in files:
        with safe_open(str(path), framework="pt", device=target) as f:
            for name in f.keys():
                yield name, f.get_tensor(name)
