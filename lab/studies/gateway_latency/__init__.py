"""Study: the latency the gateway adds, straight to an upstream against through a real `lab gateway`.

What `lab gateway bench-latency` calls (re-exported lazily): `LatencyBenchConfig` / `run_latency_bench`
/ `latency_record` (`bench`), which fire an open-loop load (`load`) at a minimal upstream (`upstream`,
`python -m lab.studies.gateway_latency.upstream`) or a real replica, started by `lab.studies.launcher`.
"""
from lab.studies.exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "LatencyBenchConfig": "lab.studies.gateway_latency.bench",
    "LatencyBenchResult": "lab.studies.gateway_latency.bench",
    "run_latency_bench": "lab.studies.gateway_latency.bench",
    "latency_record": "lab.studies.gateway_latency.bench",
})
