"""`lab bench serve`: benchmark any OpenAI-compatible server as vLLM's `bench serve` does.

`lab bench coldstart` (an engine's start, phase by phase) registers beside it from `lab.bench.coldstart_cli`.

Contract: `register(subparsers)` adds `lab bench serve`; its options map one to one onto
`BenchConfig` (see `lab.bench.runner`) and the run's outputs are written by
`lab.bench.record.save_results` into `--out-dir` (default `runs/bench-<timestamp>/`) and logged to
MLflow unless `--no-track`. Prints a summary and, as its last stdout line, one JSON object with
the headline metrics. Exit status 0; 130 after Ctrl-C (the partial result is still written).
Heavy imports (numpy, httpx, the tokenizer, mlflow) happen inside the handler.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from lab.bench import coldstart_cli
from lab.errors import LabError
from lab.track.cli import add_tracking_uri_option

EPILOG = """\
workloads (--workload):
  random   --num-prompts requests of --input-len prompt tokens and --output-len output tokens
           (ignore_eos forces the output length); with --random-range-ratio r in [0, 1) each
           length is uniform over the integers in [len*(1-r), len*(1+r)] (vLLM's random dataset)
  chat     ShareGPT-like chat lengths: --num-prompts (input, output) pairs drawn from a bivariate
           lognormal fitted at run time to a trace's ContextTokens/GeneratedTokens (mean, std and
           correlation of their logs; default trace: the shipped Azure 2023 conversations, median
           ~760 prompt and ~150 output tokens), prompt + output clipped to --max-context-tokens;
           synthetic arrivals (--arrival, --request-rate) as for random
  trace    lengths and timestamps from a CSV with TIMESTAMP, ContextTokens, GeneratedTokens
           (default: the Azure LLM 2023 conversation trace shipped in data/traces/);
           --trace-speedup rescales time, --max-duration-s cuts it, prompt + output
           are clipped to --max-context-tokens, --num-prompts keeps the first N
  Prompts are random whole-word texts whose DeepSeek-tokenizer count is exact (--prompt-format
  text) or token-id lists (--prompt-format token-ids, accepted by vLLM and `lab serve`).

arrival processes (--arrival; the first request goes at t=0):
  trace       the trace's own timestamps (default for --workload trace)
  poisson     exponential gaps at --request-rate (default for --workload random)
  gamma       gamma gaps, shape = --burstiness, scale = 1/(rate*burstiness) (vLLM);
              burstiness < 1 is burstier than Poisson, > 1 smoother
  constant    one request every 1/--request-rate seconds
  flash-sale  Poisson/gamma at --request-rate, stepping to --flash-sale-factor times that rate
              between --flash-sale-start-s and --flash-sale-end-s
  --request-rate inf sends everything at once. --request-rates 1,2,4 sweeps the rate (one run
  per rate, same prompts); --max-concurrency caps requests in flight (TTFT counts from the send);
  --max-concurrencies 16,64,256 sweeps the cap instead (the concurrency knee).
  --tier NAME:API_KEY:FRACTION (repeatable) mixes tiers; each request sends its tier's key as
  `Authorization: Bearer`, and every metric is also reported per tier.

