"""Execute a validated plan with papermill, grouped under one MLflow parent run.

Contract: `reproduce(plan, run_dir, tracking_uri)` creates the parent run (experiment
`reproduce-<profile>`, tags `lab.kind=reproduce`, `lab.profile`, `lab.git_sha`, `lab.device`, ...),
then executes each notebook on the `python3` kernel of this interpreter into
`<run_dir>/<notebook>/<notebook>.ipynb` with that folder as working directory. The kernel learns
its run folder, profile, parent run and store from the `LAB_*` / `MLFLOW_TRACKING_URI` variables
(`lab.track.notebook`), so the notebook's `record_notebook(...)` becomes a child run; the runner
then checks the child exists and holds the profile's `expect_metrics`, and attaches the executed
notebook to it. The first failure stops the batch: the parent run ends FAILED (with the failed
notebook attached) and the result carries a `NotebookFailure` naming notebook and cell.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lab.reproduce.plan import NotebookRun, Plan
from lab.track.notebook import (
    ENV_NOTEBOOK,
    ENV_PARENT_RUN_ID,
    ENV_PROFILE,
    ENV_RUN_DIR,
    ENV_TRACKING_URI,
    scoped_environ,
)

KERNEL_NAME = "python3"  # jupyter_client runs the "python3" kernel with this very interpreter


@dataclass(frozen=True)
class NotebookFailure:
    notebook: str
    reason: str  # e.g. "ValueError: seconds must be > 0"
    executed_path: Path
    cell_index: int | None = None  # index in the executed notebook (papermill's injected cell counts)
    execution_count: int | None = None
    cell_source: str = ""  # first line of the failing cell

    def message(self) -> str:
        where = "" if self.cell_index is None else f" in cell {self.cell_index}"
        if self.execution_count is not None:
            where += f" (execution count {self.execution_count})"
        if self.cell_source:
            where += f" `{self.cell_source}`"
        return f"notebook {self.notebook} failed{where}: {self.reason}\n  executed notebook: {self.executed_path}"


@dataclass(frozen=True)
class NotebookOutcome:
    notebook: str
    executed_path: Path
    run_id: str
    elapsed_s: float


@dataclass(frozen=True)
class ReproduceResult:
    profile: str
    run_dir: Path
    parent_run_id: str
    outcomes: tuple[NotebookOutcome, ...]
    failure: NotebookFailure | None

    @property
    def ok(self) -> bool:
        return self.failure is None


class _NotebookFailed(Exception):
    def __init__(self, failure: NotebookFailure) -> None:
        super().__init__(failure.message())
        self.failure = failure


def _first_line(source: str, width: int = 80) -> str:
    line = next((line.strip() for line in (source or "").splitlines() if line.strip()), "")
    return line if len(line) <= width else line[: width - 3] + "..."


def _execute(run: NotebookRun, plan: Plan, parent_run_id: str, notebook_dir: Path, executed: Path,
             tracking_uri: str, progress: bool) -> None:
    import papermill

    env = {
        ENV_RUN_DIR: str(notebook_dir),
        ENV_PROFILE: plan.profile.name,
        ENV_PARENT_RUN_ID: parent_run_id,
        ENV_NOTEBOOK: run.spec.name,
        ENV_TRACKING_URI: tracking_uri,
    }
    with scoped_environ(env):
        try:
            papermill.execute_notebook(
                str(run.spec.path),
                str(executed),
                parameters=dict(run.parameters),
                kernel_name=KERNEL_NAME,
                cwd=str(notebook_dir),
                progress_bar=progress,
                execution_timeout=run.spec.timeout_s,
            )
        except papermill.PapermillExecutionError as error:
            raise _NotebookFailed(NotebookFailure(
                notebook=run.spec.name, reason=f"{error.ename}: {error.evalue}", executed_path=executed,
                cell_index=error.cell_index, execution_count=error.exec_count,
                cell_source=_first_line(error.source),
            )) from error
        except Exception as error:  # noqa: BLE001 - dead kernel, timeout, unreadable notebook...
            reason = f"{type(error).__name__}: {error}"
            raise _NotebookFailed(NotebookFailure(run.spec.name, reason, executed)) from error


def _child_run_id(store, parent_run_id: str, run: NotebookRun, executed: Path) -> str:
    from lab.track.store import TAG_NOTEBOOK, TAG_PARENT

    children = store.search(
        f"tags.`{TAG_PARENT}` = '{parent_run_id}' and tags.`{TAG_NOTEBOOK}` = '{run.spec.name}'"
    )
    if not children:
        raise _NotebookFailed(NotebookFailure(
            run.spec.name, "it recorded no result (its last cell must call lab.track.record_notebook)", executed
        ))
    child = children[0]
    missing = [m for m in run.spec.expect_metrics if m not in child.data.metrics]
    if missing:
        raise _NotebookFailed(NotebookFailure(
            run.spec.name,
            f"its record lacks expected metric(s) {', '.join(missing)} "
            f"(recorded: {', '.join(sorted(child.data.metrics)) or 'none'})",
            executed,
        ))
    return child.info.run_id


def reproduce(plan: Plan, run_dir: Path, tracking_uri: str | None = None, progress: bool = True) -> ReproduceResult:
    from tqdm.auto import tqdm

    from lab.track.environment import collect_environment
    from lab.track.log import attach_artifact, environment_tags, parent_run
    from lab.track.store import KIND_REPRODUCE, TAG_KIND, TAG_PROFILE, TrackingStore

    run_dir.mkdir(parents=True, exist_ok=True)
    store = TrackingStore.open(tracking_uri)
    profile = plan.profile.name
    tags = {**environment_tags(collect_environment()), TAG_KIND: KIND_REPRODUCE, TAG_PROFILE: profile}
    params = {
        "profile": profile,
        "notebooks": ",".join(r.spec.name for r in plan.runs),
        "overrides": dict(plan.overrides),
        "run_dir": str(run_dir),
    }
    outcomes: list[NotebookOutcome] = []
    failure: NotebookFailure | None = None
    parent_run_id = ""
    try:
        with parent_run(f"reproduce-{profile}", run_name=f"{profile} {run_dir.name}", params=params,
                        tags=tags, store=store) as parent:
            parent_run_id = parent.run_id
            bar = tqdm(plan.runs, desc=f"lab reproduce {profile}", unit="notebook", disable=not progress)
            for run in bar:
                bar.set_postfix_str(run.spec.name)
                notebook_dir = run_dir / run.spec.name
                notebook_dir.mkdir(parents=True, exist_ok=True)
                executed = notebook_dir / f"{run.spec.name}.ipynb"
                started = time.perf_counter()
                try:
                    _execute(run, plan, parent.run_id, notebook_dir, executed, store.uri, progress)
                    child_id = _child_run_id(store, parent.run_id, run, executed)
                except _NotebookFailed:
                    if executed.exists():
                        attach_artifact(parent.run_id, executed, artifact_path="failed", store=store)
                    raise
                attach_artifact(child_id, executed, artifact_path="notebook", store=store)
                outcomes.append(NotebookOutcome(run.spec.name, executed, child_id, time.perf_counter() - started))
    except _NotebookFailed as error:
        failure = error.failure
    return ReproduceResult(profile, run_dir, parent_run_id, tuple(outcomes), failure)
