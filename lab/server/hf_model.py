"""The baseline's model: transformers' own model class, holding the same weights as our engine.

Contract: `load_hf_model(engine_args) -> HFModel` (seconds to minutes; torch and transformers
are imported here, never by the HTTP layer).
- A preset (`lab.engine.presets`): the HF config is the preset's dict (plus `hf_overrides`), the
  module is `AutoModelForCausalLM.from_config` on `device` in `dtype`, and its weights are *our
  engine's* seeded dummy weights: `lab.engine.loader.load_model` builds them (same seed, same
  device type -> bit-identical to what `lab serve --engine lab` serves), then
  `copy_engine_weights` writes each one into the HF parameter of the same HF name. So both
  engines serve one model and greedy outputs can be compared token for token.
- A local checkpoint directory: `AutoModelForCausalLM.from_pretrained` (overrides patch the config).
- The tokenizer is the one our engine would use (`lab.engine.tokenizer_loading.load_tokenizer`);
  `max_model_len` follows the engine's rule (the model's context, or a smaller `--max-model-len`);
  EOS is the config's first `eos_token_id`, else the tokenizer's; the module's own generation
  config forgets it, so `generate()` never ends a row by itself (`hf_generate` applies our rules).
Attention is transformers' default (SDPA). Nothing is downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lab.engine.presets import PRESETS, get_preset

if TYPE_CHECKING:
    from lab.engine.args import EngineArgs
    from lab.engine.tokenizer import Tokenizer


@dataclass
class HFModel:
    module: nn.Module  # a transformers *ForCausalLM, eval mode
    tokenizer: Tokenizer
    device: torch.device
    dtype: torch.dtype
    max_model_len: int  # prompt + output tokens
    vocab_size: int
    eos_token_id: int | None


def load_hf_model(args: EngineArgs) -> HFModel:
    from lab.engine.tokenizer_loading import load_tokenizer

    device = args.resolve_device()
    dtype = args.resolve_dtype(device)
    name = str(args.model)
    if name in PRESETS:
        module, checkpoint_dir = _preset_model(name, dtype, device, args.seed, args.hf_overrides), None
    elif Path(name).is_dir():
        module, checkpoint_dir = _checkpoint_model(Path(name), dtype, device, args.hf_overrides), Path(name)
    else:
        raise ValueError(f"model {name!r} is neither a preset ({', '.join(PRESETS)}) nor an existing checkpoint "
                         "directory: the path does not exist")
    tokenizer = load_tokenizer(args.tokenizer, checkpoint_dir)
    config = module.config
    model_len = int(config.max_position_embeddings)
    if args.max_model_len is not None and args.max_model_len > model_len:
        raise ValueError(f"max_model_len={args.max_model_len} exceeds the model's context of {model_len} tokens")
    eos = config.eos_token_id
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    # generate() would otherwise stop a row at EOS on its own (it reads the model's generation
    # config even when given one), against ignore_eos and min_tokens: our stop rules decide instead.
    module.generation_config.eos_token_id = None
    return HFModel(module=module, tokenizer=tokenizer, device=device, dtype=dtype,
                   max_model_len=args.max_model_len or model_len, vocab_size=int(config.vocab_size),
                   eos_token_id=eos if eos is not None else tokenizer.eos_token_id)


def hf_config_for_preset(preset: str, hf_overrides: dict | None = None) -> Any:
    import transformers

    cfg = {**get_preset(preset), **(hf_overrides or {})}
    return transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def _preset_model(preset: str, dtype: torch.dtype, device: torch.device, seed: int,
                  hf_overrides: dict | None) -> nn.Module:
    import transformers

    from lab.engine.loader import load_model

    with torch.device(device):
        hf = transformers.AutoModelForCausalLM.from_config(hf_config_for_preset(preset, hf_overrides), dtype=dtype)
    ours = load_model(preset, dtype, device, seed=seed, hf_overrides=hf_overrides or None).module
    copy_engine_weights(ours, hf)
    del ours  # the engine's copy is only the source of the weights
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return hf.eval()


def _checkpoint_model(path: Path, dtype: torch.dtype, device: torch.device, hf_overrides: dict | None) -> nn.Module:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **(hf_overrides or {}))
    return model.to(device).eval()


@torch.no_grad()
def copy_engine_weights(ours: nn.Module, hf: nn.Module) -> None:
    """Copy our engine module's weights into the transformers module `hf`, by HF name.

    Our model maps every HF checkpoint tensor name to (our parameter, index) (`collect_targets`,
    the map `load_weights` uses); read backwards it gives each HF tensor's value. transformers 5
    keeps a MoE layer's experts stacked in memory (`experts.gate_up_proj` (E, 2I, H), gate rows
    first, and `experts.down_proj` (E, H, I)) where checkpoints name each expert: those two are
    assembled from the per-expert names. Raises ValueError naming any HF tensor left unset or
    mis-shaped, so a silent half-copy cannot happen.
    """
    from lab.engine.models.weights import collect_targets

    params = dict(ours.named_parameters())
    targets = collect_targets(ours)

    def value(hf_name: str) -> torch.Tensor:
        param_name, index = targets[hf_name]
        return params[param_name][index] if index else params[param_name]

    def stacked(prefix: str, parts: tuple[str, ...]) -> torch.Tensor:
        experts = []
        while f"{prefix}.{len(experts)}.{parts[0]}.weight" in targets:
            e = len(experts)
            experts.append(torch.cat([value(f"{prefix}.{e}.{part}.weight") for part in parts]))
        return torch.stack(experts)

    tensors = dict(hf.named_parameters())
    tensors.update((n, b) for n, b in hf.named_buffers() if n.endswith("e_score_correction_bias"))
    problems = []
    for name, dst in tensors.items():
        if name in targets:
            src = value(name)
        elif name.endswith(".experts.gate_up_proj"):
            src = stacked(name.removesuffix(".gate_up_proj"), ("gate_proj", "up_proj"))
        elif name.endswith(".experts.down_proj"):
            src = stacked(name.removesuffix(".down_proj"), ("down_proj",))
        else:
            problems.append(f"{name}: no engine tensor maps to it")
            continue
        if tuple(src.shape) != tuple(dst.shape):
            problems.append(f"{name}: engine {tuple(src.shape)}, transformers {tuple(dst.shape)}")
            continue
        dst.copy_(src)
    if problems:
        raise ValueError("cannot copy the engine's weights into the transformers model: " + "; ".join(problems))
