"""RayPool on a local CPU-only Ray head with a real tiny replica.

Runs wherever Ray is installed (the `dev` extra has it, so CI runs it); starting a Ray head takes
tens of seconds on a small machine, so `LAB_TEST_RAY=0` skips it for a quick local loop.
"""

from __future__ import annotations

import os
import sys
import urllib.request

import pytest

if os.environ.get("LAB_TEST_RAY") == "0":
    pytest.skip("LAB_TEST_RAY=0: no local Ray head this time", allow_module_level=True)
ray = pytest.importorskip("ray")
pytest.importorskip("lab.server.cli")


def _pool(config, attempts: int = 2):
    """The pool, which starts the local Ray head. Ray waits a fixed 30 s for its raylet to register; on a 2-core CI
    box running other test workers that is sometimes too short, so a start that timed out is tried once more."""
    from lab.scale.ray_pool import RayPool

    for attempt in range(attempts):
        try:
            return RayPool(config)
        except Exception as exc:  # noqa: BLE001 - ray raises a bare Exception for this timeout
            ray.shutdown()
            if "timed out during startup" not in str(exc) or attempt == attempts - 1:
                raise


def test_ray_replica_starts_serves_and_stops() -> None:
    from lab.scale.pool import ReplicaState
    from lab.scale.ray_pool import RayPoolConfig

    config = RayPoolConfig(address=None, host="127.0.0.1", num_gpus_per_replica=0, num_cpus_per_replica=1,
                           command=(sys.executable, "-m", "lab", "serve", "--model", "tiny", "--device", "cpu",
                                    "--host", "127.0.0.1", "--port", "{port}"),
                           init_kwargs=(("num_cpus", 2), ("num_gpus", 0)), stop_timeout_s=20)
    try:
        with _pool(config) as pool:
            pool.scale_to(1)
            assert [r.state for r in pool.replicas()] == [ReplicaState.STARTING]
            (url,) = pool.wait_ready(1, timeout_s=150)
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                assert response.status == 200
            pool.scale_to(0)
            assert pool.replicas() == []
        with pytest.raises(OSError):
            urllib.request.urlopen(url + "/health", timeout=2)  # the server went with its actor
    finally:
        ray.shutdown()
