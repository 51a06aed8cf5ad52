"""`lab gateway --replica URL[,...]` and `--anonymous-tier`: replicas without editing YAML, tested on real
processes (a `lab gateway` subprocess in front of the minimal upstream of the gateway latency study)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lab.errors import LabError
from lab.gateway.cli import gateway_config, replica_option
from tests.gateway.fakes import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "deploy" / "gateway.example.yaml")
BODY = {"model": "echo", "prompt": "ping", "max_tokens": 1}


def wait_for(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise AssertionError(f"{process.args} exited with {process.returncode}: {process.stdout.read()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer 200 within {timeout_s} s"
        time.sleep(0.1)


def stop(process: subprocess.Popen) -> str:
    process.terminate()
    try:
        out, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out or ""


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "lab.studies.gateway_latency.upstream", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/v1/models", process, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def start_gateway(*options: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "lab", "gateway", *options, "--port", str(port)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/ready", process)
    return process, url


def test_replica_option_reads_url_and_fields() -> None:
    assert replica_option("http://h:1", "v1") == {"url": "http://h:1", "version": "v1"}
    assert replica_option(" http://h:1/ , version=v2, name=b,weight=0.5,model=tiny", "v1") == {
        "url": "http://h:1/", "version": "v2", "name": "b", "weight": 0.5, "model": "tiny"}


@pytest.mark.parametrize("spec, problem", [
    ("127.0.0.1:8001", "expected an http(s) URL first"),
    ("http://", "expected an http(s) URL first"),
    ("http://h:1,v2", "'v2' is not FIELD=VALUE"),
    ("http://h:1,wieght=2", "unknown field 'wieght'"),
    ("http://h:1,name=a,name=b", "name is given twice"),
    ("http://h:1,version=", "version is empty"),
    ("http://h:1,weight=heavy", "weight must be a positive number"),
    ("http://h:1,weight=0", "weight must be a positive number"),
    ("http://h:1,weight=nan", "weight must be a positive number"),
])
def test_a_bad_replica_option_names_the_problem(spec: str, problem: str) -> None:
    with pytest.raises(LabError, match="--replica") as error:
        replica_option(spec, "v1")
    assert problem in str(error.value) and repr(spec) in str(error.value)


def test_replicas_replace_the_configs_and_keep_its_tiers_keys_and_stable_version() -> None:
    config = gateway_config(EXAMPLE, ["http://127.0.0.1:8101,name=a", "http://127.0.0.1:8102,version=v2,weight=3"],
                            None)
    assert [(r.name, r.url, r.version, r.weight) for r in config.replicas] == [
        ("a", "http://127.0.0.1:8101", "v1", 1.0), ("http://127.0.0.1:8102", "http://127.0.0.1:8102", "v2", 3.0)]
    assert config.stable_version == "v1" and len(config.keys) == 4 and config.anonymous_tier is None
    assert [t.name for t in config.tiers] == ["vip", "realtime", "async", "batch"]
    with pytest.raises(LabError, match="no replica has the config's stable_version 'v1'"):
        gateway_config(EXAMPLE, ["http://127.0.0.1:8101,version=v2"], None)


def test_without_keys_the_gateway_refuses_to_start_unless_anonymous_requests_have_a_tier() -> None:
    with pytest.raises(LabError, match="no API keys .*every request 401.*--anonymous-tier"):
        gateway_config(None, ["http://127.0.0.1:8101"], None)
    with pytest.raises(LabError, match="anonymous_tier: unknown tier 'gold'"):
        gateway_config(None, ["http://127.0.0.1:8101"], "gold")
    with pytest.raises(LabError, match="needs --config FILE .* or --replica URL"):
        gateway_config(None, None, "batch")
    config = gateway_config(None, ["http://127.0.0.1:8101"], "batch")
    assert config.keys == () and config.anonymous_tier == "batch" and config.stable_version == "v1"


def test_the_command_exits_2_naming_a_bad_replica(capsys: pytest.CaptureFixture) -> None:
    from lab.cli import main

    assert main(["gateway", "--config", EXAMPLE, "--replica", "http://127.0.0.1:8101,weight=-1"]) == 2
    assert "lab: error: --replica 'http://127.0.0.1:8101,weight=-1': weight must be a positive" in capsys.readouterr().err


def test_example_config_with_a_replica_on_the_command_line_serves_through_it(upstream: str) -> None:
    # The example config points at :8001, where nothing listens here: a 200 can only come from --replica.
    gateway, url = start_gateway("--config", EXAMPLE, "--replica", f"{upstream},name=minimal")
    try:
        reply = httpx.post(url + "/v1/completions", json=BODY, headers={"Authorization": "Bearer sk-vip-example"},
                           timeout=10)
        assert reply.status_code == 200 and reply.json()["choices"][0]["text"] == "ok"
        assert httpx.post(url + "/v1/completions", json=BODY, timeout=10).status_code == 401  # keys, no anonymous tier
        metrics = httpx.get(url + "/metrics", timeout=10).text
        assert 'replica="minimal"' in metrics and "127.0.0.1:8001" not in metrics
    finally:
        out = stop(gateway)
    assert f"replica minimal: {upstream} (version v1, weight 1)" in out


def test_no_config_and_an_anonymous_tier_serve_keyless_requests_at_that_tier(upstream: str) -> None:
    gateway, url = start_gateway("--replica", f"{upstream},version=v7", "--anonymous-tier", "batch")
    try:
        reply = httpx.post(url + "/v1/completions", json=BODY, timeout=10)
        assert reply.status_code == 200 and reply.json()["choices"][0]["text"] == "ok"
        wrong = httpx.post(url + "/v1/completions", json=BODY, headers={"Authorization": "Bearer sk-typo"}, timeout=10)
        assert wrong.status_code == 401  # a wrong key is an error, never a silent downgrade
        metrics = httpx.get(url + "/metrics", timeout=10).text
        served = [line for line in metrics.splitlines() if line.startswith("lab_gateway_requests_total")]
        assert any('tier="batch"' in line for line in served), served
    finally:
        out = stop(gateway)
    assert "served at tier 'batch'" in out and "stable 'v7'" in out


def test_the_command_refuses_a_keyless_gateway_in_a_real_process(upstream: str) -> None:
    done = subprocess.run([sys.executable, "-m", "lab", "gateway", "--replica", upstream, "--port", str(free_port())],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no API keys" in done.stderr and "Traceback" not in done.stderr
