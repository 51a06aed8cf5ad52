"""`lab bench comm`: the nccl-tests-style collective sweep under torchrun, with an optional NCCL knob sweep.

Contract: `register(bench_commands)` adds the subcommand (lab/cli.py passes `lab bench`'s subparsers, so
`lab.bench` never imports `lab.comm`). The handler builds a `SweepConfig` from the options (mistakes exit 2
naming the valid choices before anything starts), runs the sweep with `--nproc` processes (`lab.comm.launch`),
then each knob variant in its own processes, and writes into --out-dir: `record.json` (backend and device
inside; one child per collective and size, one per knob row), `busbw.png`, `latency.png`, `knobs.json`, each
run's folder with its config, result and torchrun log. It logs the record to MLflow unless --no-track, prints
the tables and, as its last stdout line, one JSON object of the headline metrics. Argparse only at import.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from lab.track.cli import add_tracking_uri_option

EPILOG = """\
what is measured (nccl-tests' definitions, NVIDIA/nccl-tests doc/PERFORMANCE.md):
  time    mean of --iters operations after --warmup-iters, averaged over ranks
  algbw   S / time, S = the whole array (all_gather: output, reduce_scatter: input), GB = 1e9 B
  busbw   algbw x 2(n-1)/n (all_reduce) or (n-1)/n (all_gather, reduce_scatter, all_to_all): comparable
          with the link's peak whatever the rank count
  #wrong  elements off the expected result in one checked operation per size (must be 0)
  latency the all_reduce at sizes <= --latency-max-bytes, eager and, on nccl, replayed from a CUDA graph
          (gloo: not applicable, graphs hold GPU kernels only)

knob variants (--knob, repeatable; --knobs runs every built-in one), each in its own processes:
  algo-ring, algo-tree, proto-ll, proto-ll128, proto-simple, ring-ll, channels-2, channels-32,
  buffsize-1m, buffsize-16m, or NAME:NCCL_VAR=VALUE[,NCCL_VAR=VALUE]. NVLS / multicast variables
  (NCCL_NVLS_*, NCCL_ALGO naming NVLS) are refused: they stay as the machine sets them.
  On gloo NCCL variables do nothing; the knob table then only shows noise.

examples:
  lab bench comm --nproc 2 --backend gloo --min-bytes 8 --max-bytes 1M
  lab bench comm --nproc 8 --backend nccl --dtype bfloat16 --knobs
  lab bench comm --nproc 2 --collectives all_reduce --max-bytes 64K --knob ring-ll \\
      --knob 'll-4ch:NCCL_PROTO=LL,NCCL_MAX_NCHANNELS=4'
"""


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "comm", help="collective bandwidth and latency sweep (nccl-tests style) under torchrun, NCCL knob sweep",
        description="Run all_reduce, all_gather, reduce_scatter and all_to_all over a range of sizes in --nproc "
        "processes started by torchrun (nccl: one per GPU; gloo: CPU), report time, algorithm and bus bandwidth "
        "and small-size latency with and without CUDA graphs, optionally under NCCL knob variants.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, help="processes, one per GPU on nccl (default: every visible GPU on nccl, "
                   "2 on gloo)")
    p.add_argument("--backend", choices=("auto", "nccl", "gloo"), default="auto",
                   help="auto: nccl when a CUDA GPU is present, else gloo (default: %(default)s)")
    p.add_argument("--collectives", default="all_reduce,all_gather,reduce_scatter,all_to_all",
                   help="comma-separated (default: all four)")
    p.add_argument("--min-bytes", default="8", help="smallest size, K/M/G are powers of 1024 (default: %(default)s)")
    p.add_argument("--max-bytes", default="1G", help="largest size (default: %(default)s)")
    p.add_argument("--factor", type=int, default=2, help="size multiplier between steps (default: %(default)s)")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16, float16, float64, int32, int8")
    p.add_argument("--warmup-iters", type=int, default=5, help="untimed operations per size (default: %(default)s)")
    p.add_argument("--iters", type=int, default=20, help="timed operations per size (default: %(default)s)")
    p.add_argument("--latency-max-bytes", default="64K",
                   help="all_reduce latency up to this size (default: %(default)s)")
    p.add_argument("--graph-ops", type=int, default=20, help="all_reduces per CUDA graph (default: %(default)s)")
    p.add_argument("--graph-replays", type=int, default=10, help="timed graph replays (default: %(default)s)")
    p.add_argument("--knobs", action="store_true", help="run every built-in knob variant after the sweep")
    p.add_argument("--knob", action="append", default=[], metavar="VARIANT", help="a knob variant (repeatable)")
    p.add_argument("--timeout-s", type=float, default=900.0, help="per torchrun run (default: %(default)s)")
    p.add_argument("--out-dir", type=Path, help="default: runs/comm-<timestamp>")
    p.add_argument("--experiment", default="bench-comm", help="MLflow experiment (default: %(default)s)")
    add_tracking_uri_option(p)
    p.add_argument("--no-track", action="store_true", help="write record.json but log nothing to MLflow")
    p.set_defaults(handler=_comm)


def _comm(args: argparse.Namespace) -> int:
    from lab.comm.config import SweepConfig, resolve_backend
    from lab.comm.knob_sweep import knob_note, knob_rows, run_knob_sweep
    from lab.comm.knobs import DEFAULT_VARIANTS, parse_variant
    from lab.comm.launch import resolve_nproc, run_sweep
    from lab.comm.links import link_for_device
    from lab.comm.plots import plot_busbw, plot_latency
    from lab.comm.summary import sweep_record
    from lab.comm.tables import knob_table, sweep_table, target_lines
    from lab.comm.targets import LARGE_MIN_BYTES, issue_targets
    from lab.paths import ProjectLayout, timestamp_slug

    collectives = tuple(c.strip() for c in args.collectives.split(","))
    config = SweepConfig(backend=resolve_backend(args.backend), collectives=collectives, min_bytes=args.min_bytes,
                         max_bytes=args.max_bytes, factor=args.factor, dtype=args.dtype,
                         warmup_iters=args.warmup_iters, iters=args.iters, latency_max_bytes=args.latency_max_bytes,
                         graph_ops=args.graph_ops, graph_replays=args.graph_replays)
    variants = list(DEFAULT_VARIANTS) if args.knobs else []
    variants += [parse_variant(text) for text in args.knob]
    nproc = resolve_nproc(args.nproc, config.backend)
    out = args.out_dir or ProjectLayout.discover().runs_dir / f"comm-{timestamp_slug()}"
    result = run_sweep(config, nproc, out / "default", timeout_s=args.timeout_s)
    print(sweep_table(result), flush=True)
    result.raise_if_wrong()  # a collective that computes the wrong answer makes its timing meaningless
    rows = []
    if variants:
        outcomes = run_knob_sweep(config, nproc, variants, out / "knobs", timeout_s=args.timeout_s)
        rows = knob_rows(result, outcomes, config.latency_max_bytes, LARGE_MIN_BYTES)
        print(knob_note(result) + "\n" + knob_table(rows), flush=True)
    link = link_for_device(result.device)
    targets = issue_targets(result, link)
    print(target_lines([t for _, t in targets]))
    plot_busbw(result, link).savefig(out / "busbw.png", dpi=110)
    plot_latency(result).savefig(out / "latency.png", dpi=110)
    (out / "knobs.json").write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1), encoding="utf-8")
    artifacts = ("busbw.png", "latency.png", "knobs.json", "default", *(("knobs",) if variants else ()))
    record = sweep_record(args.experiment, result, config, nproc, rows, targets, artifacts=artifacts)
    if args.no_track:
        record.save(out / "record.json")
    else:
        from lab.track import log_record

        print(f"MLflow run: {log_record(record, record_path=out / 'record.json', tracking_uri=args.tracking_uri)}")
    print(f"record: {out / 'record.json'}")
    headline = {k: v for k, v in record.metrics.items() if not k.startswith("knob_")}
    print(json.dumps({"backend": result.backend_label, "device": result.device, **headline}))
    return 0
