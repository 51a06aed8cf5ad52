"""`lab notebooks`: JupyterLab on the project's `notebooks/`, bound to 127.0.0.1 only.

Contract: `jupyter_command(notebooks_dir, port, as_root, extra)` is the JupyterLab command line (this
interpreter's jupyterlab, so kernels see the same `lab` package): listen on 127.0.0.1:PORT only, fail
rather than drift to another port when PORT is taken (the printed URL stays true), serve
`notebooks_dir`, then `extra` (what followed `--`) so a user's own options come last and win.
Jupyter refuses to start as root (containers, cloud GPU machines) unless told `--allow-root`; the
command adds it only when `as_root`, and `lab notebooks` says so. The login token comes from
`$JUPYTER_TOKEN` when set, else a fresh random one, passed in the environment (not on the command line,
where `ps` shows it) so the printed URL opens the lab directly. `lab notebooks` replaces its own
process with Jupyter's, so Ctrl-C and kill signals reach Jupyter directly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

HOST = "127.0.0.1"  # the lab's services never listen beyond this machine


def jupyter_command(notebooks_dir: Path, port: int, as_root: bool, extra: Sequence[str] = ()) -> list[str]:
    command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.ip={HOST}", f"--ServerApp.port={port}",
               "--ServerApp.port_retries=0", f"--ServerApp.root_dir={notebooks_dir}"]
    if as_root:
        command.append("--allow-root")
    return [*command, *extra]


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "notebooks",
        help="run JupyterLab on notebooks/ at 127.0.0.1",
        description=f"Start JupyterLab on the project's notebooks/ at http://{HOST}:PORT (Ctrl-C stops it). "
                    "As root, --allow-root is passed to Jupyter, which refuses root otherwise. Options after "
                    "`--` go to Jupyter as they are, e.g. `lab notebooks -- --no-browser`.",
    )
    parser.add_argument("--port", type=int, default=8888, help="port to listen on (default: 8888)")
    parser.add_argument("--print-command", action="store_true",
                        help="print the jupyter command instead of running it")
    parser.add_argument("jupyter_args", nargs="*", metavar="-- JUPYTER_ARG",
                        help="passed to JupyterLab after the lab's own options")
    parser.set_defaults(handler=_notebooks)


def _notebooks(args: argparse.Namespace) -> int:
    import importlib.util
    import secrets
    import shlex

    from lab.errors import LabError
    from lab.paths import ProjectLayout

    notebooks_dir = ProjectLayout.discover().notebooks_dir
    as_root = running_as_root()
    command = jupyter_command(notebooks_dir, args.port, as_root, args.jupyter_args)
    if args.print_command:
        print(shlex.join(command))
        return 0
    if importlib.util.find_spec("jupyterlab") is None:
        raise LabError(f"jupyterlab is not installed in {sys.executable}; `make venv` (or "
                       "`pip install -e .`) installs it")
    if not notebooks_dir.is_dir():
        raise LabError(f"no notebooks folder at {notebooks_dir}")
    token = os.environ.get("JUPYTER_TOKEN") or secrets.token_hex(24)
    if as_root:
        print("lab notebooks: running as root, so Jupyter gets --allow-root (it refuses to start as root otherwise)")
    print(f"JupyterLab: http://{HOST}:{args.port}/lab?token={token}  (notebooks: {notebooks_dir})", flush=True)
    os.execve(command[0], command, {**os.environ, "JUPYTER_TOKEN": token})
    return 0  # not reached
