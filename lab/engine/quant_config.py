"""`BlockFP8Config`: a checkpoint's block-FP8 declaration, parsed from config.json; torch-free.

Contract: `parse_quantization_config(hf_dict)` reads `quantization_config` as DeepSeek-V3/R1 write it,
{"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]},
and returns a `BlockFP8Config`, or None when the dict has none. Any other method, format, or fp8 without
`weight_block_size` (per-tensor fp8) is a ValueError naming the field. The tensors' layout and the
arithmetic live in `lab.engine.fp8`.
`WeightFormat` says how an engine stores its Linear weights: "fp8" (block-scaled e4m3) or "int8" (per-channel
W8A16); `weight_format_for(quantization, stored)` picks it from the user's `quantization` and the checkpoint's
own declaration: an FP8 checkpoint stays FP8 (its block) unless int8 is asked for; nothing asked and nothing
stored is None (the engine dtype).
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


@dataclass(frozen=True)
class WeightFormat:
    """How the quantized Linear layers hold their weights (`lab.engine.weight_quant`)."""

    method: str  # "fp8" | "int8"
    block: tuple[int, int] = DEFAULT_BLOCK  # fp8: (rows, columns) per scale; int8 ignores it (one scale per row)

    def __post_init__(self) -> None:
        if self.method not in WEIGHT_METHODS:
            raise ValueError(f"weight format must be one of {WEIGHT_METHODS}, got {self.method!r}")
        check_block(self.block, "weight format block")


WEIGHT_METHODS = ("fp8", "int8")


def weight_format_for(quantization: str | None, stored: BlockFP8Config | None) -> WeightFormat | None:
    """The storage an engine uses for `quantization` (None, "fp8", "int8") on a checkpoint declaring `stored`."""
    if quantization == "int8":
        return WeightFormat("int8")
    if quantization not in (None, "fp8"):
        raise ValueError(f"quantization must be None or one of {WEIGHT_METHODS}, got {quantization!r}")
    if stored is not None:
        return WeightFormat("fp8", stored.weight_block_size)
    return WeightFormat("fp8") if quantization == "fp8" else None


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


