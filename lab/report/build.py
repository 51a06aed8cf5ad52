"""Select what the report shows and write it.

Contract: `build_report(out_dir, ...)` gathers measurements (MLflow store, unless disabled or
absent, plus committed records), then writes `index.html`, `index.md` and `assets/` (the PNG
plots, copied so the report folder is self-contained) into `out_dir`, and returns their paths.
- Per notebook: the latest measurement of each profile, with all its metrics and plots.
- Claims table: one row per `lab.report.claims.CLAIMS` entry. The value comes from the newest
  measurement of the claim's experiment that recorded the claim's metric, preferring GPU runs
  over CPU ones (a CPU smoke run says nothing about an A100 claim); without one the row reads
  "not measured yet". A record present in both sources counts once.
"""

from __future__ import annotations

import datetime as _dt
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lab.report.claims import CLAIMS, Claim
from lab.report.sources import Measurement, display_path, fetch_plots, from_mlflow, from_records

NOT_MEASURED = "not measured yet"


@dataclass(frozen=True)
class ClaimRow:
    claim: Claim
    measured: str  # formatted value with unit, or NOT_MEASURED
    device: str
    source: str
    profile: str


@dataclass(frozen=True)
class ShownMeasurement:
    measurement: Measurement
    plots: tuple[str, ...]  # paths relative to the report folder


@dataclass(frozen=True)
class NotebookSection:
    notebook: str
    latest: tuple[ShownMeasurement, ...]  # one per profile, newest first


@dataclass(frozen=True)
class Report:
    generated_at: str
    sources: tuple[str, ...]
    claims: tuple[ClaimRow, ...]
    notebooks: tuple[NotebookSection, ...]


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path


def format_value(value: float, unit: str = "") -> str:
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def _unique(measurements: Iterable[Measurement]) -> list[Measurement]:
    seen, unique = set(), []
    for m in measurements:
        key = m.record_id or m.source
        if key not in seen:
            seen.add(key)
            unique.append(m)
    return unique


def claim_rows(measurements: list[Measurement]) -> list[ClaimRow]:
    rows = []
    for claim in CLAIMS:
        candidates = [m for m in measurements if m.experiment == claim.experiment and claim.metric in m.metrics]
        if not candidates:
            rows.append(ClaimRow(claim, NOT_MEASURED, "", "", ""))
            continue
        best = max(candidates, key=lambda m: (m.on_gpu, m.created_at))
        value = format_value(best.metrics[claim.metric], claim.unit)
        if claim.baseline_metric and claim.baseline_metric in best.metrics:
            value = f"{format_value(best.metrics[claim.baseline_metric])} -> {value}"
        rows.append(ClaimRow(claim, value, best.device, best.source, best.profile))
    return rows


def latest_per_profile(measurements: list[Measurement]) -> dict[str, list[Measurement]]:
    latest: dict[tuple[str, str], Measurement] = {}
    for m in measurements:
        key = (m.notebook, m.profile)
        if key not in latest or m.created_at > latest[key].created_at:
            latest[key] = m
    by_notebook: dict[str, list[Measurement]] = {}
    for (notebook, _), m in sorted(latest.items()):
        by_notebook.setdefault(notebook, []).append(m)
    for shown in by_notebook.values():
        shown.sort(key=lambda m: m.created_at, reverse=True)
    return by_notebook


def _open_store(tracking_uri: str | None):
    """The MLflow store, or None when a sqlite store does not exist yet (reading must not create one)."""
    from lab.track.store import TrackingStore, resolve_tracking_uri, sqlite_path

    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        return None
    return TrackingStore.open(uri)


def build_report(out_dir: Path, tracking_uri: str | None = None, records_dir: Path | None = None,
                 use_mlflow: bool = True) -> ReportFiles:
    from lab.paths import ProjectLayout
    from lab.report.render import render_html, render_markdown

    records_dir = records_dir or ProjectLayout.discover().committed_records_dir
    store = _open_store(tracking_uri) if use_mlflow else None
    sources = [f"records: {display_path(records_dir)}"]
    measurements = []
    if store is not None:
        sources.insert(0, f"MLflow: {store.uri}")
        measurements += from_mlflow(store)
    measurements = _unique(measurements + from_records(records_dir))

    out_dir.mkdir(parents=True, exist_ok=True)
    assets = out_dir / "assets"
    shutil.rmtree(assets, ignore_errors=True)  # generated output: rebuilt from scratch each time
    sections = []
    for notebook, shown in latest_per_profile(measurements).items():
        entries = []
        for m in shown:
            folder = assets / (m.run_id or m.record_id or notebook)
            plots = fetch_plots(m, folder, store)
            entries.append(ShownMeasurement(m, tuple(p.relative_to(out_dir).as_posix() for p in plots)))
        sections.append(NotebookSection(notebook, tuple(entries)))
    report = Report(
        generated_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        sources=tuple(sources),
        claims=tuple(claim_rows(measurements)),
        notebooks=tuple(sections),
    )
    html_path, md_path = out_dir / "index.html", out_dir / "index.md"
    html_path.write_text(render_html(report), encoding="utf-8")
    md_path.write_text(render_markdown(report), encoding="utf-8")
    return ReportFiles(html=html_path, markdown=md_path)
