"""lab.track: records, environment, MLflow logging (flattening, nesting, failures), imports."""

from __future__ import annotations

import json
import math
import os
import tarfile
from pathlib import Path

import pytest

from lab.track.environment import collect_environment
from lab.track.flatten import TRUNCATION_MARKER
from lab.track.importer import import_path
from lab.track.log import MAX_PARAM_VALUE_CHARS, log_record, parent_run
from lab.track.notebook import notebook_context, record_notebook
from lab.track.record import ResultRecord, child_records


def png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n fake plot")
    return path


def sample_record(**overrides) -> ResultRecord:
    fields = dict(
        experiment="01_engine_roofline",
        params={"model": {"layers": 2, "name": "tiny"}, "batch_sizes": [1, 8], "long": "y" * 7000},
        metrics={"tokens_per_s": 1234.5, "mbu_pct": 71},
        environment={"device": "cpu: test cpu", "git_sha": "abc123", "gpu": {"count": 0, "names": []}},
        profile="smoke",
        notebook="01_engine_roofline",
    )
    fields.update(overrides)
    return ResultRecord(**fields)


# --- records ----------------------------------------------------------------------------------
def test_record_round_trips_through_json(tmp_path: Path) -> None:
    record = sample_record(
        metrics={"ok": 1.0, "failed": float("nan"), "inf": float("inf")},
        artifacts=("plot.png",),
        children=child_records("01_engine_roofline", [({"batch": 1}, {"tps": 10.0}), ({"batch": 8}, {"tps": 70.0})]),
    )
    loaded = ResultRecord.load(record.save(tmp_path / "deep" / "record.json"))
    assert loaded.to_dict() == record.to_dict()
    assert math.isnan(loaded.metrics["failed"]) and loaded.metrics["inf"] == float("inf")
    assert [c.params["batch"] for c in loaded.children] == [1, 8]
    assert loaded.record_id == record.record_id and loaded.device == "cpu: test cpu"
    json.loads((tmp_path / "deep" / "record.json").read_text())  # strict JSON: no bare NaN


def test_record_rejects_non_numeric_metrics_and_copies_inputs() -> None:
    import numpy as np

    with pytest.raises(TypeError, match="metric 'label'"):
        ResultRecord("x", {}, {"label": "fast"})
    with pytest.raises(TypeError, match="metric 'ok'"):
        ResultRecord("x", {}, {"ok": True})
    assert ResultRecord("x", {}, {"n": np.int64(3), "f": np.float32(0.5)}).metrics == {"n": 3.0, "f": 0.5}
    params = {"a": 1}
    record = ResultRecord("x", params, {"m": 1})
    params["a"] = 2
    assert record.params == {"a": 1} and isinstance(record.metrics["m"], float)


def test_collect_environment_on_this_machine() -> None:
    import importlib.metadata
    import platform

    env = collect_environment()
    assert env["python"] == platform.python_version()
    assert env["packages"]["mlflow"] == importlib.metadata.version("mlflow")
    assert env["packages"]["torch"] == importlib.metadata.version("torch") == env["torch"]["version"]
    if env["gpu"]["count"] == 0:
        assert env["device"] == f"cpu: {env['cpu_model']}" and env["gpu"]["mig"] == []
    else:
        assert env["device"] == env["gpu"]["names"][0]
    json.dumps(env)  # JSON-ready


# --- MLflow logging ---------------------------------------------------------------------------
def test_log_record_flattens_params_and_logs_metrics_tags_artifacts(tmp_path: Path, client) -> None:
    plot = png(tmp_path / "work" / "plot.png")
    record = sample_record(artifacts=("plot.png",))
    run_id = log_record(record, record_path=tmp_path / "work" / "record.json")

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.layers"] == "2" and run.data.params["model.name"] == "tiny"
    assert run.data.params["batch_sizes"] == "[1, 8]"
    assert len(run.data.params["long"]) == MAX_PARAM_VALUE_CHARS
    assert run.data.params["long"].endswith(TRUNCATION_MARKER)
    assert run.data.metrics == {"tokens_per_s": 1234.5, "mbu_pct": 71.0}
    tags = run.data.tags
    assert tags["lab.device"] == "cpu: test cpu" and tags["lab.git_sha"] == "abc123"
    assert tags["lab.gpu.count"] == "0" and tags["lab.profile"] == "smoke"
    assert tags["lab.record_id"] == record.record_id and tags["lab.kind"] == "record"
    assert {a.path for a in client.list_artifacts(run_id)} == {"record.json", "plot.png"}
    logged = ResultRecord.load(client.download_artifacts(run_id, "record.json", str(tmp_path / "dl")))
    assert logged.to_dict() == record.to_dict()
    assert ResultRecord.load(tmp_path / "work" / "record.json").record_id == record.record_id
    # Artifacts of the sqlite store live next to the database, never in the current directory.
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "01_engine_roofline"
    assert experiment.artifact_location.startswith((tmp_path / "mlruns" / "artifacts").as_uri())
    assert plot.exists()


