"""lab reproduce: profiles run through papermill into MLflow; mistakes fail early and clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from lab.cli import main
from lab.paths import ProjectLayout
from lab.reproduce.plan import parse_overrides
from lab.reproduce.profile import load_profile
from lab.track.flatten import as_text, flatten
from tests.scheduling import NETWORK_NAMESPACES

LAYOUT = ProjectLayout.discover()
# Notebook 09 runs a drill (network namespaces); the smoke profile takes about ten minutes on 2 cores.
pytestmark = [NETWORK_NAMESPACES, pytest.mark.long_running(600)]


def write_notebook(path: Path, *cells: str, parameters: str = "") -> Path:
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    if parameters:
        nb.cells.insert(0, new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, migrated_sqlite: Path):
    """`lab reproduce --profile smoke` once for the module, into its own store and run folder."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("smoke")
    shutil.copy(migrated_sqlite, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        for name in ("LAB_RUN_DIR", "LAB_PROFILE", "LAB_PARENT_RUN_ID", "LAB_NOTEBOOK"):
            patch.delenv(name, raising=False)
        code = main(["reproduce", "--profile", "smoke", "--tracking-uri", uri,
                     "--run-dir", str(root / "run"), "--no-progress"])
    client = MlflowClient(tracking_uri=uri)
    runs = list(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    return code, root / "run", client, runs


def test_smoke_profile_executes_every_notebook_and_records_its_metrics(smoke_run) -> None:
    code, run_dir, client, runs = smoke_run
    assert code == 0
    profile = load_profile("smoke", LAYOUT.experiments_dir, LAYOUT.notebooks_dir)
    (parent,) = [r for r in runs if r.data.tags.get("lab.kind") == "reproduce"]
    assert parent.info.status == "FINISHED" and parent.data.tags["lab.profile"] == "smoke"
    assert parent.data.params["notebooks"] == ",".join(profile.notebook_names)
    for spec in profile.notebooks:
        (child,) = [r for r in runs if r.data.tags.get("lab.notebook") == spec.name]
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["lab.profile"] == "smoke"
        for metric in spec.expect_metrics:
            assert child.data.metrics[metric] == child.data.metrics[metric]  # present and not NaN
        for name, value in flatten(spec.parameters).items():
            # the profile's values reached the notebook, logged as MLflow stores them (dotted keys, lists as JSON)
            assert child.data.params[name] == as_text(value, limit=6000)
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert "record.json" in artifacts and "notebook" in artifacts
        assert [a.path for a in client.list_artifacts(child.info.run_id, "notebook")] == [
            f"notebook/{spec.name}.ipynb"
        ]
        # The record JSON lies next to the executed notebook.
        assert (run_dir / spec.name / f"{spec.name}.ipynb").is_file()
        assert (run_dir / spec.name / "record.json").is_file()


def test_quickstart_measures_a_real_load(smoke_run) -> None:
    _, run_dir, client, runs = smoke_run
    (run,) = [r for r in runs if r.data.tags.get("lab.notebook") == "00_quickstart"]
    metrics = run.data.metrics
    assert metrics["samples"] >= 1
    assert 0.0 <= metrics["cpu_util_mean_pct"] <= 100.0
    assert metrics["matmul_gflops"] > 0 and metrics["matmul_iterations"] >= 1
    # 2*n^3 flops per product: the rate must match iterations over the sampled time (within the load window).
    flops = 2 * 128**3 * metrics["matmul_iterations"]
    assert flops / metrics["matmul_gflops"] / 1e9 == pytest.approx(1.0, rel=0.2)
    assert "telemetry.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert (run_dir / "00_quickstart" / "telemetry.png").stat().st_size > 1000


def test_quickstart_measures_the_default_model(smoke_run) -> None:
    _, _, _, runs = smoke_run
    (run,) = [r for r in runs if r.data.tags.get("lab.notebook") == "00_quickstart"]
    m = run.data.metrics
    # smoke.yaml: 4 prompts of 16 tokens, 8 generated tokens each (EOS ignored).
    assert (m["generate_num_requests"], m["generate_prompt_tokens"], m["generate_output_tokens"]) == (4, 64, 32)
    assert m["generate_output_tokens_per_s"] == pytest.approx(32 / m["generate_wall_s"], rel=1e-6)
    assert 0 < m["generate_ttft_mean_s"] <= m["generate_e2e_mean_s"] <= m["generate_wall_s"]


def test_the_roofline_record_calibrates_the_scaler(smoke_run) -> None:
    from lab.scale.engine_profile import load_profile
    from lab.track import ResultRecord

    _, run_dir, _, _ = smoke_run
    path = run_dir / "01_engine_roofline" / "record.json"
    m = ResultRecord.load(path).metrics
    profile = load_profile(path)  # one preset swept: no name, no numbers passed
    # smoke.yaml: batches 1 and 4 of 16-token prompts, 4 timed steps: context 16 + 1 + (4 - 1) / 2 = 18.5 -> 18.
    assert profile.batch_sizes == (1, 4) and profile.context_tokens == (18,)
    assert profile.decode_step_s == ((m["tiny_decode_b1_step_s"],), (m["tiny_decode_b4_step_s"],))
    assert profile.prefill_s_per_token == pytest.approx(m["tiny_decode_b4_prefill_s"] / 64)  # 4 x 16 tokens
    assert profile.kv_cache_tokens == m["tiny_kv_cache_tokens"] > 0 and profile.max_num_seqs == 256


# --- failures ---------------------------------------------------------------------------------
@pytest.fixture
def lab_dirs(tmp_path: Path) -> tuple[Path, Path]:
    experiments, notebooks = tmp_path / "experiments", tmp_path / "notebooks"
    write_notebook(notebooks / "boom.ipynb", "x = 1",
                   "if FAIL:\n    raise RuntimeError('boom requested')", parameters="FAIL: bool = False  # raise?")
    write_notebook(notebooks / "silent.ipynb", "y = 2")
    experiments.mkdir()
    (experiments / "fail.yaml").write_text("description: t\nnotebooks:\n  boom:\n    parameters: {FAIL: true}\n")
    (experiments / "silent.yaml").write_text("description: t\nnotebooks:\n  silent: {}\n")
    (experiments / "typo.yaml").write_text("description: t\nnotebooks:\n  boom:\n    parameters: {FAIIL: true}\n")
    return experiments, notebooks


def reproduce_args(lab_dirs: tuple[Path, Path], tmp_path: Path, *extra: str) -> list[str]:
    return ["reproduce", "--experiments-dir", str(lab_dirs[0]), "--notebooks-dir", str(lab_dirs[1]),
            "--run-dir", str(tmp_path / "run"), "--no-progress", *extra]


def test_a_failing_notebook_names_notebook_and_cell_and_fails_the_parent(
    lab_dirs, tmp_path: Path, tracking_uri: str, client, list_runs, capsys: pytest.CaptureFixture
) -> None:
    assert main(reproduce_args(lab_dirs, tmp_path, "--profile", "fail")) == 1
    err = capsys.readouterr().err
    # cells: parameters (0), papermill's injected parameters (1), x = 1 (2), the raise (3)
    assert "notebook boom failed in cell 3 (execution count 4) `if FAIL:`: RuntimeError: boom requested" in err
    (parent,) = list_runs()
    assert parent.info.status == "FAILED" and parent.data.tags["lab.kind"] == "reproduce"
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "failed")] == ["failed/boom.ipynb"]


