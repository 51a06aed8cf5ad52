"""`lab reproduce`: run every notebook of a profile through papermill and log it to MLflow.

Contract: validates the profile, `--only` names and `-p` parameters first (nothing runs and no
MLflow run exists when they are wrong: exit 2 naming the valid choices), then executes the plan
(`lab.reproduce.runner`) into `--run-dir` (default `runs/<profile>-<timestamp>/`). Exit 0 when
every notebook succeeded, 1 naming the failing notebook and cell otherwise. Without `--profile`
the profile is `gpu` when a CUDA GPU is present, else `smoke`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab.track.cli import add_tracking_uri_option


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="run a profile's notebooks (papermill) and log them to MLflow",
        description="Execute the notebooks of experiments/<PROFILE>.yaml with their parameters, "
        "write executed notebooks to runs/<profile>-<timestamp>/ and group their MLflow runs under "
        "one parent run.",
    )
    parser.add_argument("--profile", help="profile name (default: gpu when a CUDA GPU is present, else smoke)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this notebook of the profile (repeatable, or comma-separated)")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE", dest="parameters",
                        help="override a notebook parameter; VALUE is a YAML literal (1, 0.5, true, text)")
    add_tracking_uri_option(parser)
    parser.add_argument("--run-dir", type=Path,
                        help="folder for executed notebooks and records (default: runs/<profile>-<timestamp>)")
    parser.add_argument("--experiments-dir", type=Path,
                        help="folder of profile YAML files (default: <root>/experiments)")
    parser.add_argument("--notebooks-dir", type=Path, help="folder of notebooks (default: <root>/notebooks)")
    parser.add_argument("--list", action="store_true", help="list profiles and their notebooks, then exit")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(handler=_reproduce)


def default_profile() -> str:
    from lab.gpu.nvml import cuda_gpu_present

    return "gpu" if cuda_gpu_present() else "smoke"


def _list(experiments_dir: Path, notebooks_dir: Path) -> int:
    from lab.reproduce.profile import available_profiles, load_profile

    for name in available_profiles(experiments_dir):
        profile = load_profile(name, experiments_dir, notebooks_dir)
        print(f"{name}: {profile.description}")
        for spec in profile.notebooks:
            params = ", ".join(f"{k}={v!r}" for k, v in spec.parameters.items())
            print(f"  {spec.name}" + (f"  ({params})" if params else ""))
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from lab.paths import ProjectLayout, timestamp_slug
    from lab.reproduce.plan import parse_overrides, plan_profile
    from lab.reproduce.profile import load_profile
    from lab.track.store import resolve_tracking_uri

    layout = ProjectLayout.discover()
    experiments_dir = args.experiments_dir or layout.experiments_dir
    notebooks_dir = args.notebooks_dir or layout.notebooks_dir
    if args.list:
        return _list(experiments_dir, notebooks_dir)
    # Validate everything before any run is created or any kernel starts.
    profile = load_profile(args.profile or default_profile(), experiments_dir, notebooks_dir)
    only = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
    plan = plan_profile(profile, only, parse_overrides(args.parameters))
    run_dir = args.run_dir or _fresh_dir(layout.runs_dir, f"{profile.name}-{timestamp_slug()}")
    tracking_uri = resolve_tracking_uri(args.tracking_uri)

    from lab.reproduce.runner import reproduce

    print(f"profile {profile.name}: {len(plan.runs)} notebook(s) -> {run_dir}  (store: {tracking_uri})")
    result = reproduce(plan, run_dir.resolve(), tracking_uri, progress=not args.no_progress)
    for outcome in result.outcomes:
        print(f"ok  {outcome.notebook}  {outcome.elapsed_s:.1f}s  run {outcome.run_id}")
    if result.failure is not None:
        print(f"lab reproduce: {result.failure.message()}", file=sys.stderr)
        print(f"  parent MLflow run {result.parent_run_id} marked FAILED", file=sys.stderr)
        return 1
    print(f"parent MLflow run {result.parent_run_id} FINISHED; executed notebooks in {result.run_dir}")
    return 0


def _fresh_dir(parent: Path, name: str) -> Path:
    candidate, suffix = parent / name, 1
    while candidate.exists():  # two runs in the same second must not share a folder
        candidate, suffix = parent / f"{name}-{suffix}", suffix + 1
    return candidate
