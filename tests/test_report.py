"""lab report: the claims table row by row, full scale only, smoke runs apart, deterministic committed files."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from lab.cli import main
from lab.paths import ProjectLayout
from lab.report.build import report_texts
from lab.report.claims import CLAIMS, claims_by_id
from lab.report.formatting import format_value
from lab.report.rules import AtLeast, AtMost, Judgement, Problem, RatioAtLeast, Status, Within
from lab.track.log import log_record
from lab.track.record import ResultRecord

H100 = "NVIDIA H100 80GB HBM3"
CLAIMS_HEADING = "## Claims of the article"
SMOKE_HEADING = "## Smoke runs (check the road, not a claim)"


def record(experiment: str, metrics: dict, device: str, when: str, profile: str | None = "gpu",
           environment: dict | None = None, **kw) -> ResultRecord:
    env = {"device": device, "gpu": {"count": 1}, "cpu_count": 2, **(environment or {})}
    return ResultRecord(experiment=experiment, notebook=experiment, params={"seed": 0}, metrics=metrics,
                        environment=env, created_at=when, profile=profile, **kw)


def section(markdown: str, heading: str) -> str:
    return markdown.split(heading + "\n", 1)[1].split("\n## ", 1)[0]


def claims_table(markdown: str) -> dict[str, dict[str, str]]:
    """The claims table parsed: claim id -> {column header: cell text}."""
    rows = [
        [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        for line in section(markdown, CLAIMS_HEADING).splitlines() if line.startswith("|")
    ]
    header, body = rows[0], rows[2:]
    assert all(len(row) == len(header) for row in body)
    return {row[0]: dict(zip(header, row, strict=True)) for row in body}


def cells(row: dict[str, str], expected: dict[str, str]) -> dict[str, str]:
    """The cells of `row` under the columns `expected` names, to compare a row in part."""
    return {column: row[column] for column in expected}


def report(tmp_path: Path, records: Path, *extra: str) -> str:
    out = tmp_path / "report"
    assert main(["report", "--out", str(out), "--records-dir", str(records), *extra]) == 0
    return (out / "index.md").read_text()


def not_measured(claim_id: str, pending: str = "") -> dict[str, str]:
    claim = claims_by_id()[claim_id]
    return {"notebook": f"{claim.experiment} ({pending})" if pending else claim.experiment,
            "measured": "not measured", "our hardware": "", "verdict": "not measured", "record": ""}


def test_claims_table_rows_from_a_committed_gpu_record(tmp_path: Path) -> None:
    folder = tmp_path / "records" / "h100"
    folder.mkdir(parents=True)
    (folder / "qps.png").write_bytes(b"\x89PNG fake")
    (folder / "NOTE.md").write_text("how it ran")
    metrics = {"fullpower_max_qps": 2000.0, "baseline_max_qps": 500.0, "fullpower_p99_e2e_ms": 400.0,
               "baseline_p99_e2e_ms": 3000.0, "fullpower_gpu_util_pct": 80.0, "baseline_gpu_util_pct": 40.0,
               "native_latency_increase_pct": 400.0, "native_error_rate_pct": 5.0, "samples": 10000.0}
    record("03_baseline_vs_fullpower", metrics, H100, "2025-09-01T00:00:00+00:00",
           artifacts=("qps.png",)).save(folder / "record.json")
    table = claims_table(report(tmp_path, tmp_path / "records", "--no-mlflow"))

    links = f"[{folder / 'record.json'}](../records/h100/record.json) · [NOTE.md](../records/h100/NOTE.md)"
    common = {"notebook": "03_baseline_vs_fullpower", "our hardware": f"1× {H100}", "record": links}
    assert table["bench.qps"] == {
        "id": "bench.qps", "claim": "Throughput, native -> full-power", "article": "480 -> 2100 QPS",
        "article hardware": "16× A100 (benchmark section)", "measured": "500 -> 2,000 QPS (ratio 4×)",
        "met when": "our ratio >= 4.38× (480 -> 2,100)", "verdict": "not met", **common}
    p99 = {"measured": "3,000 -> 400 ms (ratio 7.5×)", "verdict": "met"}
    assert cells(table["bench.p99"], p99) == p99
    utilisation = {"measured": "40 -> 80 %", "met when": "measured >= 89 %", "verdict": "not met"}
    assert cells(table["bench.gpu_util"], utilisation) == utilisation
    assert (table["native.latency"]["verdict"], table["native.errors"]["verdict"]) == ("reproduced", "milder here")
    assert table["native.errors"]["article hardware"] == "not stated (one node)"
    measured_ids = {"bench.qps", "bench.p99", "bench.gpu_util", "native.latency", "native.errors"}
    for claim in CLAIMS:
        if claim.id not in measured_ids:
            assert cells(table[claim.id], not_measured(claim.id)) == not_measured(claim.id), claim.id


def test_html_links_notes_renders_code_and_prints_counts_as_integers(tmp_path: Path) -> None:
    folder = tmp_path / "records" / "cpu"
    folder.mkdir(parents=True)
    (folder / "NOTE.md").write_text("how it ran")
    record("04_predictive_scaling", {"samples": 113.0, "simulated_requests": 9077042.0, "mape_pct": 12.5},
           "cpu: AMD EPYC", "2025-09-01T00:00:00+00:00", profile=None).save(folder / "record.json")
    markdown = report(tmp_path, tmp_path / "records", "--no-mlflow")
    html = (tmp_path / "report" / "index.html").read_text()

    assert "| samples | 113 |" in markdown and "| simulated_requests | 9,077,042 |" in markdown
    assert "<td>113</td>" in html and "<td>9,077,042</td>" in html and "<td>12.5</td>" in html
    assert "`" not in html and "<code>lab report --committed</code>" in html
    assert '<a href="../records/cpu/NOTE.md">NOTE.md</a>' in html and "[NOTE.md](../records/cpu/NOTE.md)" in markdown


def test_a_smoke_run_never_stands_for_a_claim(tmp_path: Path, tracking_uri: str) -> None:
    """`make lab` on a CPU: smoke runs in the real store, and the repository's committed records."""
    committed = ProjectLayout.discover().committed_records_dir
    newest = "2030-01-01T00:00:00+00:00"
    smoke = [
        record("02_priority_scheduling", {"fcfs_vip_ttft_p99_ms": 7976.0, "tiers_vip_ttft_p99_ms": 8073.0},
               "cpu: AMD EPYC", newest, profile="smoke"),
        record("04_predictive_scaling", {"peak_load_pct": 95.0}, "cpu: AMD EPYC", newest, profile="smoke"),
        record("05_hot_reload", {"hot_reload_pause_ms": 3.0}, "cpu: AMD EPYC", newest, profile="smoke"),
        record("05_hot_reload", {"hot_reload_pause_ms": 2.0}, H100, newest, profile=None),  # ad hoc, by hand
    ]
    run_ids = [log_record(r, artifacts_dir=tmp_path) for r in smoke]
    markdown = report(tmp_path, committed)
    table = claims_table(markdown)

    scheduling = ResultRecord.load(committed / "02_priority_scheduling-cpu" / "record.json").metrics
    scaling = ResultRecord.load(committed / "04_predictive_scaling-measured-h100-profile" / "record.json").metrics
    assert table["sched.vip"]["measured"] == (f"{format_value(scheduling['fcfs_vip_ttft_p99_ms'])} -> "
                                              f"{format_value(scheduling['tiers_vip_ttft_p99_ms'], 'ms')}")
    assert table["sched.vip"]["record"].startswith("[reports/records/02_priority_scheduling-cpu/record.json]")
    assert table["sched.vip"]["our hardware"] == "2-core CPU (AMD EPYC)"
    assert table["scale.thresholds"]["measured"] == format_value(scaling["peak_load_pct"], "%") != "95 %"
    # The newer smoke (3 ms) and ad hoc (2 ms) runs never replace the newest committed GPU record's number.
    gpu_reloads = [path for path in committed.glob("05_hot_reload-gpu-*/record.json")]
    newest_gpu = max(gpu_reloads, key=lambda path: ResultRecord.load(path).created_at)
    reload = ResultRecord.load(newest_gpu).metrics
    assert table["reload.impact"]["measured"] == format_value(reload["hot_reload_pause_ms"], "ms")
    assert table["reload.impact"]["measured"] not in ("3 ms", "2 ms")
    assert table["reload.impact"]["record"].startswith(f"[reports/records/{newest_gpu.parent.name}/record.json]")
    full, road = section(markdown, "## Notebooks (full scale)"), section(markdown, SMOKE_HEADING)
    assert all(run_id not in full and f"mlflow run {run_id}" in road for run_id in run_ids)
    assert "#### profile smoke · 2-core CPU (AMD EPYC) · " in road
    assert f"#### profile none (run by hand) · 1× {H100}" in road


