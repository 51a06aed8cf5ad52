"""8-bit weights as a transform (gpt-fast style): swap a model's Linear layers for FP8 / int8 ones, feed them.

Contract:
- `quantize_linears_(module, fmt, dtype)`: on a model still on the meta device, replaces every `Linear` whose
  weight an FP8 checkpoint stores as fp8 (`fp8.is_block_fp8_weight`: the decoder layers' projections, fused
  qkv and gate_up included, DeepSeek's MLA projections and shared experts) by an `Fp8Linear` or `Int8Linear`
  (`models/quant_linear.py`), except `KEPT_DENSE`. Returns how many it replaced. Not replaced, so held in
  the engine dtype: embeddings, LM head, norms, the MoE router, MoE routed experts (stacked (E, 2I, H)
  tensors read by their own kernels; FP8 rounds them through block fp8 in place: `fp8.fake_quantize_block_fp8_`)
  and MLA's kv_b_proj (the absorbed w_uk / w_uv_t are derived from its dense weight; also rounded).
- `weight_format_of(module)`: the `WeightFormat` its Linear layers are stored in, None for the engine dtype.
- `stored_stream(pairs, module, source_block, dtype, device)`: a checkpoint's `(name, tensor, scale | None)`
  stream (`fp8.pair_fp8_stream`) as the model stores it: a tensor bound for an 8-bit Linear comes out as its
  codes and its scale (`X.weight`, `X.weight_scale_inv` / `X.weight_scale`; `collect_targets` maps both),
  an fp8 tensor bound anywhere else dequantized to `dtype`, the rest unchanged. Quantization runs on `device`.
- `quantized_dummy_(module, name, drawn)`: writes a dense parameter value drawn in the engine dtype (a preset's
  dummy weight) into an 8-bit Linear's codes and scales, each checkpoint part on its own tile grid, so a
  preset with `quantization="fp8"` equals `write_checkpoint(preset, fp8=True)` loaded back.
- `dense_weights(module)`: every parameter by name with 8-bit weights dequantized (float32) and scales left
  out: what the model computes with on the plain path (the fidelity helper compares these).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from lab.engine.fp8 import dequantize_block_fp8, is_block_fp8_weight
from lab.engine.models.layers import Linear
from lab.engine.models.quant_linear import QUANT_LINEARS, Fp8Linear, Int8Linear
from lab.engine.models.weights import collect_targets
from lab.engine.quant_config import WeightFormat

# Linear layers kept in the engine dtype: MLA's process_weights_after_loading reads kv_b_proj.weight as a dense
# matrix to derive the absorbed projections, which decode uses instead of kv_b_proj itself.
KEPT_DENSE = ("self_attn.kv_b_proj",)


def _row_parts(module: nn.Module) -> dict[str, list[int]]:
    """Our parameter name -> the first row of each checkpoint tensor fused into it (fused qkv, gate_up)."""
    starts: dict[str, list[int]] = defaultdict(list)
    for _, (param, index) in collect_targets(module).items():
        starts[param].append(index[0].start if index and isinstance(index[0], slice) else 0)
    return starts


def quantize_linears_(module: nn.Module, fmt: WeightFormat, dtype: torch.dtype) -> int:
    starts = _row_parts(module)
    swaps = []
    for name, mod in module.named_modules():
        if (type(mod) is Linear and is_block_fp8_weight(f"{name}.weight", 2)
                and not name.endswith(KEPT_DENSE)):
            swaps.append((name, mod))
    for name, mod in swaps:
        out_features, in_features = mod.weight.shape
        bias = mod.bias is not None
        if fmt.method == "fp8":
            aligned = all(s % fmt.block[0] == 0 for s in starts.get(f"{name}.weight", [0]))
            new = Fp8Linear(in_features, out_features, bias, fmt.block, fmt.block[0] if aligned else 1, dtype)
        else:
            new = Int8Linear(in_features, out_features, bias, dtype)
        new.fused = mod.fused
        parent_name, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent_name) if parent_name else module, child, new)
    return len(swaps)


def weight_format_of(module: nn.Module) -> WeightFormat | None:
    for mod in module.modules():
        if isinstance(mod, Fp8Linear):
            return WeightFormat("fp8", mod.block)
        if isinstance(mod, Int8Linear):
            return WeightFormat("int8")
    return None


def _quantized_by_hf_name(module: nn.Module) -> dict[str, nn.Module]:
    owners = {f"{prefix}.weight": mod for prefix, mod in module.named_modules() if isinstance(mod, QUANT_LINEARS)}
    return {hf: owners[param] for hf, (param, _) in collect_targets(module).items() if param in owners}


def stored_stream(pairs: Iterable[tuple[str, torch.Tensor, torch.Tensor | None]], module: nn.Module,
                  source_block: tuple[int, int] | None, dtype: torch.dtype,
                  device: torch.device) -> Iterator[tuple[str, torch.Tensor]]:
    owners = _quantized_by_hf_name(module)
    for name, tensor, scale_inv in pairs:
        owner = owners.get(name)
        if owner is None:
            yield name, (tensor if scale_inv is None
                         else dequantize_block_fp8(tensor, scale_inv, source_block, dtype, name))
            continue
        q, s = owner.quantize_part(tensor.to(device), None if scale_inv is None else scale_inv.to(device),
                                   source_block, name)
        yield name, q
        yield name + owner.scale_suffix, s


@torch.no_grad()
def quantized_dummy_(module: nn.Module, name: str, drawn: torch.Tensor) -> None:
    """See the module docstring; `name` is the 8-bit Linear's weight parameter."""
    prefix = name.rpartition(".")[0]
    owner = module.get_submodule(prefix)
    weight, scale = owner.weight, getattr(owner, owner.scale_name)
    parts = [(hf, index) for hf, (param, index) in collect_targets(module).items() if param == name]
    for hf, index in parts:
        q, s = owner.quantize_part(drawn[index] if index else drawn, None, None, hf)
        (weight[index] if index else weight).copy_(q)
        scale_index = owner.scale_index(index)
        (scale[scale_index] if scale_index else scale).copy_(s)


def dense_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    scales = {f"{p}.{m.scale_name}" for p, m in module.named_modules() if isinstance(m, QUANT_LINEARS)}
    owners = {f"{p}.weight": m for p, m in module.named_modules() if isinstance(m, QUANT_LINEARS)}
    out = {}
    for name, param in module.named_parameters():
        if name in scales:
            continue
        out[name] = owners[name].dense_weight(torch.float32) if name in owners else param.detach().float()
    return out
