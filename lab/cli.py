"""The `lab` command line: one subcommand per module, collected here.

Contract: every module in `COMMAND_MODULES` exposes `register(subparsers)`, which adds its
subcommand parser and sets `handler=<function(args) -> exit code>` as a default; a command with
subcommands of its own returns their subparsers. A study that a product command runs
(`lab bench offline`, `lab gateway bench-latency`), or a product whose command sits under another's
(`lab bench comm`), registers under that command from its own module (`NESTED_COMMANDS`), so no product
package imports a study or another product. Adding a command is one new
module plus one line here; nothing else changes. Command modules import only argparse-level code at the
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
    "lab.report.cli",  # lab report: the claims table and every notebook's latest run (runs/report/)
    "lab.track.cli",  # lab track import|list: the MLflow store
    "lab.track.ui",  # lab ui: the MLflow UI on 127.0.0.1
    "lab.scale.cli",  # lab scale simulate: the fleet simulator and scaling policies
    "lab.server.cli",  # lab serve: one OpenAI-compatible engine replica
    "lab.bench.cli",  # lab bench serve: load-test any OpenAI-compatible endpoint; lab bench coldstart
    "lab.gateway.cli",  # lab gateway: the QoS gateway in front of OpenAI-compatible replicas
    "lab.notebooks_cli",  # lab notebooks: JupyterLab on notebooks/ at 127.0.0.1 (--allow-root as root)
    "lab.service.cli",  # lab up / lab down: replicas, gateway and Prometheus from one YAML, supervised
    "lab.gpu.mig_cli",  # lab mig show|plan: MIG inventory (read-only) and the nvidia-smi lines for a layout
    # Later issues register here, each from its own module (e.g. "lab.up" -> lab up).
)
# (product command, module whose `register(command_subparsers)` adds a subcommand under it)
NESTED_COMMANDS: tuple[tuple[str, str], ...] = (
    ("bench", "lab.studies.roofline.cli"),  # lab bench offline: the engine against its roofline
    ("bench", "lab.comm.cli"),  # lab bench comm: collective bandwidth and latency (nccl-tests style), NCCL knobs
    ("gateway", "lab.studies.gateway_latency.cli"),  # lab gateway bench-latency: what the gateway adds
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lab",
        description="Reproducible performance lab for serving DeepSeek models.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    nested = {}
    for module_name in COMMAND_MODULES:
        commands = importlib.import_module(module_name).register(subparsers)
        if commands is not None:
            nested[module_name.split(".")[1]] = commands
    for command, module_name in NESTED_COMMANDS:
        importlib.import_module(module_name).register(nested[command])
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
