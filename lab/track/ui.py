"""`lab ui`: the MLflow UI for the lab's store, bound to 127.0.0.1 only.

Contract: `ui_command(tracking_uri, port)` is the `mlflow server` command line that serves the
same store `lab.track` writes to (`--backend-store-uri`), with new experiments' artifacts in the
same place `lab.track` puts them (`--default-artifact-root`, for sqlite stores). `lab ui` runs it
in the foreground (it replaces the `lab` process) with this interpreter's mlflow until interrupted.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from lab.track.cli import add_tracking_uri_option

HOST = "127.0.0.1"  # the lab's services never listen beyond this machine


def ui_command(tracking_uri: str | None = None, port: int = 5000) -> list[str]:
    from lab.track.store import artifact_root_for, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
               "--host", HOST, "--port", str(port), "--workers", "1"]  # one user: one worker is plenty
    root = artifact_root_for(uri)
    if root is not None:
        # New experiments and proxied uploads go where lab.track puts artifacts, never ./mlartifacts.
        command += ["--default-artifact-root", root, "--artifacts-destination", root]
    return command


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ui",
        help="run the MLflow UI on 127.0.0.1",
        description=f"Serve the MLflow UI for the lab's store at http://{HOST}:PORT (Ctrl-C stops it).",
    )
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (default: 5000)")
    add_tracking_uri_option(parser)
    parser.add_argument("--print-command", action="store_true", help="print the mlflow command instead of running it")
    parser.set_defaults(handler=_ui)


def _ui(args: argparse.Namespace) -> int:
    command = ui_command(args.tracking_uri, args.port)
    if args.print_command:
        print(shlex.join(command))
        return 0
    from lab.track.store import resolve_tracking_uri, sqlite_path

    uri = resolve_tracking_uri(args.tracking_uri)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)  # mlflow creates the database, not its folder
    print(f"MLflow UI: http://{HOST}:{args.port}  (store: {uri})", flush=True)
    # Become the server process, so Ctrl-C and kill signals reach mlflow and its workers directly.
    os.execv(command[0], command)
    return 0  # not reached
