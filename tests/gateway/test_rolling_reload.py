"""`lab gateway rolling-reload` against two real replicas (tiny, CPU, engine core processes) behind a real gateway:
both end on the new weights, one at a time; a rollout that fails on the second replica reloads the first back to
the version it had; and a source every replica refuses changes nothing.

The second replica serves 3 layers where the first serves 2 (`--hf-overrides`), so a 2-layer checkpoint on disk
(written by `lab.engine.checkpoint_writer`) loads on the first and is refused by the second (it lacks layer 2).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import httpx
import pytest
import torch

from lab.engine.checkpoint_writer import write_checkpoint
from lab.gateway.rolling_reload import RollingReload, rolling_reload, version_source
from lab.errors import LabError
from tests.gateway.fakes import ADMIN_KEY
from tests.gateway.processes import ROOT, gateway_mapping, gateway_process
from tests.server.conftest import launch

REPLICA_KEY = "sk-test-replica-admin"
REPLICA_ADMIN = {"Authorization": f"Bearer {REPLICA_KEY}"}
LAYERS = {"a": 2, "b": 3}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rolling")
    key_hash = "sha256:" + hashlib.sha256(REPLICA_KEY.encode()).hexdigest()
    servers = {name: launch("--device", "cpu", "--admin-key-hash", key_hash, tmp_dir=tmp,
                            base_flags=("--model", "tiny", "--hf-overrides", json.dumps({"num_hidden_layers": n}),
                                        "--num-gpu-blocks", "64", "--max-model-len", "256"))
               for name, n in LAYERS.items()}
    try:
        for srv in servers.values():
            srv.wait_ready()
        with gateway_process(gateway_mapping({n: s.url for n, s in servers.items()},
                                             health={"interval_s": 1.0, "probe_timeout_s": 0.6}), tmp) as gateway:
            yield gateway, {n: s.url for n, s in servers.items()}, tmp
    finally:
        for srv in servers.values():
            srv.stop()


def versions(urls: dict[str, str]) -> dict[str, str]:
    return {n: httpx.get(f"{u}/admin/reload", headers=REPLICA_ADMIN).json()["version"] for n, u in urls.items()}


def plan(gateway: str, source: str, seed: int | None = None) -> RollingReload:
    return RollingReload(gateway, ADMIN_KEY, REPLICA_KEY, source, seed, observe_s=1.0)


def test_every_replica_is_reloaded_in_turn_then_a_failure_on_the_second_rolls_the_first_back(fleet):
    gateway, urls, tmp = fleet
    done = rolling_reload(plan(gateway, "tiny", seed=5))
    assert done["completed"] and [s["outcome"] for s in done["steps"]] == ["reloaded", "reloaded"]
    assert versions(urls) == {"a": "tiny@seed5", "b": "tiny@seed5"}
    assert all(s["probe"]["healthy"] for s in done["steps"])

    two_layers = write_checkpoint("tiny", tmp / "ckpt", seed=9, dtype=torch.float32,
                                  hf_overrides={"num_hidden_layers": 2})
    failed = rolling_reload(plan(gateway, str(two_layers)))
    assert not failed["completed"] and failed["rolled_back"]
    assert [s["outcome"] for s in failed["steps"]] == ["reloaded", "refused"]
    assert "model.layers.2" in failed["error"]  # b names the tensors a 2-layer checkpoint lacks
    assert [(r["replica"], r["to"], r["status"]) for r in failed["rollback"]] == [("a", "tiny@seed5", 200)]
    assert versions(urls) == {"a": "tiny@seed5", "b": "tiny@seed5"}

    nowhere = rolling_reload(plan(gateway, str(tmp / "nowhere")))
    assert [s["outcome"] for s in nowhere["steps"]] == ["refused"] and nowhere["rollback"] == []
    assert versions(urls) == {"a": "tiny@seed5", "b": "tiny@seed5"}


def test_the_cli_reads_its_keys_from_the_environment(fleet):
    gateway, urls, _ = fleet
    env = {**os.environ, "LAB_GATEWAY_ADMIN_KEY": ADMIN_KEY}
    missing = subprocess.run([sys.executable, "-m", "lab", "gateway", "rolling-reload", "--gateway", gateway,
                              "--source", "tiny"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "LAB_REPLICA_ADMIN_KEY" in missing.stderr
    env["LAB_REPLICA_ADMIN_KEY"] = REPLICA_KEY
    ran = subprocess.run([sys.executable, "-m", "lab", "gateway", "rolling-reload", "--gateway", gateway,
                          "--source", "tiny", "--seed", "6", "--observe-s", "0.5", "--policy", "switch"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["completed"] and versions(urls) == {"a": "tiny@seed6", "b": "tiny@seed6"}


def test_labels_map_back_to_sources_and_bad_plans_are_refused():
    assert version_source("tiny@seed7") == ("tiny", 7)
    assert version_source("/ckpt/r1@seed-x") == ("/ckpt/r1@seed-x", None)
    with pytest.raises(LabError, match="policy must be one of"):
        RollingReload("http://127.0.0.1:1", "k", "k", "tiny", policy="swap")
    with pytest.raises(LabError, match="both needed"):
        RollingReload("http://127.0.0.1:1", "", "k", "tiny")
