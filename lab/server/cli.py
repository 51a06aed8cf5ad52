"""`lab serve`: one OpenAI-compatible engine replica (argparse glue only; see `runner.py`).

Engine flags keep vLLM's names and map one to one onto `EngineArgs` fields; a flag left out
keeps `EngineArgs`'s default, so defaults live in one place. Bad values fail before the socket
is bound (exit 2, naming the flag's problem).

    lab serve --model tiny --port 8000 --num-gpu-blocks 256 --scheduling-policy priority
    lab serve --engine hf --hf-batch-size 8 --model tiny    # the transformers generate() baseline
    lab serve --engine hf-cb --model tiny                   # transformers' continuous batching
    lab serve --engine-core thread --model tiny             # step loop on a thread of the HTTP process

`--engine-core process` (the default, as in vLLM V1) runs the engine's step loop in its own
process, so the HTTP/SSE work of many streams does not hold the GIL the steps need; `thread` runs
it on a thread of the server process (the plain path and the reference).

`--admin-key-hash sha256:<hex>` adds `/admin/reload` (`reload.py`: hot reload of the weights while serving);
`--enable-fault-injection` with it adds `/admin/faults` (`faults.py`: CUDA OOM, a
hung step, a slow step, NaN weights, armed in the engine core) for chaos drills; off by default, and
without it the routes do not exist. The hash is what `lab gateway hash-key` prints for the admin key.

`--tensor-parallel-size N` splits the model over N GPUs (`lab.engine.parallel`): the engine core is rank 0 and
starts one worker process per other rank; CPU runs use gloo (a correctness check, not a speed-up).

`--emulate-mig PROFILE` (MIG off, CUDA only): the engine core holds itself to the profile's SMs through a CUDA
green context (or, with `--emulate-mig-with mps`, as an MPS client with the profile's share of the SMs) and sizes
its memory as the profile's share; see `lab.gpu.mig_emulation` for what that cannot show.

`--engine hf` serves the same model (same weights for a preset) with transformers' own model
class and `generate()`, FCFS in static batches; the paging and scheduling flags of our engine
mean nothing there and are refused (`--engine-core` too), as `--hf-batch-size` is with `--engine lab`.
`--engine hf-cb` serves it with transformers' continuous-batching manager (the native deployment:
paged KV cache, continuous batching), sized by its own `--hf-cb-*` flags; the same flags are refused.
"""
from __future__ import annotations

import argparse
import json

from lab.errors import LabError
from lab.gpu.mig_emulation import MECHANISMS as MIG_EMULATIONS
from lab.server.hf_cb_config import HFCBConfig
from lab.server.limits import DEFAULT_MAX_REQUEST_BYTES, ENGINE_ITERATION_TIMEOUT_S

# flag dest -> EngineArgs field (the same name: vLLM's), passed only when given
ENGINE_FLAGS = ("model", "tokenizer", "dtype", "device", "seed", "max_model_len", "block_size",
                "gpu_memory_utilization", "num_gpu_blocks", "max_num_seqs", "max_num_batched_tokens",
                "enable_chunked_prefill", "scheduling_policy", "hf_overrides", "load_format", "cuda_graph_sizes",
                "enforce_eager", "quantization", "kv_cache_dtype", "tensor_parallel_size", "reload_rebind")
# EngineArgs fields that only our engine has (paged KV cache, continuous batching, scheduler, its loader, graphs)
LAB_ONLY_FLAGS = ("block_size", "gpu_memory_utilization", "num_gpu_blocks", "max_num_seqs",
                  "max_num_batched_tokens", "enable_chunked_prefill", "scheduling_policy", "load_format",
                  "cuda_graph_sizes", "enforce_eager", "quantization", "kv_cache_dtype", "tensor_parallel_size", "reload_rebind")