def test_a_notebook_that_records_nothing_fails(lab_dirs, tmp_path: Path, tracking_uri: str, list_runs,
                                               capsys: pytest.CaptureFixture) -> None:
    assert main(reproduce_args(lab_dirs, tmp_path, "--profile", "silent")) == 1
    assert "notebook silent failed: it recorded no result" in capsys.readouterr().err
    assert [r.info.status for r in list_runs()] == ["FAILED"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--profile", "nope"], "valid profiles: fail, silent, typo"),
        (["--profile", "fail", "--only", "nope"], "valid notebooks: boom"),
        (["--profile", "fail", "-p", "NOPE=1"], "valid parameters: boom: FAIL: bool = False (raise?)"),
        (["--profile", "fail", "-p", "FAIL=maybe"], "parameter FAIL is declared bool, got str 'maybe'"),
        (["--profile", "typo"], "notebook 'boom' has no parameter FAIIL (in typo.yaml); valid parameters: FAIL"),
    ],
)
def test_mistakes_are_reported_before_anything_runs(
    lab_dirs, tmp_path: Path, isolated_tracking: str, capsys: pytest.CaptureFixture, extra: list[str], expected: str
) -> None:
    assert main(reproduce_args(lab_dirs, tmp_path, *extra)) == 2
    assert expected in capsys.readouterr().err
    assert not Path(isolated_tracking.removeprefix("sqlite:///")).exists()  # no store, so no run
    assert not (tmp_path / "run").exists()


def test_the_real_profiles_reject_unknown_names(isolated_tracking: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["reproduce", "--profile", "smoke", "-p", "MATMUL_SIZ=3"]) == 2
    err = capsys.readouterr().err
    assert "MATMUL_SIZ" in err and "MATMUL_SIZE: int" in err and "SAMPLE_SECONDS: float" in err
    assert main(["reproduce", "--profile", "gpus"]) == 2
    assert "valid profiles: gpu, multi-gpu, smoke" in capsys.readouterr().err
    assert not Path(isolated_tracking.removeprefix("sqlite:///")).exists()


def test_every_profile_is_valid_against_its_notebooks() -> None:
    from lab.reproduce.plan import plan_profile
    from lab.reproduce.profile import available_profiles

    assert {"smoke", "gpu", "multi-gpu"} <= set(available_profiles(LAYOUT.experiments_dir))
    for name in available_profiles(LAYOUT.experiments_dir):
        plan = plan_profile(load_profile(name, LAYOUT.experiments_dir, LAYOUT.notebooks_dir))
        assert plan.runs, name


def test_overrides_are_yaml_literals() -> None:
    assert parse_overrides(["A=1", "B=0.5", "C=true", "D=text", "E=1e3", "F="]) == {
        "A": 1, "B": 0.5, "C": True, "D": "text", "E": 1000.0, "F": ""
    }
    with pytest.raises(Exception, match="KEY=VALUE"):
        parse_overrides(["novalue"])
