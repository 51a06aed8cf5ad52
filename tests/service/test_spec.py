"""The service YAML: what it becomes, and mistakes named by their field before any process starts."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from lab.errors import LabError
from lab.service.load import load_spec, parse_spec
from lab.service.spec import RestartPolicy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "service.example.yaml"
ANONYMOUS = {"anonymous_tier": "batch"}


def spec_of(text: str, base: Path = ROOT):
    return parse_spec(yaml.safe_load(text), base)


def test_the_example_gives_two_lab_serve_replicas_behind_the_example_gateway() -> None:
    spec = load_spec(EXAMPLE)
    assert [r.name for r in spec.replicas] == ["tiny-0", "tiny-1"]
    command = spec.replicas[0].command
    assert command[:4] == (sys.executable, "-m", "lab", "serve")
    assert command[command.index("--port") + 1] == "{port}" and command[command.index("--host") + 1] == "127.0.0.1"
    assert "replicas" not in spec.gateway.config and len(spec.gateway.config["keys"]) == 4  # the example file's
    assert spec.prometheus.rules == ROOT / "deploy" / "prometheus" / "rules.yml"
    assert spec.restart.policy == "on-failure" and spec.resolved_log_dir == ROOT / "runs" / "up" / "local"


def test_count_names_identical_replicas_and_a_leading_python_is_this_interpreter() -> None:
    spec = spec_of("name: s\nreplicas: [{name: e, count: 3, version: v2, command: 'python up.py --port {port}'}]\n"
                   "gateway: {config: {anonymous_tier: batch}}")
    assert [(r.name, r.version) for r in spec.replicas] == [("e-0", "v2"), ("e-1", "v2"), ("e-2", "v2")]
    assert spec.replicas[0].command == (sys.executable, "up.py", "--port", "{port}")


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text("anonymous_tier: async\nreplicas: [{url: 'http://x:1', version: v1}]\n")
    (tmp_path / "r.yml").write_text("groups: []\n")
    (tmp_path / "s.yaml").write_text("name: s\nlog_dir: logs\nreplicas: [{model: tiny}]\ngateway: {config: gw.yaml}\n"
                                     "prometheus: {rules: r.yml}\n")
    spec = load_spec(tmp_path / "s.yaml")
    assert spec.log_dir == tmp_path / "logs" and spec.prometheus.rules == tmp_path / "r.yml"
    assert spec.gateway.config == {"anonymous_tier": "async"}  # the file's replicas are replaced by ours


def test_without_a_gateway_section_there_is_no_gateway() -> None:
    assert spec_of("name: s\nreplicas: [{model: tiny}]\n").gateway is None


@pytest.mark.parametrize(("text", "message"), [
    ("name: s\nreplicas: [{model: tiny}]\ncolour: red\n", "service config: colour: unknown field"),
    ("name: s\nreplicas: [{model: tiny, colour: red}]\n", "replicas[0].colour: unknown field"),
    ("name: s\nreplicas: [{model: tiny}]\nprometheus: {scrape_interval: 5}\n", "prometheus.scrape_interval: unknown"),
    ("replicas: [{model: tiny}]\n", "name: required field is missing"),
    ("name: s\nreplicas: []\n", "at least one replica"),
    ("name: s\nreplicas: [{model: tiny, count: 0}]\n", "replicas[0].count: expected a positive number"),
    ("name: s\nreplicas: [{model: tiny, count: true}]\n", "replicas[0].count: expected int"),
    ("name: s\nreplicas: [{command: server --port 8000}]\n", "replicas[0].command: must contain {port}"),
    ("name: s\nreplicas: [{command: 'x {port}', model: tiny}]\n", "replicas[0].model: applies to `lab serve`"),
    ("name: s\nreplicas: [{model: tiny, flags: [--port, '1']}]\n", "replicas[0].flags: lab serve flags: leave out"),
    ("name: s\nreplicas: [{model: tiny, engine: vllm}]\n", "engine must be one of"),
    ("name: s\nreplicas: [{model: tiny, env: {A: [1]}}]\n", "replicas[0].env: expected VAR: value"),
    ("name: s\nreplicas: [{name: a}, {name: a}]\n", "unique"),
    ("name: s\nreplicas: [{name: gateway}]\n", "taken by the service's gateway"),
    ("name: 'my service'\nreplicas: [{model: tiny}]\n", "is not a name"),
    ("name: s\nreplicas: [{model: tiny}]\nrestart: always\n", "restart: expected one of"),
    ("name: s\nreplicas: [{model: tiny}]\nrestart: {policy: on-failure, tries: 3}\n", "restart.tries: unknown field"),
    ("name: s\nreplicas: [{model: tiny}]\ngateway: {config: {anonymous_tier: batch, replicas: []}}\n",
     "gateway.config.replicas: leave it out"),
    ("name: s\nreplicas: [{model: tiny}]\ngateway: {config: {anonymous_tier: batch, health: {every_s: 1}}}\n",
     "gateway.config: gateway config: health.every_s: unknown field"),
    ("name: s\nreplicas: [{model: tiny}]\ngateway: {config: {}}\n", "no `keys` and no `anonymous_tier`"),
    ("name: s\nreplicas: [{model: tiny}]\ngateway: {config: {anonymous_tier: batch}, port: 70000}\n",
     "gateway.port: expected a port"),
    ("name: s\nreplicas: [{model: tiny}]\ngateway: {config: missing.yaml}\n", "cannot read gateway config"),
    ("name: s\nreplicas: [{model: tiny}]\nprometheus: {rules: nowhere.yml}\n", "prometheus.rules: no rules file"),
])
def test_a_mistake_is_named(text: str, message: str) -> None:
    with pytest.raises(LabError, match=re.escape(message)):
        spec_of(text)


def test_a_missing_file_and_bad_yaml_are_errors(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="cannot read service config"):
        load_spec(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("name: [\n")
    with pytest.raises(LabError, match="not valid YAML"):
        load_spec(tmp_path / "bad.yaml")


def test_the_restart_backoff_doubles_up_to_its_cap() -> None:
    policy = RestartPolicy(backoff_s=0.5, max_backoff_s=3.0)
    assert [policy.delay_s(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_the_restart_mapping_form_sets_every_knob() -> None:
    spec = spec_of("name: s\nreplicas: [{model: tiny}]\n"
                   "restart: {policy: never, max_restarts: 2, backoff_s: 0.5, max_backoff_s: 4}\n")
    assert spec.restart == RestartPolicy("never", 2, 0.5, 4.0)