ENGINE_CORES = ("process", "thread")  # --engine-core choices; the first is the default (runner.ENGINE_CORES)
ENGINES = ("lab", "hf", "hf-cb")  # --engine choices (runner.ENGINES)
# --engine hf-cb's flags: (flag, HFCBConfig field, help), dest hf_cb_<field>; each is one of transformers'
# ContinuousBatchingConfig fields
HF_CB_FLAGS = (
    ("--hf-cb-max-batch-tokens", "max_batch_tokens", "token budget of one step, prompt and decode tokens together "
     "(max_batch_tokens)"),
    ("--hf-cb-num-blocks", "num_blocks", "KV cache blocks (num_blocks)"),
    ("--hf-cb-block-size", "block_size", "tokens per KV block (page_size; block_size before transformers 5.25; "
     "transformers' default 256)"),
    ("--hf-cb-max-requests-per-batch", "max_requests_per_batch", "most requests in one step "
     "(max_requests_per_batch; transformers' default 1024)"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="start one OpenAI-compatible engine replica",
        description="Serve a model over HTTP: /v1/completions, /v1/chat/completions, /v1/models, "
        "/health, /ready, /metrics. The socket is bound at once; /ready answers 200 once the model "
        "is loaded. SIGTERM drains in-flight requests, then exits 0.",
    )
    parser.add_argument("--model", default="tiny", help="preset name or local Hugging Face checkpoint directory")
    parser.add_argument("--engine", choices=ENGINES, default="lab",
                        help="lab: this project's engine (paged KV cache, continuous batching; the default); "
                        "hf-cb: the native deployment, transformers' continuous batching manager (generate_batch, "
                        "what `transformers serve` runs; greedy requests only); "
                        "hf: the floor, transformers' model class and generate(), FCFS in static batches, no paging "
                        "(both hf engines: the same weights for a preset)")
    parser.add_argument("--hf-batch-size", type=int,
                        help="--engine hf only: requests per static generate() batch (default 1: one at a time)")
    hf_cb = parser.add_argument_group("--engine hf-cb (transformers' ContinuousBatchingConfig; left out: "
                                      "transformers' default, sized from free memory)")
    for flag, field, text in HF_CB_FLAGS:
        hf_cb.add_argument(flag, type=int, dest=f"hf_cb_{field}", metavar="N", help=text)
    parser.add_argument("--engine-core", choices=ENGINE_CORES,
                        help="--engine lab only: where the step loop runs. process (the default, as vLLM V1): "
                        "its own process, so HTTP/SSE work does not share the GIL with the steps; "
                        "thread: a thread of the server process (the plain path)")
    parser.add_argument("--emulate-mig", metavar="PROFILE",
                        help="where MIG is off: hold the replica to a MIG profile's SMs (a CUDA green context in the "
                        "engine core) and memory share (gpu_memory_utilization = memory slices / 8), e.g. 1g.10gb or "
                        "the shorthand 1g; CUDA only, --engine lab with its engine core process. Records say "
                        "'emulated <profile>'. Emulation shares L2 and memory bandwidth, which real MIG splits "
                        "(lab.gpu.mig_emulation)")
    parser.add_argument("--emulate-mig-with", choices=MIG_EMULATIONS, default=MIG_EMULATIONS[0],
                        help="how --emulate-mig holds the SMs: green-context (the default: one thread of the engine "
                        "core) or mps (the whole process is an MPS client with the profile's share of the SMs; needs "
                        "a running MPS daemon named by CUDA_MPS_PIPE_DIRECTORY, lab.gpu.mps; hot reload works)")
    parser.add_argument("--served-model-name", help="the name clients pass as `model` (default: --model)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--drain-timeout-s", type=float, default=30.0,
                        help="on SIGTERM, how long in-flight requests may run before they are aborted")
    parser.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                        help=f"largest request body accepted; larger ones get a 413 naming the limit "
                        f"(default {DEFAULT_MAX_REQUEST_BYTES}, 8 MiB)")
    parser.add_argument("--engine-iteration-timeout-s", type=float,
                        help="--engine lab only: how long the engine's step loop may stay silent (a hung step, "
                        "a stopped core process) before /health, /ready and new requests answer 503 "
                        f"engine_unresponsive (default {ENGINE_ITERATION_TIMEOUT_S:g}; vLLM's "
                        "VLLM_ENGINE_ITERATION_TIMEOUT_S)")
    engine = parser.add_argument_group("engine (vLLM's flag names)")
    engine.add_argument("--tokenizer", help="directory with tokenizer.json (default: the model's own)")
    engine.add_argument("--dtype", help="auto, float32, float16, bfloat16")
    engine.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    engine.add_argument("--seed", type=int, help="dummy-weight init and unseeded sampling")
    engine.add_argument("--max-model-len", type=int, help="context length (default: the model's)")
    engine.add_argument("--block-size", type=int, help="tokens per KV block")
    engine.add_argument("--gpu-memory-utilization", type=float, help="fraction of GPU memory for the engine")
    engine.add_argument("--num-gpu-blocks", "--num-gpu-blocks-override", type=int, dest="num_gpu_blocks",
                        help="fixed number of KV blocks (overrides memory-based sizing)")
    engine.add_argument("--max-num-seqs", type=int, help="most requests in one batch")
    engine.add_argument("--max-num-batched-tokens", type=int, help="token budget of one step")
    engine.add_argument("--enable-chunked-prefill", action=argparse.BooleanOptionalAction, default=None,
                        help="split long prompts across steps")
    engine.add_argument("--scheduling-policy", choices=("fcfs", "priority"),
                        help="fcfs (the plain path) or priority (the request's `priority` field)")
    engine.add_argument("--hf-overrides", type=_json_object,
                        help='JSON config overrides, e.g. {"num_hidden_layers": 2}')
    engine.add_argument("--load-format", choices=("auto", "cpu", "overlap"),
                        help="how checkpoint bytes reach the device: auto (safetensors opened on it), cpu (read to "
                        "host, then copy), overlap (a reader thread and pinned buffers beside side-stream copies)")
    engine.add_argument("--quantization", choices=("fp8", "int8"),
                        help="fp8: Linear weights stored in DeepSeek's 128x128 block fp8 (FP8 GEMMs on Ada/Hopper, "
                        "dequantized plain path elsewhere); int8: weight-only per-channel int8 (W8A16 decode GEMV); "
                        "fp8 checkpoints load in fp8 without it")
    engine.add_argument("--kv-cache-dtype", choices=("auto", "fp8", "fp8_e4m3", "int8"),  # lab.engine.kv_quant.KV_CACHE_DTYPES
                        help="auto (the model dtype), fp8 / fp8_e4m3 (e4m3 codes) or int8: an 8-bit KV cache with "
                        "per-token scales, about twice the KV blocks for the same memory")
    engine.add_argument("--cuda-graph-sizes", type=int, nargs="+", metavar="N",
                        help="decode batch sizes to capture as CUDA graphs (default: 1 2 4 8, then every 16)")
    engine.add_argument("--enforce-eager", action="store_true", default=None,
                        help="no CUDA graphs at all: every step eager (the plain path; a CPU is always eager)")
    engine.add_argument("--tensor-parallel-size", "-tp", type=int, metavar="N",
                        help="split the model over N GPUs, one worker process per extra rank (lab.engine.parallel; "
                        "default 1)")
    engine.add_argument("--reload-rebind", choices=("auto", "pointer", "copy"),  # lab.engine.weight_rebind.REBINDS
                        help="a hot reload's switch: pointer (the engine swaps to the new weights and CUDA graphs "
                        "captured over them in the background), copy (the new weights copied into the live ones: "
                        "a pause that grows with the weights; the plain path), auto (pointer where memory allows; "
                        "the default)")
    faults = parser.add_argument_group("fault injection (chaos drills; off by default)")
    faults.add_argument("--enable-fault-injection", action="store_true",
                        help="add POST/GET/DELETE /admin/faults: CUDA out-of-memory, a hung step, a slow step, NaN "
                        "weights, armed in the engine core (needs --admin-key-hash and the engine core process)")
    faults.add_argument("--admin-key-hash",
                        help="sha256:<hex> of the key that opens the admin routes: POST/GET /admin/reload (hot reload "
                        "of the weights) and, with --enable-fault-injection, /admin/faults (`lab gateway hash-key` "
                        "prints it)")
    logs = parser.add_argument_group("logging")
    logs.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    logs.add_argument("--access-log", action="store_true", help="log one line per HTTP request")
    parser.set_defaults(handler=_serve)


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _serve(args: argparse.Namespace) -> int:
    import logging

    given = {name: getattr(args, name) for name in ENGINE_FLAGS if getattr(args, name) is not None}
    hf_cb = {field: getattr(args, f"hf_cb_{field}") for _, field, _ in HF_CB_FLAGS
             if getattr(args, f"hf_cb_{field}") is not None}
    _check_engine_flags(args.engine, given, args.hf_batch_size, args.engine_core,  # before torch loads: fail fast
                        args.engine_iteration_timeout_s, hf_cb)
    admin_key, fault_injection = _admin(args)
    if args.emulate_mig is not None:
        _check_emulate_mig(args, given)
    if given.get("tensor_parallel_size", 1) > 1 and (args.admin_key_hash is not None or args.emulate_mig is not None):
        raise LabError("--tensor-parallel-size > 1 cannot be combined with --admin-key-hash (hot reload, fault "
                       "injection) or --emulate-mig yet: those act on one engine process, not on every rank")

    from lab.engine.args import EngineArgs  # torch: only when a replica really starts
    from lab.server.runner import ServerConfig, serve
    try:
        config = ServerConfig(
            engine_args=EngineArgs(**given),
            served_model_name=args.served_model_name or args.model,
            host=args.host, port=args.port, drain_timeout_s=args.drain_timeout_s,
            log_level=args.log_level, access_log=args.access_log,
            engine=args.engine, hf_batch_size=1 if args.hf_batch_size is None else args.hf_batch_size,
            hf_cb=HFCBConfig(**hf_cb),
            engine_core=args.engine_core or ENGINE_CORES[0],
            max_request_bytes=args.max_request_bytes,
            engine_iteration_timeout_s=(ENGINE_ITERATION_TIMEOUT_S if args.engine_iteration_timeout_s is None
                                        else args.engine_iteration_timeout_s),
            emulate_mig=args.emulate_mig, emulate_mig_with=args.emulate_mig_with,
            **({} if fault_injection is None else {"fault_injection": fault_injection}),  # default: none
            **({} if admin_key is None else {"admin_key": admin_key}),
        )
    except ValueError as exc:
        raise LabError(str(exc)) from None
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(config)


