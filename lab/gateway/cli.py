"""`lab gateway`: run the QoS gateway, or hash a key for its config.

    lab gateway --config deploy/gateway.example.yaml --host 127.0.0.1 --port 9000 [--server lab|uvicorn]
    lab gateway hash-key [KEY] [--scheme sha256|pbkdf2]   # KEY read from stdin when omitted
    lab gateway bench-latency --rate 100 --rate 500 --out reports/records/gateway_latency-cpu

Contract: `register(subparsers)` adds the command (see lab/cli.py). A bad config is a `LabError`
naming the field, printed without a traceback. The server is one process (`lab.gateway.server`,
asyncio + httptools, by default; uvicorn, the plain path, with `--server uvicorn`): the buckets,
queue and health state live in the process, so one gateway process is one gateway.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from lab.errors import LabError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="run the QoS gateway (tiers, token buckets, priority queue, routing, health, canary)",
        description="Front OpenAI-compatible replicas with authenticated tiers, token buckets, a priority queue "
                    "with deadlines, least-outstanding-work routing, health checks with rollback, and canaries.",
    )
    parser.add_argument("--config", help="gateway YAML config (see deploy/gateway.example.yaml)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000, help="port to listen on (default: 9000)")
    parser.add_argument("--log-level", default="warning", help="log level (default: warning)")
    parser.add_argument("--server", choices=["lab", "uvicorn"], default="lab",
                        help="HTTP server: lab (asyncio + httptools, one write per reply; default) or uvicorn")
    parser.add_argument("--gc-freeze", action=argparse.BooleanOptionalAction, default=True,
                        help="with --server lab: move the objects alive after startup out of the cyclic GC's "
                             "reach, so no full collection pauses requests for ~100 ms (default: on)")
    parser.set_defaults(handler=_serve)
    actions = parser.add_subparsers(dest="gateway_action", metavar="ACTION")
    hasher = actions.add_parser("hash-key", help="print the hash of an API key, for the config's keys/admin_key_hash")
    hasher.add_argument("key", nargs="?", help="the key (read from stdin when omitted, to keep it out of history)")
    hasher.add_argument("--scheme", choices=["sha256", "pbkdf2"], default="sha256",
                        help="sha256 for random tokens (default), pbkdf2 (salted, slow) for keys people chose")
    hasher.set_defaults(handler=_hash_key)
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


def _hash_key(args: argparse.Namespace) -> int:
    from lab.gateway.auth import hash_key

    key = args.key
    if key is None:
        key = getpass.getpass("key: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
    if not key:
        raise LabError("an API key must not be empty")
    print(hash_key(key, args.scheme))
    return 0


def _bench_latency(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lab.gateway.latency_bench import LatencyBenchConfig, latency_record, run_latency_bench

    import gc

    rates = args.rates or [args.target_rate]
    if args.target_rate not in rates:
        raise LabError(f"--target-rate {args.target_rate:g} is not among the --rate values {rates}")
    # This process is the load client, a measuring instrument: a full collection of what its imports
    # left alive (numpy, the tracking stack) would stall it for tens of ms, on whichever path it hit.
    gc.collect()
    gc.freeze()
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
    return 0


def _serve(args: argparse.Namespace) -> int:
    if not args.config:
        raise LabError("lab gateway needs --config FILE (see deploy/gateway.example.yaml)")
    from lab.gateway.app import build_app
    from lab.gateway.config import load_config

    config = load_config(args.config)
    app = build_app(config)
    print(f"lab gateway: http://{args.host}:{args.port}  ({len(config.replicas)} replicas, "
          f"tiers {[t.name for t in config.tiers]}, stable {config.stable_version!r}, server {args.server})", flush=True)
    if args.server == "lab":
        import logging

        from lab.gateway.server import serve

        level = logging.getLevelName(args.log_level.upper())
        logging.basicConfig(level=level if isinstance(level, int) else logging.DEBUG,
                            format="%(levelname)s %(name)s: %(message)s")
        serve(app, args.host, args.port, freeze_gc=args.gc_freeze)
        return 0
    import uvicorn

    # loop/http "auto" pick uvloop and httptools when installed (they are dependencies).
    # The gateway is the front door: no X-Forwarded-* rewriting; access lines only at info level or below.
    access_log = args.log_level.lower() in ("trace", "debug", "info")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, workers=1, loop="auto", http="auto",
                proxy_headers=False, access_log=access_log, server_header=False)
    return 0
