"""The `lab` command line: one subcommand per module, collected here.

Contract: every module in `COMMAND_MODULES` exposes `register(subparsers)`, which adds its
subcommand parser and sets `handler=<function(args) -> exit code>` as a default. Adding a command
(`lab serve`, `lab gateway`, `lab up`, `lab bench`, `lab scale` in later issues) is one new module
plus one line here; nothing else changes. Command modules import only argparse-level code at the
top and the heavy libraries (torch, mlflow, papermill) inside their handlers, so `lab --help`
stays fast. A `LabError` from a handler is printed as `lab: error: ...` with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from lab.errors import LabError

COMMAND_MODULES: tuple[str, ...] = (
    "lab.reproduce.cli",  # lab reproduce: run a profile's notebooks through papermill
    "lab.report.cli",  # lab report: reports/index.{html,md} and the claims table
    "lab.track.cli",  # lab track import|list: the MLflow store
    "lab.track.ui",  # lab ui: the MLflow UI on 127.0.0.1
    "lab.scale.cli",  # lab scale simulate: the fleet simulator and scaling policies
    "lab.server.cli",  # lab serve: one OpenAI-compatible engine replica
    "lab.bench.cli",  # lab bench serve: load-test any OpenAI-compatible endpoint
    "lab.gateway.cli",  # lab gateway: the QoS gateway in front of OpenAI-compatible replicas
    # Later issues register here, each from its own module (e.g. "lab.up" -> lab up).
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lab",
        description="Reproducible performance lab for serving DeepSeek models.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except LabError as error:
        print(f"lab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
