"""`lab track`: manage the MLflow store (`import` results from elsewhere, `list` runs).

Contract: `register(subparsers)` adds `lab track import PATH...` (see `lab.track.importer`) and
`lab track list`; both take `--tracking-uri` (default: `MLFLOW_TRACKING_URI`, else the project's
sqlite store). `lab track list` reads a sqlite store without importing mlflow (`lab.track.listing`), so
it answers in a fraction of a second, and prints names whole.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lab.errors import LabError


def add_tracking_uri_option(parser: argparse.ArgumentParser) -> None:
    """The one `--tracking-uri` option every command that touches the store shares."""
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<root>/mlruns/mlflow.db)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("track", help="manage the MLflow store (import, list)",
                                   description="Manage the lab's MLflow tracking store.")
    commands = parser.add_subparsers(dest="track_command", metavar="SUBCOMMAND", required=True)

    importer = commands.add_parser(
        "import",
        help="import records or a tarball of an MLflow file store",
        description="Re-log result records (a .json file or a folder of them) or the runs of an "
        "MLflow file store (a .tar/.tar.gz of mlruns/, e.g. from a GPU machine) into the local "
        "store. Already imported runs are skipped.",
    )
    importer.add_argument("paths", nargs="+", metavar="PATH", help="record .json, folder, or .tar/.tar.gz")
    add_tracking_uri_option(importer)
    importer.set_defaults(handler=_import)

    lister = commands.add_parser("list", help="list recent runs", description="List the most recent runs.")
    add_tracking_uri_option(lister)
    lister.add_argument("--limit", type=int, default=20, help="how many runs to show (default: 20)")
    lister.set_defaults(handler=_list)


def _import(args: argparse.Namespace) -> int:
    from lab.track.importer import import_path
    from lab.track.store import TrackingStore

    missing = [path for path in args.paths if not Path(path).exists()]
    if missing:  # checked before opening the store, which would create an empty one
        raise LabError(f"nothing to import: {', '.join(missing)} does not exist")
    store = TrackingStore.open(args.tracking_uri)
    for path in args.paths:
        summary = import_path(path, store=store)
        for warning in summary.warnings:
            print(f"warning: {warning}")
        print(f"{path}: imported {len(summary.imported)} run(s), skipped {len(summary.skipped)} already present")
    print(f"store: {store.uri}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from lab.track.listing import format_table, recent_runs
    from lab.track.store import resolve_tracking_uri

    if args.limit < 1:
        raise LabError(f"--limit must be at least 1, got {args.limit}")
    uri = resolve_tracking_uri(args.tracking_uri)
    rows = recent_runs(uri, args.limit)
    if not rows:
        print(f"(no runs in {uri})")
        return 0
    for line in format_table(rows):
        print(line)
    return 0
