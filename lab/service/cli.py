"""`lab up` and `lab down`: a whole local service from one YAML, in the foreground or detached.

    lab up --config deploy/service.example.yaml            # foreground: Ctrl-C or SIGTERM stops everything
    lab up --config deploy/service.example.yaml --detach   # returns once ready; the supervisor stays
    lab down --config deploy/service.example.yaml          # or: lab down --state runs/up/<name>/state.json

Contract: `register(subparsers)` adds both commands (see lab/cli.py); only argparse is imported at the top.
`lab up` prints the URLs once the service is ready, then (in the foreground) one line per supervisor event
(an exit, a restart, a return to ready) until SIGINT or SIGTERM, when it stops the gateway, the replicas
and Prometheus in that order and exits 0. A second signal during that stop is ignored, so the stop
finishes. Bad YAML, a busy port, a missing binary or a replica that fails to become ready are `LabError`s
(`lab: error: ...`, exit 2), the last with the replica's log tail.
"""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    up = subparsers.add_parser(
        "up", help="run a whole local service from one YAML: replicas, the gateway, a real Prometheus",
        description="Start the replicas (lab serve or any OpenAI-compatible command), the gateway in front of them "
                    "and a Prometheus server scraping both with the alert rules loaded, on free ports of 127.0.0.1; "
                    "supervise them (restart on failure) until Ctrl-C, SIGTERM or `lab down`.")
    up.add_argument("--config", required=True, help="service YAML (see deploy/service.example.yaml)")
    up.add_argument("--detach", action="store_true",
                    help="leave it running under a supervising process and return once ready (stop: lab down)")
    up.set_defaults(handler=_up)
    down = subparsers.add_parser("down", help="stop a service that `lab up` started",
                                 description="Stop the service of a YAML (or of a state.json): gateway, replicas "
                                             "(they drain), Prometheus; leftovers of a killed supervisor too.")
    which = down.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", help="the service YAML given to lab up")
    which.add_argument("--state", help="the service's state.json (in its log_dir)")
    down.add_argument("--timeout-s", type=float, default=120.0,
                      help="longest wait for the supervisor to stop everything (default: 120)")
    down.set_defaults(handler=_down)


def _print_ready(state: Any) -> None:
    print(f"lab up: service {state.service!r} ready; logs and state.json in {state.log_dir}", flush=True)
    if state.gateway_url:
        print(f"  gateway     {state.gateway_url}", flush=True)
    if state.prometheus_url:
        print(f"  prometheus  {state.prometheus_url}  (alerts: {state.prometheus_url}/alerts)", flush=True)
    for p in state.processes:
        if p.kind == "replica":
            via = {"proxy": f", via fault proxy {p.route_url} (control {p.proxy_control_url})",
                   "netns": f", in network namespace {p.namespace}"}.get(p.network or "direct", "")
            print(f"  replica     {p.url}  {p.name} ({p.version}, pid {p.pid}{via})", flush=True)


def _up(args: argparse.Namespace) -> int:
    from lab.service.load import load_spec

    spec = load_spec(args.config)
    if args.detach:
        from lab.service.daemon import start_detached

        state = start_detached(spec)
        _print_ready(state)
        print(f"stop it with: lab down --config {args.config}", flush=True)
        return 0
    return _foreground(spec, args.config)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends the supervisor the way Ctrl-C does: through stop()


def _foreground(spec: Any, config: str) -> int:
    from lab.service.supervisor import Service

    service = Service(spec, supervisor="lab up")
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        service.start()  # on any failure (a signal too) it has stopped what it started before it raises
        _print_ready(service.state())
        print(f"Ctrl-C here (or lab down --config {config}) stops everything.", flush=True)
        shown = max((e.time for e in service.state().events), default=0.0)
        while True:
            time.sleep(0.5)
            for event in service.state().events:
                if event.time > shown:  # by time, not index: the event list keeps only the last ones
                    print(f"  {event.process}: {event.event} {event.detail}".rstrip(), flush=True)
                    shown = event.time
    except KeyboardInterrupt:
        if service.status == "failed":
            return 130  # interrupted while starting
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # let the stop finish: a second Ctrl-C would leave processes
        if service.status not in ("failed", "stopped"):
            print(f"lab up: stopping {spec.name!r}", flush=True)
            service.stop()
            print("lab up: stopped", flush=True)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return 0


def _down(args: argparse.Namespace) -> int:
    from lab.service.daemon import stop_service
    from lab.service.load import load_spec
    from lab.service.state import STATE_FILE, read_state

    state_path = Path(args.state) if args.state else load_spec(args.config).resolved_log_dir / STATE_FILE
    state = read_state(state_path)
    left = stop_service(state_path, args.timeout_s)
    final = read_state(state_path)
    print(f"lab down: service {state.service!r} {final.status}"
          + (f"; ended {len(left)} leftover process(es): {left}" if left else ""), flush=True)
    return 0