metrics (vLLM's definitions; successful requests only; mean, median, std, P90, P99 in ms):
  TTFT   time to first token: send -> first streamed chunk with text
  TPOT   time per output token: (E2E - TTFT) / (output tokens - 1), requests with > 1 token
  ITL    inter-token latency: every gap between streamed chunks
  E2EL   end-to-end latency: send -> end of stream
  request_throughput_per_s, output_throughput_tok_per_s, total_throughput_tok_per_s (prompt +
  output tokens) over the run's duration; output tokens come from the server's final usage chunk,
  else the chunk count. goodput_per_s: requests meeting every --goodput SLO per second.
  failed (by error kind: http_<status>, timeout, connect, stream_error, ...), timeouts, cancelled.
  P90/P99 over n requests: P99 interpolates between the two largest values when n < 100, so
  with fewer than ~20 requests it is about the maximum; send more requests for a tail number.
  telemetry.*: host CPU and memory (psutil), GPU utilisation, power and memory (pynvml) when a
  GPU is visible, over the whole run; telemetry.steady.*: the same over the steady part only,
  from the first completed request (or a quarter of the arrival span) to the last arrival,
  without ramp-up and drain (the whole run when arrivals span no time, steady_window_s = 0).
  max_qps_* with --ttft-p99-slo-ms: the highest offered rate whose P99 TTFT meets the SLO with
  no failed request, and the throughput achieved there.

outputs (--out-dir): requests.csv (one row per request; requests_<i>_<rate>.csv in a sweep),
latency_cdf.png, latency_vs_rate.png or latency_vs_concurrency.png (sweeps), utilization.png (one
run), record.json (a sweep's holds one child record per point), and an MLflow run. Ctrl-C stops, cancels requests in flight and keeps
what was measured, marked partial.

examples:
  lab bench serve --base-url http://127.0.0.1:8000 --input-len 256 --output-len 64 \\
      --num-prompts 200 --request-rate 8 --goodput ttft:500 tpot:50
  lab bench serve --workload trace --trace-speedup 2 --max-duration-s 120 --max-concurrency 64
  lab bench serve --workload chat --num-prompts 500 --request-rate 4 --max-context-tokens 2048
  lab bench serve --input-len 512 --output-len 128 --random-range-ratio 0.5 --request-rate 8
  lab bench serve --request-rates 1,2,4,8 --ttft-p99-slo-ms 500 --num-prompts 100
  lab bench serve --arrival flash-sale --request-rate 4 --flash-sale-factor 5 \\
      --flash-sale-start-s 10 --flash-sale-end-s 20 --tier vip:sk-vip:0.2 --tier batch:sk-batch:0.8
"""

ARRIVALS = ("trace", "poisson", "gamma", "constant", "flash-sale")
WORKLOADS = ("random", "chat", "trace")


def register(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    bench = subparsers.add_parser("bench", help="benchmark an OpenAI-compatible server (load, latency, goodput)",
                                  description="Load generators and serving benchmarks.")
    commands = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", required=True)
    p = commands.add_parser(
        "serve", help="stream requests to /v1/completions and measure TTFT, TPOT, ITL, E2E, goodput",
        description="Benchmark an OpenAI-compatible server (this lab's server or gateway, vLLM, SGLang) "
        "over HTTP with streaming, as vLLM's `bench serve` does.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = p.add_argument_group("target")
    target.add_argument("--base-url", default="http://127.0.0.1:8000", help="server URL (default: %(default)s)")
    target.add_argument("--model", help="model name to send (default: the first of GET /v1/models)")
    target.add_argument("--api-key", help="key sent as Authorization: Bearer (without --tier)")
    target.add_argument("--tier", action="append", default=[], metavar="NAME:API_KEY:FRACTION",
                        help="a tier of a multi-tier mix (repeatable)")
    target.add_argument("--timeout-s", type=float, default=600.0, help="per-request timeout (default: %(default)s)")
    target.add_argument("--num-warmups", type=int, default=1, help="unmeasured requests first (default: %(default)s)")
    load = p.add_argument_group("workload")
    load.add_argument("--workload", choices=WORKLOADS, default="random", help="(default: %(default)s)")
    load.add_argument("--num-prompts", type=int, help="requests (random, chat: default 100; trace: keep the first N)")
    load.add_argument("--input-len", type=int, default=128, help="random: prompt tokens (default: %(default)s)")
    load.add_argument("--output-len", type=int, default=32, help="random: output tokens (default: %(default)s)")
    load.add_argument("--random-range-ratio", type=float, default=0.0,
                      help="random: lengths uniform in [len*(1-r), len*(1+r)], r in [0, 1) (default: %(default)s)")
    load.add_argument("--trace", type=Path, help="trace CSV to replay (trace) or to fit lengths to (chat) "
                      "(default: the Azure 2023 conversation trace)")
    load.add_argument("--trace-speedup", type=float, default=1.0, help="trace: replay N times faster")
    load.add_argument("--max-duration-s", type=float, help="trace: keep requests arriving before this")
    load.add_argument("--max-context-tokens", type=int, default=4096,
                      help="trace, chat: clip prompt + output (default: %(default)s)")
    load.add_argument("--prompt-format", choices=("text", "token-ids"), default="text", help="(default: %(default)s)")
    load.add_argument("--no-ignore-eos", action="store_true", help="let the model stop at EOS (OpenAI's own API)")
    load.add_argument("--seed", type=int, default=0, help="fixes prompts, arrivals and tiers (default: %(default)s)")
    arrival = p.add_argument_group("arrivals")
    arrival.add_argument("--arrival", choices=ARRIVALS, help="(default: trace for a trace, else poisson)")
    arrival.add_argument("--request-rate", type=float, default=math.inf, help="requests/s (default: inf)")
    arrival.add_argument("--request-rates", help="comma-separated rates: a sweep, one run per rate")
    arrival.add_argument("--burstiness", type=float, default=1.0, help="gamma shape (default: 1 = Poisson)")
    arrival.add_argument("--flash-sale-factor", type=float, default=5.0, help="burst rate / base rate")
    arrival.add_argument("--flash-sale-start-s", type=float, default=10.0, help="burst start (s)")
    arrival.add_argument("--flash-sale-end-s", type=float, default=20.0, help="burst end (s)")
    arrival.add_argument("--max-concurrency", type=int, help="cap on requests in flight")
    arrival.add_argument("--max-concurrencies", help="comma-separated caps: a sweep, one run per cap (the knee)")
    out = p.add_argument_group("metrics and outputs")
    out.add_argument("--goodput", nargs="+", default=[], metavar="METRIC:MS", help="SLOs: ttft:500 tpot:50 e2el:2000")
    out.add_argument("--ttft-p99-slo-ms", type=float, help="report the max QPS whose P99 TTFT meets this")
    out.add_argument("--out-dir", type=Path, help="default: runs/bench-<timestamp>")
    out.add_argument("--experiment", default="bench-serve", help="MLflow experiment (default: %(default)s)")
    add_tracking_uri_option(out)
    out.add_argument("--no-track", action="store_true", help="write record.json but log nothing to MLflow")
    out.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=_serve)
    coldstart_cli.register(commands)
    return commands  # `lab bench offline` (lab.studies.roofline.cli) and `lab bench comm` (lab.comm.cli): lab/cli.py


def _arrivals(args: argparse.Namespace):
    from lab.bench import arrivals as a

    kind = args.arrival or ("trace" if args.workload == "trace" else "poisson")
    rate = args.request_rate
    try:
        if kind == "trace":
            if args.workload != "trace":
                raise LabError("--arrival trace needs --workload trace")
            return None
        if kind == "poisson":
            return a.PoissonArrivals(rate)
        if kind == "gamma":
            return a.GammaArrivals(rate, args.burstiness)
        if kind == "constant":
            return a.ConstantArrivals(rate)
        return a.FlashSaleArrivals(rate, args.flash_sale_factor, args.flash_sale_start_s, args.flash_sale_end_s,
                                   args.burstiness)
    except ValueError as error:
        raise LabError(str(error)) from None


def config_from_args(args: argparse.Namespace):
    from lab.bench.metrics import parse_slos
    from lab.bench.runner import BenchConfig
    from lab.bench.tiers import TierMix, parse_tier
    from lab.bench.workloads import ChatWorkload, RandomWorkload, TraceWorkload

    if args.workload == "random":
        workload = RandomWorkload(args.num_prompts or 100, args.input_len, args.output_len, args.random_range_ratio)
    elif args.workload == "chat":
        workload = ChatWorkload(args.num_prompts or 100, args.max_context_tokens, args.trace)
    else:
        workload = TraceWorkload(args.trace, args.trace_speedup, args.max_duration_s, args.max_context_tokens,
                                 args.num_prompts)
    return BenchConfig(
        base_url=args.base_url, model=args.model, workload=workload, arrivals=_arrivals(args),
        max_concurrency=args.max_concurrency,
        tiers=TierMix(tuple(parse_tier(t) for t in args.tier)) if args.tier else None,
        api_key=args.api_key, slos=parse_slos(args.goodput), prompt_format=args.prompt_format,
        ignore_eos=not args.no_ignore_eos, seed=args.seed, request_timeout_s=args.timeout_s,
        num_warmups=args.num_warmups, show_progress=not args.no_progress,
    )


def _numbers(option: str, text: str, kind: type) -> list:
    try:
        values = [kind(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise LabError(f"{option} is a comma-separated list of {kind.__name__}s, got {text!r}") from None
    if not values:
        raise LabError(f"{option} needs at least one value")
    return values


def _serve(args: argparse.Namespace) -> int:
    from lab.bench.record import save_results
    from lab.bench.summary import headline, summary_text
    from lab.bench.runner import run_benchmark
    from lab.bench.sweep import sweep_concurrency, sweep_rates
    from lab.paths import ProjectLayout, timestamp_slug

    config = config_from_args(args)
    if args.request_rates and args.max_concurrencies:
        raise LabError("sweep one thing at a time: --request-rates or --max-concurrencies")
    if args.request_rates:
        results = sweep_rates(config, _numbers("--request-rates", args.request_rates, float))
    elif args.max_concurrencies:
        results = sweep_concurrency(config, _numbers("--max-concurrencies", args.max_concurrencies, int))
    else:
        results = (run_benchmark(config),)
    out_dir = args.out_dir or ProjectLayout.discover().runs_dir / f"bench-{timestamp_slug()}"
    slo_s = None if args.ttft_p99_slo_ms is None else args.ttft_p99_slo_ms / 1000.0
    outputs = save_results(results, out_dir, experiment=args.experiment, ttft_p99_slo_s=slo_s,
                           track=not args.no_track, tracking_uri=args.tracking_uri)
    for result in results:
        print(summary_text(result))
    print(f"outputs: {outputs.out_dir}" + (f" (MLflow run {outputs.run_id})" if outputs.run_id else ""))
    print(json.dumps(headline(results, slo_s)))
    return 130 if any(r.partial for r in results) else 0
