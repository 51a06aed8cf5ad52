"""`EngineArgs`: every knob of the engine in one frozen record, vLLM's names.

`LLM(model, **kwargs)` and `lab serve` build one of these; the engine splits it into the
scheduler's and the cache's configs. Device and dtype "auto" are resolved here, once.
"""
from __future__ import annotations

MIN_TRITON_BLOCK_SIZE = 16  # the decode kernels' tl.dot over one KV block needs K >= 16

from dataclasses import dataclass, field

import torch

from lab.engine.attention.metadata import ATTENTION_BACKENDS
from lab.engine.config import CacheConfig, SchedulerConfig
from lab.engine.kv_quant import kv_storage_dtype
from lab.engine.loader import LOAD_FORMATS, check_quantization
from lab.engine.models.moe import MOE_BACKENDS
from lab.engine.weight_rebind import REBINDS

_DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class EngineArgs:
    model: str = "tiny"  # a preset name or a local Hugging Face checkpoint directory
    tokenizer: str | None = None  # a directory with tokenizer.json; default: the model's own
    dtype: str = "auto"  # "auto" = bfloat16 on CUDA, float32 on CPU
    device: str = "auto"  # "auto" = cuda when available, else cpu
    seed: int = 0  # dummy-weight init and unseeded sampling
    max_model_len: int | None = None  # context length; default and upper bound: the model's
    block_size: int = 16
    gpu_memory_utilization: float = 0.90
    num_gpu_blocks: int | None = None  # fixed KV block count (overrides memory-based sizing)
    cpu_kv_cache_space_gib: float = 1.0  # KV cache size on CPU when num_gpu_blocks is unset
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    enable_chunked_prefill: bool = True
    scheduling_policy: str = "fcfs"  # "fcfs" or "priority"
    hf_overrides: dict = field(default_factory=dict)  # config.json fields to override (e.g. num_hidden_layers)
    quantization: str | None = None  # "fp8": Linear weights stored in DeepSeek's 128x128 block fp8 (FP8 GEMMs on Ada/Hopper, dequantized elsewhere; lab.engine.weight_quant); "int8": weight-only W8A16; fp8 checkpoints load in fp8 without it
    kv_cache_dtype: str = "auto"  # "auto" (the model dtype), "fp8" / "fp8_e4m3" (e4m3 codes) or "int8", with per-(token, KV head) scales (lab.engine.kv_quant): about twice the KV blocks
    load_format: str = "auto"  # how checkpoint bytes reach the device: "auto" (safetensors opened on it), "cpu" (read to host, then copy: the plain path), "overlap" (reader thread + pinned buffers + side-stream copies)
    # Hot-path optimizations, each with its plain path beside it (the correctness reference):
    enforce_eager: bool = False  # True: no CUDA graphs at all (CPU is always eager)
    mixed_cuda_graphs: bool = True  # also graph steps with prefill chunks (<= 1024 tokens), where the model allows (GQA)
    cuda_graph_sizes: tuple[int, ...] | None = None  # decode batch sizes to capture (vLLM's name); None: 1, 2, 4, 8, then every 16 up to max_num_seqs; larger batches than the largest run eager
    attention_backend: str = "auto"  # "reference" (per-sequence loops), "torch" (vectorized), "triton"; auto: triton on CUDA, torch on CPU
    fused_ops: bool = True  # Triton RMSNorm / RoPE / SiLU-mul on CUDA (False: the torch ops; CPU always torch)
    async_scheduling: bool | None = None  # schedule step N+1 while step N runs (None: on for CUDA; False: the plain loop)
    moe_backend: str = "auto"  # "loop" (per-expert GEMMs, host sync), "grouped" (torch._grouped_mm) or "triton" (fused decode kernels, grouped/loop for large steps); auto: triton on CUDA
    tensor_parallel_size: int = 1  # ranks (processes, one GPU each) the model is split over (lab.engine.parallel): heads, MLP widths, experts and vocabulary; 1: the plain single-device path
    reload_rebind: str = "auto"  # a hot reload's switch: "pointer" (swap to the standby module and a graph set captured over it), "copy" (the standby copied into the live tensors: the plain path), "auto" (pointer where it fits, else copy; lab.engine.weight_rebind)

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {self.max_model_len}")
        if self.cpu_kv_cache_space_gib <= 0:
            raise ValueError(f"cpu_kv_cache_space_gib must be > 0, got {self.cpu_kv_cache_space_gib}")
        if self.attention_backend not in ("auto", *ATTENTION_BACKENDS):
            raise ValueError(f"attention_backend must be 'auto' or one of {ATTENTION_BACKENDS}, got {self.attention_backend!r}")
        if self.moe_backend not in ("auto", *MOE_BACKENDS):
            raise ValueError(f"moe_backend must be 'auto' or one of {MOE_BACKENDS}, got {self.moe_backend!r}")
        if self.reload_rebind not in REBINDS:
            raise ValueError(f"reload_rebind must be one of {REBINDS}, got {self.reload_rebind!r}")
        if self.load_format not in LOAD_FORMATS:
            raise ValueError(f"load_format must be one of {LOAD_FORMATS}, got {self.load_format!r}")
        check_quantization(self.quantization)
        self._check_tensor_parallel()
        kv_storage_dtype(self.kv_cache_dtype)  # ValueError naming the allowed values
        self._check_cuda_graph_sizes()
        # Build the sub-configs now so their validation errors surface at construction.
        self.scheduler_config()
        self.cache_config()

    def _check_cuda_graph_sizes(self) -> None:
        sizes = self.cuda_graph_sizes
        if sizes is None:
            return
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__") or not list(sizes):
            raise ValueError(f"cuda_graph_sizes must be a non-empty list of batch sizes, got {sizes!r}")
        bad = [s for s in sizes if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= self.max_num_seqs]
        if bad:
            raise ValueError(f"cuda_graph_sizes must be integers in [1, max_num_seqs={self.max_num_seqs}], got {bad}")

    def _check_tensor_parallel(self) -> None:
        """What can be refused without the model's shape (parallel/plan.py checks the shape when the engine starts)."""
        size = self.tensor_parallel_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"tensor_parallel_size must be an integer >= 1, got {size!r}")
        if size > 1 and self.quantization is not None:
            raise ValueError(f"quantization={self.quantization!r} is not supported with tensor_parallel_size > 1 yet")

    def scheduler_config(self) -> SchedulerConfig:
        return SchedulerConfig(
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            enable_chunked_prefill=self.enable_chunked_prefill,
            policy=self.scheduling_policy,
        )

    def cache_config(self) -> CacheConfig:
        return CacheConfig(
            block_size=self.block_size,
            gpu_memory_utilization=self.gpu_memory_utilization,
            num_gpu_blocks=self.num_gpu_blocks,
        )

    def resolve_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' was requested but no CUDA device is available")
        return device

    def resolve_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return _DTYPES[self.dtype]

    def resolve_attention_backend(self, device: torch.device) -> str:
        if self.attention_backend != "auto":
            if self.attention_backend == "triton" and device.type != "cuda":
                raise ValueError("attention_backend='triton' needs a CUDA device")
            if self.attention_backend == "triton" and self.block_size < MIN_TRITON_BLOCK_SIZE:
                raise ValueError(
                    f"attention_backend='triton' needs block_size >= {MIN_TRITON_BLOCK_SIZE} (tensor-core tiles), "
                    f"got {self.block_size}"
                )
            return self.attention_backend
        from lab.engine.kernels import kernels_available

        usable = kernels_available(device) and self.block_size >= MIN_TRITON_BLOCK_SIZE
        return "triton" if usable else "torch"

    def resolve_moe_backend(self, device: torch.device) -> str:
        if self.moe_backend != "auto":
            if self.moe_backend == "triton" and device.type != "cuda":
                raise ValueError("moe_backend='triton' needs a CUDA device")
            return self.moe_backend
        from lab.engine.kernels import kernels_available

        return "triton" if kernels_available(device) else "loop"

    def use_fused_ops(self, device: torch.device) -> bool:
        from lab.engine.kernels import kernels_available

        return self.fused_ops and kernels_available(device)

    def use_async_scheduling(self, device: torch.device) -> bool:
        return self.async_scheduling if self.async_scheduling is not None else device.type == "cuda"

    def use_cuda_graphs(self, device: torch.device) -> bool:
        """Graphs need CUDA, the Triton kernels (padding-aware cache writes) and a sync-free MoE."""
        if self.enforce_eager or device.type != "cuda":
            return False
        return self.resolve_attention_backend(device) == "triton" and self.resolve_moe_backend(device) in ("grouped", "triton")
