"""`BlockFP8Config`: a checkpoint's block-FP8 declaration, parsed from config.json; torch-free.

Contract: `parse_quantization_config(hf_dict)` reads `quantization_config` as DeepSeek-V3/R1 write it,
{"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]},
and returns a `BlockFP8Config`, or None when the dict has none. Any other method, format, or fp8 without
`weight_block_size` (per-tensor fp8) is a ValueError naming the field. The tensors' layout and the
arithmetic live in `lab.engine.fp8`.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BLOCK = (128, 128)  # DeepSeek-V3's weight_block_size: (output rows, input columns) per scale


@dataclass(frozen=True)
class BlockFP8Config:
    """A checkpoint's block-FP8 declaration (config.json `quantization_config`)."""

    weight_block_size: tuple[int, int] = DEFAULT_BLOCK
    fmt: str = "e4m3"
    activation_scheme: str = "dynamic"  # activations quantized per token-tile at run time (fast path only)

    def to_hf_dict(self) -> dict:
        return {"quant_method": "fp8", "fmt": self.fmt, "activation_scheme": self.activation_scheme,
                "weight_block_size": list(self.weight_block_size)}


def parse_quantization_config(d: dict) -> BlockFP8Config | None:
    """The block-FP8 config of an HF config dict, None without one; ValueError for what we cannot load."""
    q = d.get("quantization_config")
    if not q:
        return None
    if not isinstance(q, dict):
        raise ValueError(f"quantization_config must be an object, got {q!r}")
    method = q.get("quant_method")
    if method != "fp8":
        raise ValueError(f"quantization_config.quant_method={method!r} is not supported: only DeepSeek's block "
                         "'fp8' is (or load a bf16/fp16/fp32 checkpoint)")
    fmt = q.get("fmt", "e4m3")
    if fmt != "e4m3":
        raise ValueError(f"quantization_config.fmt={fmt!r} is not supported: only 'e4m3' is")
    block = q.get("weight_block_size")
    if block is None:
        raise ValueError("quantization_config has no weight_block_size: only block-wise fp8 (DeepSeek's "
                         "[128, 128]) is supported, not per-tensor fp8")
    return BlockFP8Config(check_block(block, "quantization_config.weight_block_size"), fmt,
                          q.get("activation_scheme", "dynamic"))


def check_block(block, what: str = "block") -> tuple[int, int]:
    if (not isinstance(block, (list, tuple)) or len(block) != 2
            or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in block)):
        raise ValueError(f"{what} must be two positive integers, got {block!r}")
    return int(block[0]), int(block[1])