def _check_emulate_mig(args: argparse.Namespace, given: dict) -> None:
    """Refuse --emulate-mig where it cannot hold: flags first (no torch), then the device and PyTorch or MPS."""
    from lab.gpu.mig_emulation import check_emulation_possible, check_profile_token

    check_profile_token(args.emulate_mig)
    mps = args.emulate_mig_with == "mps"
    if args.engine != "lab" or args.engine_core == "thread":
        raise LabError("--emulate-mig needs --engine lab with its engine core process (the default): the core sets "
                       "up the slice before its CUDA work and sizes its memory as the profile's")
    if args.admin_key_hash is not None and not mps:
        raise LabError("--emulate-mig cannot be combined with --admin-key-hash: a hot reload copies on its own thread, "
                       "outside the green context (--emulate-mig-with mps holds the whole process)")
    if "gpu_memory_utilization" in given:
        raise LabError("--emulate-mig sets gpu_memory_utilization to the profile's memory share; leave out "
                       "--gpu-memory-utilization")
    if mps:
        import os

        from lab.gpu.mps import check_mps_client

        check_mps_client(dict(os.environ))
    import torch  # only now: the checks above need none

    from torch.cuda import green_contexts

    # cudaGetDeviceCount only: no CUDA context here, so the MPS share the core sets still applies
    check_emulation_possible(args.device or "auto", torch.cuda.is_available(), mps or green_contexts.SUPPORTED)