def test_sweep_children_nest_under_the_record_run_inside_a_parent(client, list_runs) -> None:
    points = child_records("04_predictive_scaling", [({"load": x}, {"p99_ms": 10.0 * x}) for x in (1, 2, 3)])
    with parent_run("sweeps", run_name="grid", params={"grid": "load"}) as parent:
        run_id = log_record(sample_record(experiment="04_predictive_scaling", children=points),
                            parent_run_id=parent.run_id)
    runs = {r.info.run_id: r for r in list_runs()}
    assert runs[parent.run_id].info.status == "FINISHED" and runs[parent.run_id].data.params == {"grid": "load"}
    record_run = runs[run_id]
    assert record_run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert record_run.info.experiment_id == parent.experiment_id  # nested runs share the parent's experiment
    children = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == run_id]
    assert sorted(r.data.metrics["p99_ms"] for r in children) == [10.0, 20.0, 30.0]
    assert {r.data.tags["lab.kind"] for r in children} == {"sweep-point"}
    assert all(r.info.status == "FINISHED" for r in children)


def test_a_failure_while_logging_never_leaves_a_finished_run(client, list_runs) -> None:
    from mlflow.exceptions import MlflowException

    bad_child = ResultRecord("x", {"point": 1}, {"not a valid name!": 1.0})  # MLflow rejects the name
    with pytest.raises(MlflowException):
        with parent_run("sweeps", run_name="grid"):
            log_record(sample_record(children=(bad_child,)), parent_run_id=None)
    runs = list_runs()
    assert len(runs) == 3  # parent, record run, child: all created, none complete
    assert {r.info.status for r in runs} == {"FAILED"}


def test_missing_artifact_is_reported_before_any_run_exists(tmp_path: Path, client, list_runs) -> None:
    with pytest.raises(FileNotFoundError, match="missing.png"):
        log_record(sample_record(artifacts=("missing.png",)), record_path=tmp_path / "record.json")
    assert list_runs() == []


