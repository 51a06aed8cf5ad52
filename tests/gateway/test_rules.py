"""deploy/prometheus/rules.yml parses, and every metric it names is exported by a live service.

Gateway names are read from the `/metrics` of a live gateway app; replica names (vLLM's) from the
metrics of `lab.server` (the replica server), rendered the way its `/metrics` renders them.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
import yaml

from lab.gateway.app import build_app
from tests.gateway.fakes import make_config

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                "offset", "inf", "nan"}
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def metric_names(expr: str) -> set[str]:
    """Metric names of a PromQL expression: identifiers that are not functions, keywords or labels."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"(?<![\w:])\d+(?:\.\d*)?(?:[eE][-+]?\d+)?", "0", expr)  # numbers, 1e-9 included
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        word, rest = match.group(0), expr[match.end():].lstrip()
        if word.lower() in PROMQL_WORDS or rest.startswith("(") or re.fullmatch(r"\d+[smhdwy]?", word):
            continue
        names.add(word)
    return names


def base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def exported(text: str) -> set[str]:
    return {base(line.split("{")[0].split(" ")[0]) for line in text.splitlines() if line and not line.startswith("#")}


def rules() -> list[dict]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_rules_parse_with_the_articles_alerts():
    found = rules()
    assert all(rule["alert"] and str(rule["expr"]).strip() for rule in found)
    names = {rule["alert"] for rule in found}
    assert {"ModelUnhealthy", "HighErrorRate", "VipP99OverSLO", "ReplicaP99OverSLO"} <= names
    assert next(r for r in found if r["alert"] == "ModelUnhealthy")["for"] == "2m"  # as in the article


def test_metric_name_extraction():
    expr = 'histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket{a="b"}[5m]))) > 0.48'
    assert metric_names(expr) == {"vllm:e2e_request_latency_seconds_bucket"}
    assert metric_names("sum(x_total) / clamp_min(sum by (tier) (y), 1e-9) > 0.01 and on (z) w") == {"x_total", "y", "w"}


def test_every_metric_in_the_rules_is_exported():
    server_metrics = pytest.importorskip("lab.server.metrics", reason="lab/server (the replica server) is not there yet")
    replica_text = server_metrics.ServerMetrics("tiny", lambda: None).render().decode()
    config = make_config([{"url": "http://127.0.0.1:9", "version": "v1"}])
    app = build_app(config, run_health=False)

    async def scrape() -> str:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            return (await client.get("/metrics")).text

    available = exported(asyncio.run(scrape())) | exported(replica_text)
    used = {base(name) for rule in rules() for name in metric_names(str(rule["expr"]))}
    assert used, "no metric names found in the rules"
    assert used <= available, f"not exported by the gateway or the replica server: {sorted(used - available)}"
    assert any(n.startswith("vllm:") for n in used) and any(n.startswith("lab_gateway_") for n in used)