def _admin(args: argparse.Namespace):
    """(`AdminKey` of --admin-key-hash or None, the same key again if --enable-fault-injection else None);
    LabError for flags that cannot work."""
    if args.admin_key_hash is None:
        if args.enable_fault_injection:
            raise LabError("--enable-fault-injection needs --admin-key-hash sha256:<hex> (`lab gateway hash-key` "
                           "prints it): the fault routes can stop or corrupt the replica")
        return None, None
    if args.engine != "lab" or args.engine_core == "thread":
        raise LabError("--admin-key-hash (hot reload, and --enable-fault-injection) needs --engine lab with its engine "
                       "core process (the default): weights are swapped and faults armed where the steps run")
    from lab.server.faults import AdminKey

    try:
        key = AdminKey(args.admin_key_hash)
    except ValueError as exc:
        raise LabError(f"--admin-key-hash: {exc}") from None
    return key, key if args.enable_fault_injection else None


def _check_engine_flags(engine: str, given: dict, hf_batch_size: int | None, engine_core: str | None = None,
                        iteration_timeout_s: float | None = None, hf_cb: dict | None = None) -> None:
    """Refuse flags the chosen engine would silently ignore; `hf_cb` is the --hf-cb-* flags given, by field."""
    hf_cb = hf_cb or {}
    if engine != "hf" and hf_batch_size is not None:
        raise LabError("--hf-batch-size applies to --engine hf only")
    if engine != "hf-cb" and hf_cb:
        raise LabError(f"{', '.join(_hf_cb_flag(name) for name in hf_cb)}: apply to --engine hf-cb only")
    if engine == "lab":
        return
    ignored = [f"--{name.replace('_', '-')}" for name in LAB_ONLY_FLAGS if name in given]
    if engine_core is not None:
        ignored.append("--engine-core")
    if iteration_timeout_s is not None:
        ignored.append("--engine-iteration-timeout-s")
    if ignored:
        runs = ("--engine hf runs transformers generate() in static batches (see --hf-batch-size)" if engine == "hf"
                else "--engine hf-cb runs transformers' continuous batching manager, sized by the --hf-cb-* flags")
        raise LabError(f"{', '.join(ignored)}: only --engine lab has this project's paged KV cache, scheduler and "
                       f"engine core; {runs}")
    if hf_batch_size is not None and hf_batch_size < 1:
        raise LabError(f"--hf-batch-size must be >= 1, got {hf_batch_size}")
    for name, value in hf_cb.items():
        if value < 1:
            raise LabError(f"{_hf_cb_flag(name)} must be >= 1, got {value}")


def _hf_cb_flag(field: str) -> str:
    return next(flag for flag, name, _ in HF_CB_FLAGS if name == field)
