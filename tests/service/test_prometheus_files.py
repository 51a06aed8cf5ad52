"""Prometheus's files: both rule files pass promtool and agree; the generated prometheus.yml passes promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lab.errors import LabError
from lab.service.prometheus import ScrapeTarget, find_prometheus, write_config
from lab.service.spec import PrometheusSpec

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES, DRILL = PROMETHEUS_DIR / "rules.yml", PROMETHEUS_DIR / "rules-drill.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool absent (apt-get install -y prometheus)")
UNITS_S = {"s": 1, "m": 60, "h": 3600}


def alerts(path: Path) -> dict[str, dict]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def seconds(window: str | None) -> float:
    return 0.0 if window is None else float(window[:-1]) * UNITS_S[window[-1]]


@needs_promtool
@pytest.mark.parametrize("rules", [RULES, DRILL], ids=["production", "drill"])
def test_promtool_accepts_the_rules(rules: Path) -> None:
    result = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_drill_rules_are_the_production_alerts_with_shorter_windows() -> None:
    production, drill = alerts(RULES), alerts(DRILL)
    assert list(drill) == list(production)
    for name, rule in production.items():
        assert " ".join(str(drill[name]["expr"]).split()) == " ".join(str(rule["expr"]).split()), name
        for key in ("labels", "annotations"):
            assert drill[name].get(key) == rule.get(key), (name, key)
        assert seconds(drill[name].get("for")) <= min(seconds(rule.get("for")), 30), name


def write(tmp_path: Path, interval_s: float = 1.0) -> Path:
    targets = [ScrapeTarget("lab-gateway", 9000), ScrapeTarget("lab-replica", 8001, {"replica": "a", "version": "v1"}),
               ScrapeTarget("lab-replica", 8002, {"replica": "b", "version": "v2"})]
    path = tmp_path / "prometheus.yml"
    write_config(path, targets, PrometheusSpec(scrape_interval_s=interval_s, evaluation_interval_s=2, rules=DRILL))
    return path


def test_the_config_has_one_job_per_kind_and_a_label_per_replica(tmp_path: Path) -> None:
    config = yaml.safe_load(write(tmp_path).read_text())
    jobs = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}
    assert jobs["lab-gateway"] == [{"targets": ["127.0.0.1:9000"], "labels": {}}]
    assert [(s["targets"], s["labels"]) for s in jobs["lab-replica"]] == [
        (["127.0.0.1:8001"], {"replica": "a", "version": "v1"}),
        (["127.0.0.1:8002"], {"replica": "b", "version": "v2"})]
    assert config["rule_files"] == [str(DRILL)]
    assert config["global"] == {"scrape_interval": "1000ms", "scrape_timeout": "1000ms",
                                "evaluation_interval": "2000ms"}


@needs_promtool
@pytest.mark.parametrize("interval_s", [1.0, 30.0])  # the scrape timeout never exceeds the interval
def test_promtool_accepts_the_generated_config(tmp_path: Path, interval_s: float) -> None:
    result = subprocess.run([PROMTOOL, "check", "config", str(write(tmp_path, interval_s))], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_missing_prometheus_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(LabError, match=r"apt-get install -y prometheus"):
        find_prometheus(search_path=str(tmp_path))  # an empty folder as PATH
    with pytest.raises(LabError, match=r"prometheus.binary: /nowhere/prometheus is not an executable"):
        find_prometheus("/nowhere/prometheus")


def test_prometheus_is_found_on_path(tmp_path: Path) -> None:
    binary = tmp_path / "prometheus"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert find_prometheus(search_path=str(tmp_path)) == binary
