"""Select what the report shows and write it.

Contract: `build_report(out_dir, ...)` gathers measurements (committed records, plus the MLflow store
unless disabled or absent), then writes `index.html` and `index.md` into `out_dir` and returns their
paths; `report_texts(...)` returns the same two texts without writing them. Links (records, NOTE.md,
code.diff, plots) are relative to `out_dir`; a record's plots are linked where they lie, an MLflow run's
are downloaded into `<out_dir>/assets/<run id>/`.
- Claims table: one row per `lab.report.claims.CLAIMS` entry, from full-scale measurements only
  (`lab.report.scale`): the one of the claim's notebook that recorded the claim's metric, GPU before
  CPU, then newest; judged by the claim's rule. Without one the row reads "not measured" and names the
  notebook (and says when only smoke runs exist). A record present in both sources counts once, as the
  committed file.
- Notebooks: the latest full-scale measurement of each notebook per profile, hardware and set of notebook
  parameters (UPPER_CASE keys: a study run in parts, e.g. drills split over bounded device calls, or the same
  profile on two cards, shows every part), with all its metrics, plots and links; smoke and ad hoc runs
  likewise, in a section of their own.
- Nothing depends on the clock or the machine: the report states the newest record's time, so the same
  records give byte-identical files (the committed `reports/index.*` are rebuilt by
  `lab report --committed`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.report.claims import CLAIMS, Claim
from lab.report.formatting import format_value
from lab.report.rules import Judgement, Status
from lab.report.scale import Scale
from lab.report.sources import Measurement, display_path, fetch_plots, from_mlflow, from_records

NOT_MEASURED = Status.NOT_MEASURED.value
ASSETS = "assets"


@dataclass(frozen=True)
class Link:
    text: str
    href: str | None  # relative to the report folder; None: plain text (an MLflow run)


@dataclass(frozen=True)
class ClaimRow:
    claim: Claim
    measured: str  # formatted value with unit (and the evidence of the judgement), or NOT_MEASURED
    judgement: Judgement
    hardware: str  # ours; "" when not measured
    links: tuple[Link, ...]  # the record (or MLflow run) and its NOTE.md
    pending: str = ""  # why a claim is not measured, beyond "no record yet"


@dataclass(frozen=True)
class ShownMeasurement:
    measurement: Measurement
    links: tuple[Link, ...]  # record, NOTE.md, code.diff
    plots: tuple[str, ...]  # hrefs relative to the report folder


@dataclass(frozen=True)
class NotebookSection:
    notebook: str
    latest: tuple[ShownMeasurement, ...]  # one per profile, newest first


@dataclass(frozen=True)
class Report:
    newest: str  # ISO time of the newest measurement, "" when there is none
    sources: tuple[str, ...]
    claims: tuple[ClaimRow, ...]
    notebooks: tuple[NotebookSection, ...]  # full scale
    smoke: tuple[NotebookSection, ...]  # smoke and ad hoc runs: the road, not a claim


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path


def _href(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()


def source_links(m: Measurement, out_dir: Path, with_code_diff: bool = True) -> tuple[Link, ...]:
    if m.record_path is None:
        return (Link(m.source, None),)
    beside = (m.note_path, m.code_diff_path if with_code_diff else None)
    return (Link(m.source, _href(m.record_path, out_dir)),
            *(Link(p.name, _href(p, out_dir)) for p in beside if p is not None))


def _unique(measurements: Iterable[Measurement]) -> list[Measurement]:
    seen, unique = set(), []
    for m in measurements:
        key = m.record_id or m.source
        if key not in seen:
            seen.add(key)
            unique.append(m)
    return unique


def claim_row(claim: Claim, measurements: list[Measurement], out_dir: Path) -> ClaimRow:
    recorded = [m for m in measurements if m.experiment == claim.experiment and m.value(claim.metric) is not None]
    full = [m for m in recorded if m.scale is Scale.FULL]
    if not full:
        pending = "only smoke or ad hoc runs so far" if recorded else ""
        return ClaimRow(claim, NOT_MEASURED, Judgement(Status.NOT_MEASURED), "", (), pending)
    best = max(full, key=lambda m: (m.on_gpu, m.created_at))
    value, baseline = best.value(claim.metric), best.value(claim.baseline_metric)
    judgement = claim.rule.judge(value, baseline)
    measured = format_value(value, claim.unit)
    if baseline is not None:
        measured = f"{format_value(baseline)} -> {measured}"
    if judgement.evidence:
        measured += f" ({judgement.evidence})"
    return ClaimRow(claim, measured, judgement, best.hardware, source_links(best, out_dir, with_code_diff=False))


def _parameters_key(params) -> str:
    """The notebook's own parameters (UPPER_CASE), as one comparable string: what was run, not where it ran."""
    return json.dumps({k: v for k, v in params.items() if k.isupper()}, sort_keys=True, default=str)


