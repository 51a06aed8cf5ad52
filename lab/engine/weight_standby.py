"""The standby buffer of a hot reload: new weights built beside the live ones, checked, probed, copied in.

Contract:
- `build_standby(source, seed, live, staging_device, hf_overrides)` builds a second model of the live one's
  class from `source` (a preset, with `seed` for its dummy weights, or a checkpoint directory: safetensors,
  sharded or not) on `staging_device` (the live device, or the host: then every tensor is pinned, so the
  copy in is a plain DMA). Its config must equal the live model's field for field (a reload swaps weights,
  not architectures); a mismatch, a missing, extra or mis-shaped checkpoint tensor is a `ReloadError` that
  names it. Presets draw their dummy weights on the live device, tensor by tensor, so a preset reloaded
  through the host equals the same preset loaded fresh on that device. The standby keeps the live engine's
  weight format (`weight_format`: `weight_quant.weight_format_of(live model)`): an engine in the engine dtype
  reads a block-FP8 checkpoint dequantized (`lab.engine.loader.iter_checkpoint`); an engine with 8-bit Linears
  (FP8 or int8, from `quantization` or from an FP8 checkpoint) gets any source quantized the same way
  (`loader.checkpoint_weights`, `loader.init_dummy_weights`, `loader.round_dense_fp8_`), as a fresh engine with
  that format on that source would; the codes and scales are then copied into the live ones like any tensor.
- `tensor_state(module)`: every tensor a forward reads by name: parameters, buffers, and tensors that
  `process_weights_after_loading` derives and keeps as plain attributes (MLA's absorbed `w_uk`, `w_uv_t`).
  CUDA graphs captured on the live model hold these tensors' addresses, which is why a switch copies into
  them rather than rebinding them.
- `check_standby(live_state, standby_state)`: same names, shapes and dtypes, every floating tensor finite
  (one device pass and one sync for all of them); a `ReloadError` names the first offending tensors.
- `probe_standby(module, ...)`: a one-token greedy forward of a short prompt on the standby weights, with a
  private one-block KV cache (the live cache is never touched); `ReloadError` if its logits are not finite.
- `copy_into_live(pairs)`: copies every standby tensor into its live twin in place and waits for the copies;
  returns `(host_ms, copy_ms, pause_ms)`: the host's time to issue them, the device's time to run them (CUDA
  events), and the step loop's stall: their sum on CUDA (an upper bound), the one wall time on a CPU (where
  issuing is doing, and all three are equal).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
from torch import nn

from lab.engine.kv_cache import allocate_kv_cache
from lab.engine.launched_step import NonFiniteLogitsError
from lab.engine.loader import build_model, checkpoint_quantization, checkpoint_weights, init_dummy_weights, round_dense_fp8_
from lab.engine.model_config import ModelConfig
from lab.engine.presets import PRESETS, get_preset
from lab.engine.quant_config import WeightFormat
from lab.engine.sampling_params import SamplingParams
from lab.engine.scheduler_output import ScheduledChunk, SchedulerOutput
from lab.engine.sequence import Sequence

PROBE_PROMPT = (1, 2, 3, 4, 5, 6, 7, 8)  # token ids every vocabulary has; one KV block holds them
MAX_NAMED = 5  # offending tensors named in one error


class ReloadError(ValueError):
    """A reload refused before anything live changed: the message names the tensor, field or limit."""


def source_config(source: str, hf_overrides: dict | None) -> ModelConfig:
    if source in PRESETS:
        return ModelConfig.from_hf_dict({**get_preset(source), **(hf_overrides or {})})
    if Path(source).is_dir():
        return ModelConfig.from_pretrained_dir(Path(source), hf_overrides)
    raise ReloadError(f"source {source!r} is neither a preset ({', '.join(PRESETS)}) nor an existing checkpoint "
                      "directory")


def check_same_architecture(live: ModelConfig, new: ModelConfig) -> None:
    differ = [f"{f.name}: live {getattr(live, f.name)!r}, new {getattr(new, f.name)!r}"
              for f in dataclasses.fields(ModelConfig) if getattr(live, f.name) != getattr(new, f.name)]
    if differ:
        raise ReloadError("the new weights are for another architecture (a reload swaps weights only): "
                          + "; ".join(differ[:MAX_NAMED]))


def build_standby(source: str, seed: int, live_config: ModelConfig, dtype: torch.dtype, live_device: torch.device,
                  staging_device: torch.device, hf_overrides: dict | None, weight_format: WeightFormat | None = None,
                  load_format: str = "auto") -> nn.Module:
    config = source_config(source, hf_overrides)
    check_same_architecture(live_config, config)
    module = build_model(config, dtype, staging_device, weight_format)
    if staging_device.type == "cpu" and live_device.type == "cuda":
        for mod in module.modules():  # pinned: the copy into the live tensors is then one DMA each
            for name, param in list(mod.named_parameters(recurse=False)):
                setattr(mod, name, nn.Parameter(param.data.pin_memory(), requires_grad=False))
    try:
        if source in PRESETS:
            init_dummy_weights(module, seed, draw_on=live_device)
        else:
            flags: list[tuple[str, torch.Tensor]] = []
            tensors = checkpoint_weights(Path(source), module, staging_device,
                                         load_format if staging_device == live_device else "auto", dtype)
            module.load_weights(_finite_flags(tensors, flags))
            _refuse_nonfinite(source, flags)
        stored = None if source in PRESETS else checkpoint_quantization(Path(source))
        round_dense_fp8_(module, weight_format, stored)  # the numbers a fresh engine in this format computes with
    except ValueError as exc:  # the loader names missing, mis-shaped and unexpected tensors
        raise ReloadError(exc if isinstance(exc, ReloadError) else f"checkpoint {source}: {exc}") from None
    if hasattr(module, "process_weights_after_loading"):
        module.process_weights_after_loading()
    return module.eval()


FINITE_CHECKED = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # 8-bit floats have no isfinite


def _finite_flags(tensors, flags: list[tuple[str, torch.Tensor]]):
    """The checkpoint's tensors, passed through; each one's all-finite flag kept on its device (no sync)."""
    for name, tensor in tensors:
        if tensor.dtype in FINITE_CHECKED:
            flags.append((name, torch.isfinite(tensor).all()))
        yield name, tensor


def _refuse_nonfinite(source: str, flags: list[tuple[str, torch.Tensor]]) -> None:
    if not flags:
        return
    finite = torch.stack([flag.to("cpu") for _, flag in flags]).tolist()  # one read for all of them
    bad = [name for (name, _), ok in zip(flags, finite) if not ok]
    if bad:
        raise ReloadError(f"checkpoint {source}: non-finite values (NaN or inf) in {len(bad)} tensor(s): "
                          f"{bad[:MAX_NAMED]}")


def tensor_state(module: nn.Module) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for prefix, mod in module.named_modules():
        dot = f"{prefix}." if prefix else ""
        for name, tensor in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
            state.setdefault(dot + name, tensor)  # a tied weight appears once: copying it twice would be waste
        for name, value in vars(mod).items():
            if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                state.setdefault(dot + name, value)  # derived by process_weights_after_loading
    return state


def check_standby(live: dict[str, torch.Tensor], standby: dict[str, torch.Tensor]) -> None:
    missing, extra = sorted(set(live) - set(standby)), sorted(set(standby) - set(live))
    if missing or extra:
        raise ReloadError(f"tensors differ from the live model: missing {missing[:MAX_NAMED]}, "
                          f"unexpected {extra[:MAX_NAMED]}")
    wrong = [f"{n}: live {tuple(live[n].shape)} {live[n].dtype}, new {tuple(t.shape)} {t.dtype}"
             for n, t in standby.items() if t.shape != live[n].shape or t.dtype != live[n].dtype]
    if wrong:
        raise ReloadError("tensors of another shape or dtype: " + "; ".join(wrong[:MAX_NAMED]))
    floating = [(n, t) for n, t in standby.items() if t.dtype in FINITE_CHECKED and t.numel()]  # not fp8 codes
    if floating:
        finite = torch.stack([torch.isfinite(t).all() for _, t in floating]).tolist()  # one sync for all
        bad = [n for (n, _), ok in zip(floating, finite) if not ok]
        if bad:
            raise ReloadError(f"non-finite values (NaN or inf) in {len(bad)} tensor(s): {bad[:MAX_NAMED]}")


@torch.inference_mode()
def probe_standby(module: nn.Module, dtype: torch.dtype, device: torch.device, block_size: int,
                  attention_backend: str, eos_token_id: int | None) -> int:
    """The greedy token after `PROBE_PROMPT` on the standby weights (a private cache; nothing live is read)."""
    from lab.engine.runner import ModelRunner  # the runner imports this module's caller

    prompt = list(PROBE_PROMPT[: max(1, min(len(PROBE_PROMPT), block_size))])
    caches = allocate_kv_cache(module.kv_cache_spec(dtype), 1, block_size, device)
    runner = ModelRunner(module, caches, block_size, device, eos_token_id, attention_backend)
    seq = Sequence("reload-probe", prompt, SamplingParams(temperature=0.0, max_tokens=1), arrival_time=0.0)
    seq.block_table = [0]
    step = SchedulerOutput([ScheduledChunk(seq, len(prompt))], [], [], len(prompt))
    try:
        return runner.launch(step).tokens()["reload-probe"]
    except NonFiniteLogitsError:
        raise ReloadError("the one-token probe on the new weights gave non-finite logits (NaN or inf)") from None


@torch.no_grad()
def copy_into_live(pairs: list[tuple[torch.Tensor, torch.Tensor]],
                   device: torch.device) -> tuple[float, float, float]:
    live, new = [p[0] for p in pairs], [p[1] for p in pairs]
    start = time.perf_counter()
    if device.type != "cuda":  # issuing the copies is doing them: one wall time is all three
        torch._foreach_copy_(live, new)
        elapsed = 1000.0 * (time.perf_counter() - start)
        return elapsed, elapsed, elapsed
    began, ended = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    began.record()
    torch._foreach_copy_(live, new, non_blocking=True)
    ended.record()
    host_ms = 1000.0 * (time.perf_counter() - start)
    ended.synchronize()  # the next step must see whole weights; its kernels queue behind the copies anyway
    copy_ms = began.elapsed_time(ended)
    # The stall the switch adds: issuing, then the device running the copies (an upper bound: they overlap when
    # the device was still busy with the step before).
    return host_ms, copy_ms, host_ms + copy_ms
