"""`lab gateway bench-latency`: the latency the gateway adds, straight vs through it, in one run.

    lab gateway bench-latency --rate 100 --rate 500 --out reports/records/gateway_latency-cpu

Contract: `register(gateway_actions)` adds the subcommand under `lab gateway` (lab/cli.py passes the
gateway command's subparsers); argparse only at import, the study inside the handler. Writes
`<out>/record.json`; the last stdout line is one JSON object (the target rate's added p50/p99).
"""
from __future__ import annotations

import argparse

from lab.errors import LabError


def register(actions: argparse._SubParsersAction) -> None:
    bench = actions.add_parser("bench-latency", help="measure the latency the gateway adds (straight vs through it)",
                               description="Fire a fixed request rate straight at a minimal upstream and through a "
                                           "real `lab gateway` in front of it, in one run; write a result record.")
    bench.add_argument("--rate", type=float, action="append", dest="rates",
                       help="offered requests/s on each path; repeat for several (default: 500)")
    bench.add_argument("--target-rate", type=float, default=500.0, help="the rate whose numbers top the record")
    bench.add_argument("--duration-s", type=float, default=10.0, help="measured seconds per path and round")
    bench.add_argument("--warmup-s", type=float, default=1.0, help="unrecorded seconds before each phase")
    bench.add_argument("--rounds", type=int, default=2, help="direct/gateway alternations")
    bench.add_argument("--upstream", choices=["minimal", "replica"], default="minimal",
                       help="minimal HTTP upstream (default) or a real `lab serve --model tiny` replica")
    bench.add_argument("--out", default="runs/gateway_latency", help="folder for record.json")
    bench.set_defaults(handler=_bench_latency)


def _bench_latency(args: argparse.Namespace) -> int:
    import gc
    import json
    from pathlib import Path

    from lab.studies.gateway_latency.bench import LatencyBenchConfig, latency_record, run_latency_bench

    rates = args.rates or [args.target_rate]
    if args.target_rate not in rates:
        raise LabError(f"--target-rate {args.target_rate:g} is not among the --rate values {rates}")
    # This process is the load client, a measuring instrument: a full collection of what its imports
    # left alive (numpy, the tracking stack) would stall it for tens of ms, on whichever path it hit.
    gc.collect()
    gc.freeze()
    try:
        results = [run_latency_bench(LatencyBenchConfig(rate_per_s=rate, duration_s=args.duration_s,
                                                        warmup_s=args.warmup_s, rounds=args.rounds,
                                                        upstream=args.upstream)) for rate in rates]
        path = latency_record(results, args.target_rate).save(Path(args.out) / "record.json")
        for result in results:
            print(f"{result.config.rate_per_s:g} req/s: direct p50/p99 {result.direct.p50_ms:.2f}/{result.direct.p99_ms:.2f} ms, "
                  f"gateway {result.gateway.p50_ms:.2f}/{result.gateway.p99_ms:.2f} ms, added "
                  f"{result.added_p50_ms:.2f}/{result.added_p99_ms:.2f} ms; CPU ms/request {result.cpu_ms_per_request}")
        print(f"record: {path}")
        target = next(r for r in results if r.config.rate_per_s == args.target_rate)
        print(json.dumps({"rate_per_s": args.target_rate, "added_p50_ms": round(target.added_p50_ms, 3),
                          "added_p99_ms": round(target.added_p99_ms, 3)}))
    finally:
        gc.unfreeze()  # an in-process caller (a test, a notebook) gets its collector back
    return 0
