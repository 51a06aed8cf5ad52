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
  - 8-bit weights (`quant_config.weight_format_for(quantization, stored)`): "fp8" (vLLM's `--quantization
    fp8`; DeepSeek's 128x128 block-scaled e4m3) or "int8" (weight-only, per output channel). The model's
    Linear layers are swapped for 8-bit ones on the meta device (`weight_quant.quantize_linears_`), so their
    weights are materialized in 8 bits: weight memory and bytes read per step really drop. A block-FP8
    checkpoint (DeepSeek-V3/R1: config.json `quantization_config`, quant_method "fp8") loads into FP8 storage
    with or without `quantization="fp8"`: its fp8 bytes and `weight_scale_inv` are copied as they are; bf16
    weights (checkpoint or preset dummy weights, drawn in `dtype` tensor by tensor) are quantized as they load,
    each checkpoint tensor on its own tile grid. What stays in `dtype` under fp8 (MoE routed experts, MLA's
    kv_b_proj) is rounded through block fp8 in place (`fake_quantize_block_fp8_`) when the source was not fp8
    already, so every weight an FP8 checkpoint would store as fp8 has FP8's numbers. Under "int8" those stay
    unrounded; an fp8 checkpoint is dequantized and re-quantized to int8.
    Without a quantization and with a bf16 checkpoint nothing changes. `iter_checkpoint` still gives an fp8
    checkpoint's tensors dequantized (`lab.engine.fp8.dequantize_stream`): the stream a bf16 engine reads, so a
    hot reload may swap a bf16 checkpoint for an fp8 one of the same model and back (`quantization_config` is
    kept out of `ModelConfig`). A hot reload keeps the live engine's weight format (`weight_standby`).
  `LoadedModel.quantization` says which block-FP8 config the weights went through (None for none or int8);
  `LoadedModel.weight_format` how the Linear weights are stored (None: in `dtype`).
`tp` (a `parallel.state.TensorParallel`, None for one device) builds rank tp.rank's shard (`parallel/shard.py`)
and loads only its slice of each tensor: a checkpoint's tensors, or a preset's dummy weights drawn whole as TP=1
draws them (`dummy_checkpoint`), so every tensor_parallel_size serves the same model. 8-bit weights are refused.
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
dequantization happens inside the stream, so it counts as read; quantizing on load counts as transfer), and
weight_postprocess (which includes the rounding of what fp8 keeps in `dtype`).
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

from lab.engine.fp8 import (
    BlockFP8Config, dequantize_stream, fake_quantize_block_fp8_, pair_fp8_stream, parse_quantization_config,
)
from lab.engine.model_config import ModelConfig
from lab.engine.models import get_model_class
from lab.engine.models.weights import collect_targets
from lab.engine.presets import PRESETS, get_preset
from lab.engine.quant_config import WeightFormat, weight_format_for
from lab.engine.safetensors_stream import iter_overlapped
from lab.engine.startup import StartupPhases
from lab.engine.weight_quant import quantize_linears_, quantized_dummy_, stored_stream, weight_format_of

DUMMY_STD = 0.02  # std of dummy matrices, as HF's initializer_range
LOAD_FORMATS = ("auto", "cpu", "overlap")  # how checkpoint bytes reach the device (module docstring)
QUANTIZATIONS = ("fp8", "int8")  # weight quantizations applied on load (module docstring)


@dataclass
class LoadedModel:
    module: nn.Module
    config: ModelConfig
    checkpoint_dir: Path | None
    preset: str | None
    quantization: BlockFP8Config | None = None  # the block fp8 the weights went through (checkpoint or on load)
    weight_format: WeightFormat | None = None  # how the Linear weights are stored (None: the engine dtype)


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
    tp=None,
) -> LoadedModel:
    device = torch.device(device)
    _check_load_format(load_format)
    check_quantization(quantization)
    if tp is not None and quantization is not None:
        raise ValueError(f"quantization={quantization!r} is not supported with tensor parallelism yet: a block-fp8 "
                         "or int8 weight would have to be split on its scale tiles")
    phases = phases if phases is not None else StartupPhases()
    name = str(model)
    if name in PRESETS:
        with phases.phase("config"):
            config = ModelConfig.from_hf_dict({**get_preset(name), **(hf_overrides or {})})
            stored, fmt = None, weight_format_for(quantization, None)
        with phases.phase("model_build"):
            module = build_model(config, dtype, device, fmt, tp)
        with phases.phase("weight_init"):
            if tp is None:
                init_dummy_weights(module, seed)
            else:  # the TP=1 model's tensors, drawn whole, each rank keeping its slice
                module.load_weights(module.shard_plan.stream(dummy_checkpoint(config, dtype, device, seed)))
        checkpoint_dir, preset = None, name
    elif Path(name).is_dir():
        checkpoint_dir, preset = Path(name), None
        with phases.phase("config"):
            config = ModelConfig.from_pretrained_dir(checkpoint_dir, hf_overrides)
            stored = checkpoint_quantization(checkpoint_dir)
            fmt = weight_format_for(quantization, stored)
            if tp is not None and fmt is not None:
                raise ValueError(f"{checkpoint_dir} stores 8-bit weights, which tensor parallelism does not load yet")
        with phases.phase("model_build"):
            module = build_model(config, dtype, device, fmt, tp)
        with phases.phase("weight_transfer") as phase:  # what is left of loading once the reads are carved out
            weights = checkpoint_weights(checkpoint_dir, module, device, load_format, dtype,
                                         carve=lambda t: phase.carve("weight_read", t))
            module.load_weights(weights if tp is None else module.shard_plan.stream(weights))
    else:
        raise ValueError(
            f"model {name!r} is neither a preset ({', '.join(PRESETS)}) nor an existing checkpoint "
            "directory: the path does not exist"
        )
    with phases.phase("weight_postprocess"):
        round_dense_fp8_(module, fmt, stored)
        if hasattr(module, "process_weights_after_loading"):
            module.process_weights_after_loading()
    went_through = BlockFP8Config(fmt.block) if fmt is not None and fmt.method == "fp8" else None
    return LoadedModel(module.eval(), config, checkpoint_dir, preset, went_through, fmt)


def model_config(model: str | Path, hf_overrides: dict | None = None) -> ModelConfig:
    """The `ModelConfig` `load_model(model, ...)` would build (no weights touched); ValueError as it would raise."""
    name = str(model)
    if name in PRESETS:
        return ModelConfig.from_hf_dict({**get_preset(name), **(hf_overrides or {})})
    if Path(name).is_dir():
        return ModelConfig.from_pretrained_dir(Path(name), hf_overrides)
    raise ValueError(f"model {name!r} is neither a preset ({', '.join(PRESETS)}) nor an existing checkpoint "
                     "directory: the path does not exist")


def round_dense_fp8_(module: nn.Module, fmt: WeightFormat | None, stored: BlockFP8Config | None) -> None:
    """FP8 storage from a source that was not fp8: what stays in the engine dtype gets FP8's numbers too."""
    if fmt is not None and fmt.method == "fp8" and stored is None:
        fake_quantize_block_fp8_(module, fmt.block)


def checkpoint_weights(checkpoint_dir: Path, module: nn.Module, device: torch.device, load_format: str,
                       dtype: torch.dtype, carve=lambda tensors: tensors) -> Iterator[tuple[str, torch.Tensor]]:
    """The checkpoint's (name, tensor) stream as `module` stores it: dequantized for a model in `dtype`
    (`iter_checkpoint`), 8-bit codes and scales for one with 8-bit Linears (`weight_quant.stored_stream`).
    `carve` wraps what counts as reading (the loader's weight_read phase): the dequantized stream, or the raw
    file reads before quantization."""
    if weight_format_of(module) is None:
        return carve(iter_checkpoint(checkpoint_dir, device, load_format=load_format, dtype=dtype))
    _check_load_format(load_format)
    stored = checkpoint_quantization(checkpoint_dir)
    pairs = pair_fp8_stream(carve(_iter_files(checkpoint_files(checkpoint_dir), device, load_format)))
    return stored_stream(pairs, module, None if stored is None else stored.weight_block_size, dtype, device)


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


def build_model(config: ModelConfig, dtype: torch.dtype, device: torch.device,
                weight_format: WeightFormat | None = None, tp=None) -> nn.Module:
    """The model with uninitialized parameters on `device`: constructed on meta, its Linear layers swapped for
    8-bit ones when `weight_format` says so (`weight_quant`), or rewritten into rank `tp.rank`'s shard when `tp`
    (a `parallel.state.TensorParallel`) is given (`parallel.shard.shard_model_`), then materialized."""
    with torch.device("meta"):
        module = get_model_class(config)(config)
        if weight_format is not None:
            quantize_linears_(module, weight_format, dtype)
        if tp is not None:
            from lab.engine.parallel.shard import shard_model_

            shard_model_(module, tp)
    for mod in module.modules():
        keep_fp32 = getattr(mod, "fp32_params", ())
        own = getattr(mod, "param_dtypes", {})  # 8-bit codes keep their dtype
        for pname, param in list(mod.named_parameters(recurse=False)):
            dt = own.get(pname, torch.float32 if pname in keep_fp32 else dtype)
            setattr(mod, pname, nn.Parameter(torch.empty(param.shape, dtype=dt, device=device), requires_grad=False))
    # buffers (rotary inverse frequencies) were built on CPU in float32; move them without casting
    return module.to(device)


def _param_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


@torch.no_grad()
def init_dummy_weights(module: nn.Module, seed: int, std: float = DUMMY_STD,
                       draw_on: torch.device | None = None) -> None:
    """Every parameter's dummy value, drawn on `draw_on` (default: where it lives) and copied in. An 8-bit
    Linear's weight is drawn in its engine dtype, as the unquantized model's, then quantized (`quantized_dummy_`);
    its scales are written with it."""
    quantized = {f"{p}.weight": m for p, m in module.named_modules() if hasattr(m, "scale_name")}
    scales = {f"{p}.{m.scale_name}" for p, m in module.named_modules() if hasattr(m, "scale_name")}
    for name, param in module.named_parameters():
        if name in scales:
            continue
        device = draw_on or param.device
        if name in quantized:
            drawn = torch.empty(param.shape, dtype=quantized[name].compute_dtype, device=device)
            fill_dummy(name, drawn, seed, std)
            quantized_dummy_(module, name, drawn)  # quantized where drawn; the codes are copied in
        elif device == param.device:
            fill_dummy(name, param, seed, std)
        else:
            drawn = torch.empty(param.shape, dtype=param.dtype, device=device)
            fill_dummy(name, drawn, seed, std)
            param.copy_(drawn)


@torch.no_grad()
def dummy_checkpoint(config: ModelConfig, dtype: torch.dtype, device: torch.device,
                     seed: int) -> Iterator[tuple[str, torch.Tensor]]:
    """The preset's dummy weights as a checkpoint stream (HF name, full tensor): each parameter of the unsharded
    model drawn whole as `init_dummy_weights` draws it (same seed, name, shape, dtype, device type: same values),
    then cut into the HF tensors its targets name. A tensor-parallel rank narrows them to its slice
    (`ShardPlan.stream`), so TP=N and TP=1 serve the same model. Peak memory: one full parameter at a time."""
    full = build_model(config, dtype, torch.device("meta"))
    parts: dict[str, list[tuple[str, tuple]]] = {}
    for hf_name, (param_name, index) in collect_targets(full).items():
        parts.setdefault(param_name, []).append((hf_name, index))
    for name, param in full.named_parameters():
        drawn = torch.empty(param.shape, dtype=param.dtype, device=device)
        fill_dummy(name, drawn, seed)
        for hf_name, index in parts[name]:
            yield hf_name, drawn[index] if index else drawn


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