def test_a_gpu_run_in_the_store_makes_a_claim_and_its_plots_are_downloaded(tmp_path: Path, tracking_uri: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "mig.png").write_bytes(b"\x89PNG mig")
    old = record("07_mig_partitions", {"mig_instances_per_gpu": 3.0}, H100, "2025-01-01T00:00:00+00:00")
    new = record("07_mig_partitions", {"mig_instances_per_gpu": 7.0}, H100, "2025-06-01T00:00:00+00:00",
                 artifacts=("mig.png",))
    log_record(old, artifacts_dir=work, run_name="old")
    new_run = log_record(new, record_path=work / "record.json")
    markdown = report(tmp_path, tmp_path / "none")

    mig = {"measured": "7 instances", "our hardware": f"1× {H100}", "verdict": "met",
           "record": f"mlflow run {new_run}"}
    assert cells(claims_table(markdown)["mig.instances"], mig) == mig
    assert markdown.count("#### profile gpu") == 1  # only the latest run of the profile is shown
    (asset,) = (tmp_path / "report" / "assets").rglob("mig.png")
    assert asset.read_bytes() == b"\x89PNG mig" and asset.parent.name == new_run
    assert f"![mig.png](assets/{new_run}/mig.png)" in markdown


def test_the_committed_report_is_what_the_committed_records_give_byte_for_byte(tmp_path: Path) -> None:
    layout = ProjectLayout.discover()
    first = report_texts(layout.reports_dir, records_dir=layout.committed_records_dir, use_mlflow=False)
    second = report_texts(layout.reports_dir, records_dir=layout.committed_records_dir, use_mlflow=False)
    assert first == second
    for name, text in first.items():
        committed = (layout.reports_dir / name).read_text(encoding="utf-8")
        assert committed == text, f"reports/{name} is stale: regenerate it with `lab report --committed`"
    for out in ("a", "b"):  # through the CLI, into two folders: the same bytes, nothing copied beside them
        assert main(["report", "--no-mlflow", "--out", str(tmp_path / out)]) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["index.html", "index.md"]
    for name in ("index.html", "index.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_committed_takes_no_other_sources(tmp_path: Path, capsys) -> None:
    assert main(["report", "--committed", "--out", str(tmp_path)]) == 2
    assert "drop --out" in capsys.readouterr().err


def test_report_without_any_results_lists_every_claim_as_not_measured(tmp_path: Path, isolated_tracking: str) -> None:
    table = claims_table(report(tmp_path, tmp_path / "none"))
    assert {claim_id: row["verdict"] for claim_id, row in table.items()} == {c.id: "not measured" for c in CLAIMS}
    assert not Path(isolated_tracking.removeprefix("sqlite:///")).exists()  # reading never creates a store


def test_each_rule_on_hand_computed_values() -> None:
    assert [AtMost(500).judge(v, None).status for v in (500, 501)] == [Status.MET, Status.NOT_MET]
    assert AtMost(10, strict=True).judge(10, None).status is Status.NOT_MET
    assert AtMost(-35).judge(-52.5, None).status is Status.MET  # a 52.5 % saving meets "-35 %"
    assert AtLeast(7).judge(6, None).status is Status.NOT_MET
    assert [Within(1, 0.2).judge(v, None).status for v in (1.2, 1.3)] == [Status.MET, Status.NOT_MET]
    qps = RatioAtLeast(480, 2100)
    assert qps.judge(2100 / 480 * 10, 10).status is Status.MET
    assert qps.judge(2000, 500) == Judgement(Status.NOT_MET, "ratio 4×")
    assert RatioAtLeast(12, 3.2, lower_is_better=True).judge(3.0, 12.0).status is Status.MET  # 4x >= 3.75x
    assert qps.judge(2000, None).status is Status.NOT_MEASURED
    assert [Problem(370).judge(v, None).status for v in (400, 209, 0)] == [
        Status.REPRODUCED, Status.MILDER, Status.NOT_SEEN]


def test_claims_cover_the_article_once_each_and_name_their_notebooks() -> None:
    expected = {
        "native.latency": ("+370", "%", "03_baseline_vs_fullpower"),
        "native.errors": ("12", "%", "03_baseline_vs_fullpower"),
        "native.cold_start": ("45", "s", "05_hot_reload"),
        "native.burst_timeouts": ("40", "%", "05_hot_reload"),
        "native.reactive_delay": ("15-30", "s", "04_predictive_scaling"),
        "memory.activation": ("-62", "%", "06_memory_compression"),
        "mig.instances": ("7", "instances", "07_mig_partitions"),
        "nccl.allreduce": ("12 -> 3.2", "ms", "08_nccl_tp"),
        "sched.vip": ("<= 500", "ms", "02_priority_scheduling"),
        "sched.realtime": ("<= 2000", "ms", "02_priority_scheduling"),
        "reload.impact": ("< 10", "ms", "05_hot_reload"),
        "scale.thresholds": ("<= 85", "%", "04_predictive_scaling"),
        "scale.cost": ("-35", "%", "04_predictive_scaling"),
        "bench.qps": ("480 -> 2100", "QPS", "03_baseline_vs_fullpower"),
        "bench.p99": ("3200 -> 480", "ms", "03_baseline_vs_fullpower"),
        "bench.gpu_util": ("62 -> 89", "%", "03_baseline_vs_fullpower"),
        "ops.rollback": ("<= 45", "s", "09_chaos_drills"),
        "ops.canary": ("1", "%", "09_chaos_drills"),
    }
    assert {c.id: (c.article_value, c.unit, c.experiment) for c in CLAIMS} == expected
    assert len({(c.experiment, c.metric) for c in CLAIMS}) == len(CLAIMS)
    on_the_cluster = {c.id for c in CLAIMS if c.article_hardware.startswith("16× A100")}
    assert on_the_cluster == {"bench.qps", "bench.p99", "bench.gpu_util"}


def test_committed_records_name_their_device_and_carry_their_plots() -> None:
    files = sorted(ProjectLayout.discover().committed_records_dir.rglob("record.json"))  # beside them: journals, ledgers
    for file in files:
        loaded = ResultRecord.load(file)
        assert loaded.device, f"{file}: a committed record names the device it ran on"
        engine_profile = loaded.params.get("ENGINE_PROFILE")  # the fleet simulator: its GPU numbers are that record's
        if engine_profile:
            source = ResultRecord.load(ProjectLayout.discover().root / engine_profile)
            assert not source.device.startswith("cpu"), f"{file}: its engine profile {engine_profile} names a GPU"
        elif loaded.profile == "gpu":
            assert not loaded.device.startswith("cpu"), f"{file}: a gpu-profile record names its GPU"
        artifacts = loaded.artifact_paths(file.parent)  # files, or folders such as a replica's logs
        assert all(p.exists() for p in artifacts), f"{file}: artifacts committed beside it"


def test_parts_of_a_study_and_other_cards_each_show_the_latest_of_their_own() -> None:
    from lab.report.build import latest_per_profile
    from lab.report.scale import Scale
    from lab.report.sources import Measurement

    def m(when: str, hardware: str, drills: list[str], run: str) -> Measurement:
        return Measurement("09_chaos_drills", "09_chaos_drills", "gpu", Scale.FULL, "cuda", hardware, "c",
                           datetime.fromisoformat(when), {}, {"DRILLS": drills, "run_dir": run}, run, run)

    shown = latest_per_profile([
        m("2026-12-07T10:00:00+00:00", "1x H100", ["kill-replica"], "a"),
        m("2026-12-07T11:00:00+00:00", "1x H100", ["kill-replica"], "b"),  # the same part again: replaces a
        m("2026-12-07T12:00:00+00:00", "1x H100", ["flood-poison"], "c"),  # another part: shown beside it
        m("2026-12-07T09:00:00+00:00", "1x H200", ["kill-replica"], "d"),  # another card: shown too
    ])["09_chaos_drills"]
    assert [x.source for x in shown] == ["c", "b", "d"]  # newest first; lower-case params (paths) never split
