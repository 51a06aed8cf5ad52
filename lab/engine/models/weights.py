"""Copying Hugging Face checkpoint tensors into a model whose layout differs (fused or stacked).

Contract: a model lists every HF tensor name it needs as `targets`: name -> (our parameter name,
index into that parameter), e.g. `...q_proj.weight -> (...qkv_proj.weight, (slice(0, 1024),))`
or `...experts.7.up_proj.weight -> (...experts.w13, (7, slice(I, 2I)))`. `load_into` streams the
(name, tensor) pairs, copies each into its slot (casting to the parameter's dtype) and, after the
last one, raises ValueError listing every missing tensor, every shape mismatch (both shapes) and
every unexpected tensor that `ignorable` does not excuse. `collect_targets` builds the map from
modules that declare `weight_targets(prefix)`; all other parameters keep their HF names. A Linear stored
in 8 bits (`models/quant_linear.py`: it has `scale_name`) gets one more target per weight target: the
checkpoint name of the scale (`X.weight_scale_inv`) -> (its scale parameter, `scale_index(index)`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

Targets = dict[str, tuple[str, tuple]]


def load_into(
    module: nn.Module,
    targets: Targets,
    weights: Iterable[tuple[str, torch.Tensor]],
    ignorable: Callable[[str], bool],
) -> None:
    params = dict(module.named_parameters())
    loaded: set[str] = set()
    misshaped: set[str] = set()
    mismatched: list[str] = []
    unexpected: list[str] = []
    with torch.no_grad():
        for name, tensor in weights:
            target = targets.get(name)
            if target is None:
                if not ignorable(name):
                    unexpected.append(f"{name} {tuple(tensor.shape)}")
                continue
            param_name, index = target
            dst = params[param_name][index] if index else params[param_name]
            if tuple(dst.shape) != tuple(tensor.shape):
                mismatched.append(f"{name}: checkpoint {tuple(tensor.shape)}, model expects {tuple(dst.shape)}")
                misshaped.add(name)
                continue
            dst.copy_(tensor)
            loaded.add(name)
    missing = sorted(set(targets) - loaded - misshaped)
    problems = []
    if missing:
        problems.append(f"missing tensors ({len(missing)}): " + ", ".join(_shorten(missing)))
    if mismatched:
        problems.append(f"tensors with unexpected shapes ({len(mismatched)}): " + "; ".join(_shorten(mismatched)))
    if unexpected:
        problems.append(f"unexpected tensors ({len(unexpected)}): " + ", ".join(_shorten(sorted(unexpected))))
    if problems:
        raise ValueError("checkpoint does not match the model: " + " | ".join(problems))


def _shorten(items: list[str], limit: int = 20) -> list[str]:
    return items if len(items) <= limit else items[:limit] + [f"... and {len(items) - limit} more"]


def collect_targets(model: nn.Module) -> Targets:
    """Targets of a model whose module names are HF's: a module with a `weight_targets(prefix)`
    method maps its own (fused/stacked) parameters; every other parameter keeps its HF name."""
    targets: Targets = {}
    covered: set[str] = set()
    for prefix, mod in model.named_modules():
        if hasattr(mod, "weight_targets"):
            targets.update(mod.weight_targets(prefix))
            covered.update(f"{prefix}.{n}" for n, _ in mod.named_parameters())
    for name, _ in model.named_parameters():
        if name not in covered:
            targets[name] = (name, ())
    return _with_scale_targets(model, targets)


def _with_scale_targets(model: nn.Module, targets: Targets) -> Targets:
    """Each 8-bit weight's scale follows its weight, part by part (fused parameters included)."""
    quantized = {f"{prefix}.weight": (f"{prefix}.{mod.scale_name}", mod)
                 for prefix, mod in model.named_modules() if hasattr(mod, "scale_name")}
    if not quantized:
        return targets
    scales = {scale for scale, _ in quantized.values()}
    out = {hf: t for hf, t in targets.items() if t[0] not in scales}  # scales never load under their own name
    for hf, (param, index) in targets.items():
        if param in quantized:
            scale, mod = quantized[param]
            out[hf + mod.scale_suffix] = (scale, mod.scale_index(index))
    return out