def latest_per_profile(measurements: list[Measurement]) -> dict[str, list[Measurement]]:
    latest: dict[tuple[str, str, str, str], Measurement] = {}
    for m in measurements:
        key = (m.notebook, m.profile or "", m.hardware, _parameters_key(m.params))
        if key not in latest or m.created_at > latest[key].created_at:
            latest[key] = m
    by_notebook: dict[str, list[Measurement]] = {}
    for (notebook, *_), m in sorted(latest.items(), key=lambda item: item[0]):
        by_notebook.setdefault(notebook, []).append(m)
    for shown in by_notebook.values():
        shown.sort(key=lambda m: m.created_at, reverse=True)
    return by_notebook


def _sections(measurements: list[Measurement], out_dir: Path, store: Any) -> tuple[NotebookSection, ...]:
    sections = []
    for notebook, shown in latest_per_profile(measurements).items():
        entries = []
        for m in shown:
            plots = list(m.plot_refs)
            if store is not None and m.run_id is not None:
                plots += fetch_plots(m, out_dir / ASSETS / m.run_id, store)
            entries.append(ShownMeasurement(m, source_links(m, out_dir), tuple(_href(p, out_dir) for p in plots)))
        sections.append(NotebookSection(notebook, tuple(entries)))
    return tuple(sections)


def _open_store(tracking_uri: str | None):
    """The MLflow store, or None when a sqlite store does not exist yet (reading must not create one)."""
    from lab.track.store import TrackingStore, resolve_tracking_uri, sqlite_path

    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        return None
    return TrackingStore.open(uri)


def assemble(out_dir: Path, tracking_uri: str | None = None, records_dir: Path | None = None,
             use_mlflow: bool = True) -> Report:
    from lab.paths import ProjectLayout

    records_dir = records_dir or ProjectLayout.discover().committed_records_dir
    store = _open_store(tracking_uri) if use_mlflow else None
    sources = [f"records: {display_path(records_dir)}"]
    measurements = from_records(records_dir)
    if store is not None:
        sources.append(f"MLflow: {store.uri}")
        measurements += from_mlflow(store)
    measurements = _unique(measurements)  # records first: a committed record wins over its imported run
    full = [m for m in measurements if m.scale is Scale.FULL]
    road = [m for m in measurements if m.scale is not Scale.FULL]
    newest = max((m.created_at for m in measurements), default=None)
    return Report(
        newest=newest.isoformat(timespec="seconds") if newest else "",
        sources=tuple(sources),
        claims=tuple(claim_row(claim, measurements, out_dir) for claim in CLAIMS),
        notebooks=_sections(full, out_dir, store),
        smoke=_sections(road, out_dir, store),
    )


def report_texts(out_dir: Path, tracking_uri: str | None = None, records_dir: Path | None = None,
                 use_mlflow: bool = True) -> dict[str, str]:
    """{"index.html": ..., "index.md": ...} as `build_report` writes them into `out_dir`."""
    from lab.report.render import render_html, render_markdown

    report = assemble(out_dir, tracking_uri, records_dir, use_mlflow)
    return {"index.html": render_html(report), "index.md": render_markdown(report)}


def build_report(out_dir: Path, tracking_uri: str | None = None, records_dir: Path | None = None,
                 use_mlflow: bool = True) -> ReportFiles:
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / ASSETS, ignore_errors=True)  # downloaded plots: rebuilt from scratch each time
    for name, text in report_texts(out_dir, tracking_uri, records_dir, use_mlflow).items():
        (out_dir / name).write_text(text, encoding="utf-8")
    return ReportFiles(html=out_dir / "index.html", markdown=out_dir / "index.md")
