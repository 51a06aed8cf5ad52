"""`lab.chaos.model_faults` against a real `lab serve --enable-fault-injection` replica, and the model drills.

One replica (tiny, 2 layers, CPU) serves the module; a test that arms a fault clears it. The actions arm what
they say on the replica and return records with the fields a drill journal needs (target, backend, both
clocks, the replica's kind/mode/device); NaN weights walk the road a drill expects (requests fail, /health
503 degraded, clear, 200); `clear_model_faults` is a safe rollback on a replica that is gone; a wrong key is
a `LabError`. The experiment files chaos/model-*.yaml are drills `lab.studies.chaos` can read, call only
functions that exist with arguments they accept, and roll back with a clear whatever happens.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
from pathlib import Path

import httpx
import pytest
import yaml

from lab.chaos import model_faults
from lab.errors import LabError
from lab.service.state import ProcessRecord, ServiceState, write_state
from lab.studies.chaos.catalog import load_drill
from tests.server.conftest import free_port, launch

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "sk-test-model-faults"
DRILLS = sorted(path.stem for path in (ROOT / "chaos").glob("model-*.yaml"))


@pytest.fixture(scope="module")
def replica_url(tmp_path_factory):
    admin_hash = "sha256:" + hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    srv = launch("--device", "cpu", "--enable-fault-injection", "--admin-key-hash", admin_hash,
                 tmp_dir=tmp_path_factory.mktemp("model-faults"))
    try:
        srv.wait_ready()
        yield srv.url
    finally:
        srv.stop()


@pytest.fixture
def url(replica_url):
    yield replica_url
    model_faults.clear_model_faults(replica_url, ADMIN_KEY)


def test_each_action_arms_its_fault_and_clear_undoes_them_all(url):
    slow = model_faults.arm_slow_step(url, ADMIN_KEY, delay_ms="50")  # chaostoolkit may hand numbers as text
    assert slow["action"] == "arm_slow_step" and slow["target"] == url and slow["backend"] == "replica"
    assert slow["kind"] == "slow_step" and slow["delay_ms"] == 50.0 and slow["device"] == "cpu"
    assert slow["at_monotonic_s"] >= slow["armed_at_monotonic_s"] > 0 and slow["at_wall_s"] > 0
    nan = model_faults.arm_nan_weights(url, ADMIN_KEY, layer=1)
    assert nan["weight"] == "model.layers.1.self_attn.o_proj.weight"
    oom = model_faults.arm_oom(url, ADMIN_KEY, steps=3)
    assert oom["mode"] == "raise" and oom["steps"] == 3  # auto on a CPU: raise
    model_faults.arm_hang_step(url, ADMIN_KEY, duration_s=30)  # idle: no step to hang yet
    assert sorted(model_faults.armed_model_faults(url, ADMIN_KEY)) == ["hang_step", "nan_weights", "oom", "slow_step"]
    assert model_faults.no_model_fault_armed(url, ADMIN_KEY) is False
    cleared = model_faults.clear_model_faults(url, ADMIN_KEY)
    assert cleared["cleared"] is True and sorted(cleared["kinds"]) == ["hang_step", "nan_weights", "oom", "slow_step"]
    assert model_faults.no_model_fault_armed(url, ADMIN_KEY) is True


def test_nan_weights_walk_the_road_a_drill_expects(url):
    model_faults.arm_nan_weights(url, ADMIN_KEY)
    failed = httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 4}, timeout=60)
    assert failed.status_code == 500 and "non-finite logits" in failed.json()["error"]["message"]
    degraded = model_faults.wait_for_replica_health(url, status="503", timeout_s=10)
    assert degraded["code"] == "engine_degraded" and degraded["at_monotonic_s"] > 0
    model_faults.clear_model_faults(url, ADMIN_KEY)
    assert model_faults.wait_for_replica_health(url, status=200, timeout_s=10)["status"] == 200
    served = httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 4}, timeout=60)
    assert served.status_code == 200


def test_clear_is_a_safe_rollback_on_a_replica_that_is_gone():
    record = model_faults.clear_model_faults(f"http://127.0.0.1:{free_port()}", ADMIN_KEY)
    assert record["cleared"] is False and "unreachable" in record["reason"]


def test_a_wrong_key_or_an_impossible_fault_is_a_lab_error(url):
    with pytest.raises(LabError, match="401"):
        model_faults.arm_slow_step(url, "sk-wrong", delay_ms=5)
    with pytest.raises(LabError, match="needs a CUDA device"):
        model_faults.arm_oom(url, ADMIN_KEY, mode="allocate")
    with pytest.raises(LabError, match="401"):
        model_faults.clear_model_faults(url, "sk-wrong")  # a rollback with the wrong key must not pass quietly


def test_replica_url_reads_the_replicas_own_url_from_state_json(tmp_path):
    replica = ProcessRecord("tiny-0", "replica", 1, 8001, "http://127.0.0.1:8001", "v1", 0.0, 0, "ready", "log",
                            network="proxy", route_url="http://127.0.0.1:9001")
    gateway = ProcessRecord("gateway", "gateway", 2, 9000, "http://127.0.0.1:9000", None, 0.0, 0, "ready", "log")
    state = tmp_path / "state.json"
    write_state(state, ServiceState("drill", "ready", 3, "lab up", None, str(tmp_path), gateway.url, None,
                                    (replica, gateway)))
    assert model_faults.replica_url(str(state), "tiny-0") == "http://127.0.0.1:8001"  # not the proxy's
    with pytest.raises(LabError, match="not a replica"):
        model_faults.replica_url(str(state), "gateway")


def _python_activities(experiment: dict) -> list[dict]:
    configured = [v for v in experiment["configuration"].values() if isinstance(v, dict) and v.get("type") == "probe"]
    probes = experiment["steady-state-hypothesis"]["probes"]
    tolerances = [p["tolerance"] for p in probes if isinstance(p.get("tolerance"), dict)]
    return configured + probes + tolerances + experiment["method"] + experiment["rollbacks"]


@pytest.mark.parametrize("name", DRILLS)
def test_a_model_experiment_is_a_drill_that_always_rolls_back_with_a_clear(name):
    assert len(DRILLS) == 4
    drill = load_drill(name, ROOT / "chaos")
    assert drill.target == "replica"
    experiment = yaml.safe_load((ROOT / "chaos" / f"{name}.yaml").read_text())
    assert experiment["runtime"]["rollbacks"]["strategy"] == "always"
    (rollback,) = experiment["rollbacks"]
    assert rollback["provider"]["func"] == "clear_model_faults"
    for activity in _python_activities(experiment):
        provider = activity["provider"]
        func = getattr(importlib.import_module(provider["module"]), provider["func"])
        inspect.signature(func).bind(**provider.get("arguments", {}))  # every argument is one it takes
