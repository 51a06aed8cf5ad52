"""The `lab` command line: every subcommand documents itself, stays light, runs on 127.0.0.1."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from lab.cli import COMMAND_MODULES, build_parser, main

SUBCOMMANDS = [[], ["reproduce"], ["report"], ["track"], ["track", "import"], ["track", "list"], ["ui"], ["notebooks"], ["up"], ["down"], ["bench", "offline"], ["bench", "comm"], ["gateway", "bench-latency"]]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w) or "lab")
def test_every_subcommand_has_help(words: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "lab", *words, "--help"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: lab {' '.join(words)}".rstrip())


def test_cli_import_stays_light() -> None:
    heavy = "{'torch', 'mlflow', 'papermill', 'matplotlib'}"
    code = f"import sys, lab.cli; lab.cli.build_parser(); print(sorted({heavy} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_every_command_module_registers_a_subcommand() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    assert {"reproduce", "report", "track", "ui"} <= set(commands)
    for name in COMMAND_MODULES:
        assert callable(importlib.import_module(name).register)


def test_ui_serves_the_lab_store_on_localhost(isolated_tracking: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["ui", "--port", "5123", "--print-command"]) == 0
    command = capsys.readouterr().out.split()
    assert command[command.index("--host") + 1] == "127.0.0.1" and command[command.index("--port") + 1] == "5123"
    assert command[command.index("--backend-store-uri") + 1] == isolated_tracking
    db = Path(isolated_tracking.removeprefix("sqlite:///"))
    artifacts = (db.parent / "artifacts").as_uri()
    assert command[command.index("--default-artifact-root") + 1] == artifacts
    assert command[command.index("--artifacts-destination") + 1] == artifacts
    assert not db.parent.exists()  # printing the command creates nothing


def test_track_list_shows_logged_runs(tracking_uri: str, capsys: pytest.CaptureFixture) -> None:
    from lab.track.log import log_record
    from lab.track.record import ResultRecord

    log_record(ResultRecord("00_quickstart", {}, {"m": 1.0}, {"device": "cpu: x"}, profile="smoke"))
    assert main(["track", "list"]) == 0
    out = capsys.readouterr().out
    assert "00_quickstart [smoke]" in out and "FINISHED" in out and "cpu: x" in out


def test_a_usage_error_exits_2_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["track", "import", str(tmp_path / "missing.tar.gz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lab: error: nothing to import") and "Traceback" not in err
