"""The roofline study's command line, shared by `lab bench offline` and `python -m lab.studies.roofline`
(the second needs no notebook stack, for bare GPU machines).

`register(bench_commands)` adds `lab bench offline` (lab/cli.py passes the bench command's
subparsers); `add_arguments(parser)` declares the options once; `run(args)` runs the suite per
preset, writes `record.json` (device name inside) and the roofline plot to `--out`, and returns the
record. The last stdout line is one JSON object of the metrics. Argparse only at import.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    from lab.track.cli import add_tracking_uri_option

    p = commands.add_parser(
        "offline", help="engine decode sweep, roofline and offline throughput against transformers' generate",
        description="Per preset: decode at each batch size (tokens/s, step time, MBU against the card's "
        "memory bandwidth, the roofline), offline throughput for requests with input and output lengths "
        "uniform in [min-len, max-len] (ignore_eos), transformers' generate on the same work, and the peers "
        "(transformers' static-cache generate compiled, a gpt-fast-style compiled loop, transformers' continuous "
        "batching) on the same card in the same run. Writes record.json (device name inside) and logs it to MLflow.")
    add_arguments(p)
    add_tracking_uri_option(p)
    p.add_argument("--no-track", action="store_true", help="write record.json but log nothing to MLflow")
    p.set_defaults(handler=_offline)


def _offline(args: argparse.Namespace) -> int:
    record, path = run(args)
    if not args.no_track:
        from lab.track import log_record

        run_id = log_record(record, record_path=path, tracking_uri=args.tracking_uri)
        print(f"MLflow run: {run_id}")
    return 0


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--presets", default="r1-distill-qwen-1.5b,deepseek-v2-lite", help="comma-separated engine presets")
    ap.add_argument("--batches", default="1,8,32,128,256", help="decode batch sizes (default: %(default)s)")
    ap.add_argument("--decode-prompt-len", type=int, default=512, help="context tokens per decode sequence")
    ap.add_argument("--decode-steps", type=int, default=64, help="timed decode steps per batch size")
    ap.add_argument("--num-requests", type=int, default=256, help="offline set: requests")
    ap.add_argument("--min-len", type=int, default=100, help="offline set: shortest input/output length")
    ap.add_argument("--max-len", type=int, default=1024, help="offline set: longest input/output length")
    ap.add_argument("--hf-time-cap-s", type=float, default=60.0, help="stop transformers' generate after this")
    ap.add_argument("--hf-batch-size", type=int, default=32, help="transformers' generate: static batch size")
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    ap.add_argument("--no-peers", action="store_true", help="skip the peers (compiled decode, continuous batching)")
    ap.add_argument("--no-peer-compile", action="store_true",
                    help="run the decode peers' code eager (a CPU check of the road; compiling takes minutes there)")
    ap.add_argument("--peer-warmup-calls", type=int, default=2, help="decode peers: warm-up rounds (compile), untimed")
    ap.add_argument("--peer-repeats", type=int, default=3, help="decode peers: timed rounds, the fastest counts")
    ap.add_argument("--peer-cb-sizes", type=json.loads, default={}, metavar="JSON",
                    help='continuous batching sizes, e.g. \'{"num_blocks": 1024}\' (default {}: transformers\' own)')
    ap.add_argument("--max-model-len", type=int, default=4096, help="engine context length")
    ap.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs (the reference path)")
    ap.add_argument("--no-fused-ops", action="store_true", help="unfused norm/rope/activation (the reference path)")
    ap.add_argument("--out", default=".", help="folder for record.json and roofline.png")
    ap.add_argument("--profile", default=None, help="profile name stored in the record (e.g. gpu)")


def run(a: argparse.Namespace):
    from lab.studies.roofline.peers import PeerConfig
    from lab.studies.roofline.suite import benchmark_record, peer_failures, run_preset

    params = {k: v for k, v in vars(a).items() if k in _PARAM_NAMES}
    engine_kwargs = dict(max_model_len=a.max_model_len, enforce_eager=a.enforce_eager, fused_ops=not a.no_fused_ops)
    peers = None if a.no_peers else PeerConfig.from_params(not a.no_peer_compile, a.peer_warmup_calls,
                                                            a.peer_repeats, a.peer_cb_sizes)
    results = []
    for preset in a.presets.split(","):
        r = run_preset(
            preset, [int(b) for b in a.batches.split(",")], a.decode_prompt_len, a.decode_steps, a.num_requests,
            a.min_len, a.max_len, run_hf=not a.no_hf, hf_batch_size=a.hf_batch_size, hf_time_cap_s=a.hf_time_cap_s,
            engine_kwargs=engine_kwargs, peers=peers,
        )
        results.append(r)
        print(json.dumps(asdict(r), default=str), flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    artifacts: tuple[str, ...] = ()
    try:
        from lab.studies.roofline.plot import plot_roofline

        plot_roofline(results).savefig(out / "roofline.png", dpi=120)
        artifacts = ("roofline.png",)
    except ImportError:  # no matplotlib on this machine: the record alone
        pass
    params["peer_failures"] = peer_failures(results)
    record = benchmark_record(results, params, artifacts=artifacts, profile=a.profile)
    path = record.save(out / "record.json")
    print(f"record: {path}", flush=True)
    print(json.dumps(record.metrics), flush=True)
    return record, path


_PARAM_NAMES = (
    "presets", "batches", "decode_prompt_len", "decode_steps", "num_requests", "min_len", "max_len",
    "hf_time_cap_s", "hf_batch_size", "no_hf", "max_model_len", "enforce_eager", "no_fused_ops",
    "no_peers", "no_peer_compile", "peer_warmup_calls", "peer_repeats", "peer_cb_sizes",
)
