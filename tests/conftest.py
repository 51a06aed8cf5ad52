"""Shared fixtures of the spine tests (lab.track, lab.reproduce, lab.report, the CLI).

Every test runs with MLflow telemetry off, no `LAB_*` variables from the outer shell, and its own
`MLFLOW_TRACKING_URI` under `tmp_path`, so nothing touches the project's real store.
`tracking_uri` gives a test a ready sqlite store: a copy of one database migrated once per session,
because creating an MLflow sqlite schema takes seconds and a copy takes milliseconds.
Every test leaves the cyclic GC as it found it (`gc_unfrozen`): a command run in-process may `gc.freeze()`.
Under pytest-xdist (`make test TEST_WORKERS=3` runs `-n 3 --dist loadgroup`), `tests/scheduling.py` says what runs where.
"""

from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path

import pytest

from tests import scheduling

# Set before anything imports mlflow (session fixtures included), not only per test.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
if "PYTEST_XDIST_WORKER" in os.environ:
    # Several workers on 2 cores: one intra-op thread per process, in the worker and in every process it starts
    # (notebook kernels, replicas; tests/server's replicas already run so), set before torch is imported.
    # Otherwise each process's OpenMP threads spin against the others' and the engine tests run several times slower.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

LAB_VARIABLES = ("LAB_RUN_DIR", "LAB_PROFILE", "LAB_PARENT_RUN_ID", "LAB_NOTEBOOK", "MLFLOW_ALLOW_FILE_STORE")


def pytest_configure(config: pytest.Config) -> None:
    # MLflow's sqlite store triggers this SQLAlchemy deprecation itself; it is not ours to fix.
    config.addinivalue_line("filterwarnings", "ignore:The ``noload`` loader strategy is deprecated")
    config.addinivalue_line("markers", f"{scheduling.LONG_RUNNING}(seconds): the file or group takes about that long "
                                       "on 2 CPU cores; under xdist it is handed out first (tests/scheduling.py)")


@pytest.hookimpl(trylast=True)  # after the conftests that add xdist_group and long_running marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: every worker reorders the same way
        scheduling.longest_units_first(items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    return scheduling.make_scheduler(config, log) if config.getvalue("dist") == "loadgroup" else None


def sqlite_uri(db: Path) -> str:
    return f"sqlite:///{db}"


@pytest.fixture(autouse=True)
def isolated_tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point MLflow at a per-test store path (created only if a test logs something)."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    for name in LAB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    uri = sqlite_uri(tmp_path / "mlruns" / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(autouse=True)
def gc_unfrozen():
    """Undo a `gc.freeze()` made by the code under test (`lab gateway bench-latency` freezes its heap to measure).

    Frozen objects are out of every collection's reach, the one at interpreter exit included: Triton's
    (imported by the interpreter tests) then outlive it, and nanobind prints ~30 lines of "leaked
    instances/types/functions" after pytest's summary. Unfrozen, they are collected as usual.
    """
    yield
    if gc.get_freeze_count():
        gc.unfreeze()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=sqlite_uri(db)).search_experiments()  # creates and migrates the schema
    return db


@pytest.fixture
def tracking_uri(isolated_tracking: str, migrated_sqlite: Path) -> str:
    """The per-test store, ready to use (same URI as MLFLOW_TRACKING_URI)."""
    db = Path(isolated_tracking.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(migrated_sqlite, db)
    return isolated_tracking


@pytest.fixture
def client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


@pytest.fixture
def list_runs(client):
    """`list_runs()` -> every active run of the per-test store, all experiments."""

    def runs() -> list:
        ids = [e.experiment_id for e in client.search_experiments()]
        return list(client.search_runs(ids, max_results=1000)) if ids else []

    return runs
