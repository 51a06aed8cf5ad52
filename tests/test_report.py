"""lab report: claims table from records and from MLflow, latest run per notebook and profile."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from lab.cli import main
from lab.report.build import NOT_MEASURED
from lab.report.claims import CLAIMS
from lab.track.log import log_record
from lab.track.record import ResultRecord

H100 = "NVIDIA H100 80GB HBM3"


def record(experiment: str, metrics: dict, device: str, when: str, profile: str = "gpu", **kw) -> ResultRecord:
    return ResultRecord(experiment=experiment, notebook=experiment, params={"seed": 0}, metrics=metrics,
                        environment={"device": device}, created_at=when, profile=profile, **kw)


def claim_line(markdown: str, claim_id: str) -> str:
    (line,) = [line for line in markdown.splitlines() if line.startswith(f"| {claim_id} |")]
    return line


def test_claims_table_reads_committed_records(tmp_path: Path) -> None:
    records = tmp_path / "records"
    (records / "h100").mkdir(parents=True)
    (records / "h100" / "qps.png").write_bytes(b"\x89PNG fake")
    record("03_baseline_vs_fullpower", {"fullpower_max_qps": 2000.0, "baseline_max_qps": 500.0}, H100,
           "2025-09-01T00:00:00+00:00", artifacts=("qps.png",)).save(records / "h100" / "record.json")
    out = tmp_path / "report"
    assert main(["report", "--out", str(out), "--records-dir", str(records), "--no-mlflow"]) == 0

    markdown = (out / "index.md").read_text()
    qps = claim_line(markdown, "bench.qps")
    assert "480 -> 2100 QPS" in qps and "500 -> 2,000 QPS" in qps and H100 in qps and "record.json" in qps
    assert NOT_MEASURED in claim_line(markdown, "bench.p99")
    assert markdown.count(f"| {NOT_MEASURED} |") == len(CLAIMS) - 1
    assert "![assets/" in markdown and "qps.png" in markdown
    html = (out / "index.html").read_text()
    assert html.count(f'<td class="missing">{NOT_MEASURED}</td>') == len(CLAIMS) - 1
    assert "500 -&gt; 2,000 QPS" in html and '<img src="assets/' in html
    (asset,) = (out / "assets").rglob("*.png")
    assert asset.read_bytes() == b"\x89PNG fake"


def test_a_gpu_measurement_beats_a_newer_cpu_smoke_run(tmp_path: Path) -> None:
    records = tmp_path / "records"
    record("08_hot_reload", {"hot_reload_pause_ms": 4.2}, H100, "2025-01-01T00:00:00+00:00").save(records / "a.json")
    record("08_hot_reload", {"hot_reload_pause_ms": 99.0}, "cpu: some cpu", "2026-01-01T00:00:00+00:00",
           profile="smoke").save(records / "b.json")
    out = tmp_path / "report"
    assert main(["report", "--out", str(out), "--records-dir", str(records), "--no-mlflow"]) == 0
    markdown = (out / "index.md").read_text()
    assert "4.2 ms" in claim_line(markdown, "reload.impact") and H100 in claim_line(markdown, "reload.impact")
    # Both profiles still appear in the notebook section.
    assert "#### profile smoke · cpu: some cpu" in markdown and f"#### profile gpu · {H100}" in markdown


def test_report_reads_the_mlflow_store_latest_run_per_profile(tmp_path: Path, tracking_uri: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "mem.png").write_bytes(b"\x89PNG memory")
    old = record("02_memory_compression", {"activation_memory_reduction_pct": 10.0}, H100, "2025-01-01T00:00:00+00:00")
    new = record("02_memory_compression", {"activation_memory_reduction_pct": 58.0}, H100,
                 dt.datetime.now(dt.timezone.utc).isoformat(), artifacts=("mem.png",))
    log_record(old, artifacts_dir=work)
    new_run = log_record(new, record_path=work / "record.json")
    out = tmp_path / "report"
    assert main(["report", "--out", str(out), "--records-dir", str(tmp_path / "none")]) == 0

    markdown = (out / "index.md").read_text()
    line = claim_line(markdown, "memory.activation")
    assert "58.0 %" in line and f"mlflow run {new_run}" in line
    assert markdown.count("#### profile gpu") == 1  # only the latest run of the profile is shown
    (asset,) = (out / "assets").rglob("mem.png")
    assert asset.read_bytes() == b"\x89PNG memory" and new_run in str(asset)


def test_report_without_any_results_lists_every_claim_as_not_measured(tmp_path: Path, isolated_tracking: str) -> None:
    out = tmp_path / "report"
    assert main(["report", "--out", str(out), "--records-dir", str(tmp_path / "none")]) == 0
    assert (out / "index.md").read_text().count(f"| {NOT_MEASURED} |") == len(CLAIMS)
    assert not Path(isolated_tracking.removeprefix("sqlite:///")).exists()  # reading never creates a store


def test_claims_cover_the_article_once_each() -> None:
    ids = [c.id for c in CLAIMS]
    assert len(ids) == len(set(ids))
    assert len({(c.experiment, c.metric) for c in CLAIMS}) == len(CLAIMS)
    texts = " ".join(f"{c.text} {c.article_value}" for c in CLAIMS)
    for fragment in ("+370", "12", "45", "15-30", "-62", "7", "12 -> 3.2", "500", "2000", "< 10",
                     "85", "-35", "480 -> 2100", "3200 -> 480", "62 -> 89", "15 s", "1"):
        assert fragment in texts, fragment


def test_committed_records_name_their_device_and_carry_their_plots() -> None:
    from lab.paths import ProjectLayout

    files = sorted(ProjectLayout.discover().committed_records_dir.rglob("*.json"))
    for file in files:
        loaded = ResultRecord.load(file)
        assert loaded.device, f"{file}: a committed record names the device it ran on"
        if loaded.profile == "gpu":  # CPU-only studies (the fleet simulator) may be committed from a CPU
            assert not loaded.device.startswith("cpu"), f"{file}: a gpu-profile record names its GPU"
        assert all(p.is_file() for p in loaded.artifact_paths(file.parent)), f"{file}: artifacts committed beside it"