def test_record_notebook_writes_next_to_the_notebook_and_nests_under_the_parent(
    tmp_path: Path, tracking_uri: str, client
) -> None:
    outside_plot = png(tmp_path / "elsewhere" / "curve.png")
    with parent_run("reproduce-smoke", run_name="batch") as parent:
        ctx = notebook_context("00_quickstart", env={
            "LAB_RUN_DIR": str(tmp_path / "run" / "00_quickstart"), "LAB_PROFILE": "smoke",
            "LAB_PARENT_RUN_ID": parent.run_id, "MLFLOW_TRACKING_URI": tracking_uri,
        })
        recorded = record_notebook("00_quickstart", {"SIZE": 8}, {"gflops": 1.5}, artifacts=[outside_plot], context=ctx)
    assert recorded.record_path == (tmp_path / "run" / "00_quickstart" / "record.json").resolve()
    assert (recorded.record_path.parent / "curve.png").is_file()  # copied into the run folder
    saved = ResultRecord.load(recorded.record_path)
    assert saved.artifacts == ("curve.png",) and saved.profile == "smoke" and saved.environment["python"]
    run = client.get_run(recorded.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id and run.data.tags["lab.notebook"] == "00_quickstart"
    assert run.data.metrics == {"gflops": 1.5} and run.info.status == "FINISHED"


def test_notebook_context_without_lab_reproduce_uses_an_adhoc_folder(tmp_path: Path) -> None:
    from lab.paths import ProjectLayout

    ctx = notebook_context("00_quickstart", env={}, layout=ProjectLayout(tmp_path))
    assert ctx.run_dir.parent == (tmp_path / "runs" / "adhoc").resolve() and ctx.run_dir.is_dir()
    assert ctx.parent_run_id is None and ctx.profile is None and ctx.tracking_uri is None


# --- imports ----------------------------------------------------------------------------------
def test_import_a_record_folder_once(tmp_path: Path, client, list_runs) -> None:
    folder = tmp_path / "records"
    png(folder / "a" / "plot.png")
    sample_record(artifacts=("plot.png",)).save(folder / "a" / "record.json")
    sample_record(experiment="03_baseline_vs_fullpower", artifacts=("gone.png",)).save(folder / "b.json")
    (folder / "notes.json").write_text('{"not": "a record"}')

    first = import_path(folder)
    assert len(first.imported) == 2 and first.skipped == []
    assert any("notes.json" in w for w in first.warnings) and any("gone.png" in w for w in first.warnings)
    second = import_path(folder)
    assert second.imported == [] and len(second.skipped) == 2
    runs = list_runs()
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    with_plot = next(r for r in runs if r.data.tags["lab.experiment"] == "01_engine_roofline")
    assert {a.path for a in client.list_artifacts(with_plot.info.run_id)} == {"record.json", "plot.png"}


def _write_file_store(root: Path, plot: Path) -> dict[str, str]:
    """A real MLflow file store like the GPU machine writes: a parent, a nested child, a failed run."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    source = MlflowClient(tracking_uri=root.as_uri())
    experiment_id = source.create_experiment("03_baseline_vs_fullpower")
    parent = source.create_run(experiment_id, run_name="gpu batch", start_time=1_700_000_000_000)
    child = source.create_run(experiment_id, run_name="point", tags={"mlflow.parentRunId": parent.info.run_id,
                                                                      "lab.device": "NVIDIA H100 80GB HBM3"})
    failed = source.create_run(experiment_id, run_name="crashed")
    source.log_param(child.info.run_id, "batch_size", "64")
    source.log_batch(child.info.run_id, metrics=[Metric("fullpower_qps", 100.0 * s, 1_700_000_000_000 + s, s)
                                                 for s in range(3)])
    source.log_artifact(child.info.run_id, str(plot))
    source.set_terminated(parent.info.run_id, end_time=1_700_000_100_000)
    source.set_terminated(child.info.run_id)
    source.set_terminated(failed.info.run_id, status="FAILED")
    return {"parent": parent.info.run_id, "child": child.info.run_id, "failed": failed.info.run_id}


def test_import_a_tarball_of_a_file_store_once(
    tmp_path: Path, client, monkeypatch: pytest.MonkeyPatch, list_runs
) -> None:
    import shutil

    from lab.cli import main

    store = tmp_path / "gpu-machine" / "mlruns"
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    ids = _write_file_store(store, png(tmp_path / "qps.png"))
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    archive = tmp_path / "gpu-runs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(store, arcname="mlruns")
    shutil.rmtree(tmp_path / "gpu-machine")  # artifacts must come from the archive, not the old path

    assert main(["track", "import", str(archive)]) == 0
    assert main(["track", "import", str(archive)]) == 0  # second import: nothing new
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ

    imported = list_runs()
    assert len(imported) == 3  # each source run exactly once, after two imports
    runs = {r.data.tags["lab.source_run_id"]: r for r in imported}
    assert set(runs) == set(ids.values())
    parent, child, failed = runs[ids["parent"]], runs[ids["child"]], runs[ids["failed"]]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id  # nesting remapped to local ids
    assert child.data.params == {"batch_size": "64"} and child.data.tags["lab.device"] == "NVIDIA H100 80GB HBM3"
    history = client.get_metric_history(child.info.run_id, "fullpower_qps")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.0), (1, 100.0), (2, 200.0)]
    assert [a.path for a in client.list_artifacts(child.info.run_id)] == ["qps.png"]
    assert (parent.info.status, child.info.status, failed.info.status) == ("FINISHED", "FINISHED", "FAILED")
    assert (parent.info.start_time, parent.info.end_time) == (1_700_000_000_000, 1_700_000_100_000)
    assert parent.info.run_name == "gpu batch"


# --- code provenance --------------------------------------------------------------------------
def git(repo: Path, *args: str) -> str:
    import subprocess

    done = subprocess.run(["git", "-c", "user.name=lab", "-c", "user.email=lab@example.com", *args], cwd=repo,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A real git repository with one commit: lab/model.py, notebooks/n.ipynb, and an ignored folder."""
    root = tmp_path / "repo"
    (root / "lab").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "lab" / "model.py").write_text("SCALE = 1\n")
    (root / "notebooks" / "n.ipynb").write_text("{}\n")
    (root / ".gitignore").write_text("runs/\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root


def test_a_clean_commit_is_named_by_its_sha_alone(repo: Path) -> None:
    from lab.track.code_state import code_state

    state = code_state(repo, env={})
    assert state.sha == git(repo, "rev-parse", "HEAD") and state.dirty is False
    assert (state.diff, state.diff_sha256, dict(state.untracked), state.unavailable_reason) == (b"", None, {}, None)


def test_a_dirty_tree_is_named_by_its_diff_which_recreates_it(repo: Path, tmp_path: Path) -> None:
    import hashlib

    from lab.track.code_state import code_state

    (repo / "lab" / "model.py").write_text("SCALE = 2\n")
    (repo / "lab" / "new.py").write_text("NEW = True\n")  # untracked code
    (repo / "runs").mkdir()
    (repo / "runs" / "out.txt").write_text("ignored")
    (repo / "notes.txt").write_text("untracked, but outside the code folders")
    state = code_state(repo, env={})
    assert state.dirty is True and state.diff_sha256 == hashlib.sha256(state.diff).hexdigest()
    assert dict(state.untracked) == {"lab/new.py": hashlib.sha256(b"NEW = True\n").hexdigest()}
    # The diff is the exact change: applied to a clean checkout of the commit it gives the dirty file back.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    (tmp_path / "code.diff").write_bytes(state.diff)
    git(clone, "apply", str(tmp_path / "code.diff"))
    assert (clone / "lab" / "model.py").read_text() == "SCALE = 2\n"


def test_without_git_the_record_says_why_or_takes_the_copier_s_sha(tmp_path: Path, monkeypatch) -> None:
    from lab.track.code_state import code_state

    plain = tmp_path / "copied-tree"
    plain.mkdir()
    state = code_state(plain, env={})
    assert (state.sha, state.dirty, state.source) == (None, None, None)
    assert "not inside a git work tree" in state.unavailable_reason
    copied = code_state(plain, env={"LAB_GIT_SHA": "abc123", "LAB_GIT_DIFF_SHA256": "f00d"})
    assert (copied.sha, copied.dirty, copied.diff_sha256, copied.source) == ("abc123", True, "f00d", "LAB_GIT_SHA")
    assert code_state(plain, env={"LAB_GIT_SHA": "abc123"}).dirty is False  # no diff hash: the commit exactly
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q")  # the quickstart's record: made before the repository's first commit
    assert code_state(fresh, env={}).unavailable_reason == "the repository has no commit yet (HEAD does not resolve)"
    monkeypatch.setenv("PATH", str(tmp_path / "no-binaries"))
    assert code_state(fresh, env={}).unavailable_reason == "git is not installed"


def test_a_record_of_a_dirty_tree_writes_and_logs_its_diff(repo: Path, tmp_path: Path, client) -> None:
    import hashlib

    (repo / "lab" / "model.py").write_text("SCALE = 3\n")
    env = collect_environment(repo)
    record = sample_record(environment=env)
    run_id = log_record(record, record_path=tmp_path / "run" / "record.json")

    written = (tmp_path / "run" / "code.diff").read_bytes()
    assert written == env.code_diff and hashlib.sha256(written).hexdigest() == env["git_diff_sha256"]
    assert b"+SCALE = 3" in written and "code.diff" not in record.to_json()
    assert {a.path for a in client.list_artifacts(run_id)} == {"record.json", "code.diff"}
    logged = client.download_artifacts(run_id, "code.diff", str(tmp_path / "dl"))
    assert Path(logged).read_bytes() == written
    assert client.get_run(run_id).data.tags["lab.git_diff_sha256"] == env["git_diff_sha256"]
    assert ResultRecord.load(tmp_path / "run" / "record.json").code_diff == written
    (tmp_path / "run" / "code.diff").write_bytes(b"another run's diff")
    assert ResultRecord.load(tmp_path / "run" / "record.json").code_diff is None  # only the diff it names


def test_a_name_becomes_a_metric_prefix_without_separators() -> None:
    from lab.track.flatten import metric_prefix

    assert metric_prefix("r1-distill-qwen-1.5b") == "r1_distill_qwen_1_5b"
    assert metric_prefix("disk:r1-distill-qwen-1.5b/default") == "disk_r1_distill_qwen_1_5b_default"
    assert metric_prefix("tiny") == "tiny"
