"""`lab track list` on a real sqlite MLflow store: MLflow's own answer, names whole, and no mlflow import."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from lab.track.listing import _mlflow_runs, format_table, recent_runs
from lab.track.store import TAG_DEVICE, TAG_PROFILE

LONG = "03_baseline_vs_fullpower-gpu-h200-20250919-172300-with-a-name-longer-than-any-column-was"


@pytest.fixture
def store(client, tracking_uri: str) -> str:
    """Runs in two experiments with long names; a deleted run and a deleted experiment that must not show."""
    first = client.create_experiment("03_baseline_vs_fullpower_an_experiment_name_of_fifty_characters")
    second = client.create_experiment("04_predictive_scaling")
    gone = client.create_experiment("gone")
    for i in range(4):
        run = client.create_run(first if i % 2 else second, run_name=f"{LONG}-{i}", start_time=1_700_000_000_000 + i,
                                tags={TAG_PROFILE: "gpu", TAG_DEVICE: "NVIDIA H200 (141 GB), driver 570.86"})
        client.set_terminated(run.info.run_id)
    client.create_run(first, run_name="same-start-a", start_time=1_700_000_000_002)  # ties break on run id
    client.create_run(second, run_name="untagged")  # start time: now
    client.delete_run(client.create_run(first, run_name="deleted-run").info.run_id)
    client.create_run(gone, run_name="in-a-deleted-experiment")
    client.delete_experiment(gone)
    return tracking_uri


def test_sqlite_listing_is_what_mlflow_returns(store: str) -> None:
    for limit in (1, 3, 20):
        assert recent_runs(store, limit) == _mlflow_runs(store, limit)
    rows = recent_runs(store, 20)
    assert len(rows) == 6 and rows[0].run_name == "untagged" and rows[0].profile == "-"
    assert {"deleted-run", "in-a-deleted-experiment"}.isdisjoint(r.run_name for r in rows)


def test_names_are_printed_whole_in_aligned_columns(store: str) -> None:
    lines = format_table(recent_runs(store, 20))
    column = lines[0].index("run ")
    for line, row in zip(lines[1:], recent_runs(store, 20)):
        assert line[column:].startswith(row.run_name + "  ")  # the whole name, at the column's start
    assert any(f"{LONG}-3" in line and "NVIDIA H200 (141 GB), driver 570.86" in line for line in lines)


def test_a_missing_store_lists_nothing_and_creates_nothing(tmp_path) -> None:
    db = tmp_path / "nowhere" / "mlflow.db"
    assert recent_runs(f"sqlite:///{db}", 20) == [] and not db.parent.exists()


def test_lab_track_list_answers_without_importing_mlflow(store: str) -> None:
    code = ("import sys, time; start = time.perf_counter(); from lab.cli import main; "
            f"code = main(['track', 'list', '--tracking-uri', {store!r}]); "
            "print('mlflow imported:', 'mlflow' in sys.modules, 'seconds:', time.perf_counter() - start); "
            "sys.exit(code)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    wall_s = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    assert "mlflow imported: False" in done.stdout  # importing mlflow alone takes 5-10 s
    assert f"{LONG}-3" in done.stdout and "03_baseline_vs_fullpower_an_experiment_name_of_fifty_characters" in done.stdout
    assert wall_s < 10, f"lab track list took {wall_s:.1f} s"  # ~0.2 s; generous for a loaded CI machine
