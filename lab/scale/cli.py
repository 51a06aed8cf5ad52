"""`lab scale simulate` and `lab scale run`: the fleet simulator, and the live control loop.

Contract: `lab scale simulate` builds a workload (`--trace`, default the shared Azure trace;
`--days`, `--rate` requests/s at envelope 1, `--seed`, flash sales per day), runs one policy
(`static`, `reactive`, `target`, `predictive`) on it with a fleet plan (`--spot`, `--reserved`,
`--startup-s`) and an engine profile (`--profile`: a profile file or a `lab bench offline` record),
prints which forecaster it used, one line per tier and, as the last stdout line, one JSON object with
the results and the simulator's wall time (`sim_wall_s`): `lab scale simulate --days 1 --rate 100` is the
day-at-100-requests/s speed benchmark. `predictive` forecasts from `--history-days` days simulated
before the window with `--forecaster` (Prophet by default; `seasonal_naive`, `ewma`, `last_value` are
the baselines); the other policies forecast nothing ("forecaster: none"). `--out DIR` also writes a
result record (`record.json`, experiment `scale_simulate`, the forecaster and its settings among its
params) there.
`lab scale run` runs the live control loop (`lab.scale.control_loop`) against a `LocalPool` of
`lab serve` replicas, optionally registering ready ones with the gateway's admin API.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lab.scale.simulate_command import DEFAULT_FORECASTER, FORECASTERS  # light: no numpy, no prophet

POLICIES = ("static", "reactive", "target", "predictive")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("scale", help="predictive scaler: simulate policies on a workload",
                                   description="The scaler's tools (see lab.scale).")
    sub = parser.add_subparsers(dest="scale_command", metavar="SUBCOMMAND", required=True)
    sim = sub.add_parser("simulate", help="simulate a scaling policy on a trace-driven workload",
                         description="Build a workload from a trace (daily/weekly envelope, flash sales), run "
                         "one scaling policy on it in the fleet simulator, print per-tier results and, as the "
                         "last line, one JSON object including the simulator's wall time (sim_wall_s).")
    sim.add_argument("--trace", type=Path, help="trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens)")
    sim.add_argument("--days", type=float, default=1.0, help="days to simulate (default 1)")
    sim.add_argument("--rate", type=float, default=100.0, help="requests/s at envelope 1 (default 100)")
    sim.add_argument("--flash-sales-per-day", type=float, default=1.0)
    sim.add_argument("--policy", choices=POLICIES, default="reactive")
    sim.add_argument("--replicas", type=int, default=0, help="static: replica count (default: sized for the peak)")
    sim.add_argument("--reactive-delay-s", type=float, default=15.0)
    sim.add_argument("--history-days", type=int, default=2, help="predictive: days of history to forecast from")
    sim.add_argument("--forecaster", choices=FORECASTERS, default=DEFAULT_FORECASTER,
                     help=f"predictive: the forecaster of the request rate (default: {DEFAULT_FORECASTER}; "
                          "seasonal_naive, ewma and last_value are baselines: a day ago, an exponentially "
                          "weighted mean, the last value)")
    sim.add_argument("--spot", action="store_true", help="buy capacity above the reserved base as spot")
    sim.add_argument("--reserved", type=int, default=0, help="reserved replicas (default 0)")
    sim.add_argument("--startup-s", type=float, default=60.0, help="replica cold start (default 60)")
    sim.add_argument("--profile", type=Path, help="engine profile file or lab bench offline record")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--out", type=Path, help="write record.json into this folder")
    sim.set_defaults(handler=_simulate)
    register_run(sub)


def _simulate(args: argparse.Namespace) -> int:
    from lab.scale.simulate_command import SimulateRequest, run_simulate_command

    request = SimulateRequest(
        trace=args.trace, days=args.days, rate_per_s=args.rate, flash_sales_per_day=args.flash_sales_per_day,
        policy=args.policy, replicas=args.replicas, reactive_delay_s=args.reactive_delay_s,
        history_days=args.history_days, forecaster=args.forecaster, use_spot=args.spot,
        reserved_replicas=args.reserved, startup_s=args.startup_s, profile=args.profile, seed=args.seed)
    summary = run_simulate_command(request, out_dir=args.out)
    settings = ", ".join(f"{k}={v}" for k, v in summary["forecaster_settings"].items())
    print(f"forecaster: {summary['forecaster']}" + (f" ({settings})" if settings else
                                                    f" (the {args.policy} policy does not forecast)"))
    for tier in summary["tiers"]:
        print(f"{tier['name']:>9}: {tier['arrived']:>9} arrived, {tier['served']:>9} served, "
              f"{tier['shed']:>7} shed, {tier['timed_out']:>7} timed out, SLO {tier['slo_pct']:.3f} %")
    print(f"GPU-hours {summary['gpu_hours']:.1f}, cost ${summary['cost_usd']:.2f}, "
          f"{summary['requests']} requests in {summary['sim_wall_s']:.2f} s of simulation")
    print(json.dumps({k: v for k, v in summary.items() if k != "tiers"}))
    return 0


def register_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the control loop against local replicas (LocalPool)",
                         description="Start `lab serve` replicas on free ports of 127.0.0.1, scale them with a "
                         "policy fed by their /metrics, and hand ready ones to the gateway's admin API. "
                         "Prints one JSON line per tick; Ctrl-C stops every replica it started.")
    run.add_argument("--policy", choices=("reactive", "target", "static"), default="reactive")
    run.add_argument("--initial-replicas", type=int, default=1)
    run.add_argument("--min-replicas", type=int, default=1)
    run.add_argument("--max-replicas", type=int, default=4)
    run.add_argument("--replica-slots", type=int, default=8, help="max_num_seqs of each replica (default 8)")
    run.add_argument("--replica-capacity-per-s", type=float, default=1.0,
                     help="target: sustainable requests/s of one replica (default 1)")
    run.add_argument("--reactive-delay-s", type=float, default=15.0)
    run.add_argument("--interval-s", type=float, default=1.0)
    run.add_argument("--duration-s", type=float, help="stop after this long (default: until Ctrl-C)")
    run.add_argument("--command", help="replica command template with {port} "
                     "(default: python -m lab serve --model tiny --port {port} --max-num-seqs SLOTS)")
    run.add_argument("--gateway-admin", help="gateway base URL for POST/DELETE /admin/replicas")
    run.add_argument("--admin-key-env", default="LAB_GATEWAY_ADMIN_KEY",
                     help="environment variable holding the gateway admin key")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import os
    import shlex
    import sys

    from lab.errors import LabError
    from lab.scale.control_loop import LoopConfig, run_control_loop
    from lab.scale.gateway_sync import GatewaySync
    from lab.scale.local_pool import LocalPool, LocalPoolConfig
    from lab.scale.policy import Bounds, Static
    from lab.scale.reactive import ReactiveConfig, ReactiveThreshold
    from lab.scale.replica_metrics import SignalReader
    from lab.scale.target_tracking import TargetTracking, TargetTrackingConfig

    bounds = Bounds(args.min_replicas, args.max_replicas)
    policy = {"reactive": lambda: ReactiveThreshold(ReactiveConfig(decision_delay_s=args.reactive_delay_s, bounds=bounds)),
              "target": lambda: TargetTracking(TargetTrackingConfig(args.replica_capacity_per_s, bounds=bounds)),
              "static": lambda: Static(args.initial_replicas)}[args.policy]()
    command = tuple(shlex.split(args.command)) if args.command else (
        sys.executable, "-m", "lab", "serve", "--model", "tiny", "--port", "{port}",
        "--max-num-seqs", str(args.replica_slots))
    gateway = None
    if args.gateway_admin:
        key = os.environ.get(args.admin_key_env)
        if not key:
            raise LabError(f"--gateway-admin needs the admin key in ${args.admin_key_env}")
        gateway = GatewaySync(args.gateway_admin, key)

    def show(signals, decision) -> None:
        print(json.dumps({"t_s": round(signals.time_s, 2), "ready": signals.ready_replicas,
                          "starting": signals.starting_replicas, "running": signals.running_requests,
                          "waiting": signals.queue_length, "desired": decision.desired_replicas,
                          "action": decision.action.value, "reason": decision.reason}), flush=True)

    with LocalPool(LocalPoolConfig(command=command)) as pool:
        print(f"lab scale run: replica logs in {pool.log_dir}", file=sys.stderr)
        config = LoopConfig(interval_s=args.interval_s, duration_s=args.duration_s,
                            initial_replicas=args.initial_replicas)
        run_control_loop(pool, policy, SignalReader(args.replica_slots), config, gateway, show)
    return 0
