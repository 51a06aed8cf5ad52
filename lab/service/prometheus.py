"""A real Prometheus server for the local service: its binary, its config, and a client of its HTTP API.

Contract:
- `find_prometheus(binary=None)` is the path of the `prometheus` binary: `binary` if given (it must be an
  executable file), else `prometheus` on PATH, else /usr/bin/prometheus (Debian's package); missing, a
  `LabError` that says `apt-get install -y prometheus` (Debian's 2.42, with promtool).
- `ScrapeTarget(job, port, labels, metrics_path, host)` is one target (on 127.0.0.1 unless `host`);
  `write_config(path, targets, spec)` writes prometheus.yml: one scrape job per `job` name ("lab-gateway",
  "lab-replica": labels replica=<name>, version=<v>), every `scrape_interval_s`, the rules of `spec.rules`
  evaluated every `evaluation_interval_s`. `command(binary, config, port, tsdb)` is the server's command line: listen on
  127.0.0.1:<port>, keep the TSDB under the service's log folder, `--web.enable-lifecycle`;
  `prepare_server(...)` writes the config, empties the TSDB (a fresh one per `lab up`) and returns it.
- `PrometheusClient(url)`: `query(promql)` (the result vector: a list of `{"metric": {...}, "value": [t, "v"]}`),
  `alerts()` (pending and firing), `rules()` (every rule with its `health` and `lastError`), `targets()`
  (active scrape targets with `health`), `wait_for_alert(name, state, timeout_s)` (the alert once it is in
  `state`, else `LabError` with the alerts seen). An API error is a `LabError` with Prometheus's message.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from lab.errors import LabError
from lab.service.spec import HOST, PrometheusSpec

DEBIAN_BINARY = Path("/usr/bin/prometheus")
INSTALL_HINT = ("install Debian's package as root: `apt-get install -y prometheus` (Prometheus 2.42 with promtool; "
                "no systemd needed, the lab runs the binary itself), or set prometheus.binary, or "
                "prometheus.enabled: false")


def find_prometheus(binary: str | None = None, search_path: str | None = None) -> Path:
    if binary is not None:
        path = Path(binary)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LabError(f"prometheus.binary: {binary} is not an executable file; {INSTALL_HINT}")
        return path
    found = shutil.which("prometheus", path=search_path)
    if found:
        return Path(found)
    if search_path is None and DEBIAN_BINARY.is_file():
        return DEBIAN_BINARY
    raise LabError(f"the prometheus binary is not on PATH nor at {DEBIAN_BINARY}: {INSTALL_HINT}")


@dataclass(frozen=True)
class ScrapeTarget:
    job: str  # lab-gateway or lab-replica
    port: int
    labels: dict[str, str] = field(default_factory=dict)
    metrics_path: str = "/metrics"
    host: str = HOST  # a netns replica: its namespace's address


def _duration(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms"  # Prometheus durations: integers with a unit


def write_config(path: Path, targets: list[ScrapeTarget], spec: PrometheusSpec) -> None:
    jobs: dict[tuple[str, str], list[dict]] = {}
    for target in targets:
        jobs.setdefault((target.job, target.metrics_path), []).append(
            {"targets": [f"{target.host}:{target.port}"], "labels": dict(target.labels)})
    config = {
        "global": {"scrape_interval": _duration(spec.scrape_interval_s),
                   # Prometheus refuses a scrape timeout longer than the interval; its default is 10 s.
                   "scrape_timeout": _duration(min(spec.scrape_interval_s, 10.0)),
                   "evaluation_interval": _duration(spec.evaluation_interval_s)},
        "rule_files": [str(spec.rules)],
        "scrape_configs": [{"job_name": job, "metrics_path": metrics_path, "static_configs": static}
                           for (job, metrics_path), static in jobs.items()],
    }
    names = [c["job_name"] for c in config["scrape_configs"]]
    if len(set(names)) != len(names):  # one job per name: Prometheus rejects duplicates
        raise LabError(f"replicas of one job must share a metrics_path; got jobs {names}")
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def prepare_server(binary: Path, log_dir: Path, spec: PrometheusSpec, targets: list[ScrapeTarget],
                   port: int) -> tuple[str, ...]:
    """Write `<log_dir>/prometheus.yml`, empty the TSDB folder `<log_dir>/prometheus`; the server's command."""
    config, tsdb = log_dir / "prometheus.yml", log_dir / "prometheus"
    write_config(config, targets, spec)
    shutil.rmtree(tsdb, ignore_errors=True)  # a fresh TSDB per start: no series left from an earlier run's ports
    return command(binary, config, port, tsdb)


def command(binary: Path, config: Path, port: int, tsdb: Path) -> tuple[str, ...]:
    return (str(binary), f"--config.file={config}", f"--web.listen-address={HOST}:{port}",
            f"--storage.tsdb.path={tsdb}", "--web.enable-lifecycle")


class PrometheusClient:
    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s

    def _get(self, path: str, **params: str) -> Any:
        try:
            reply = httpx.get(self.url + path, params=params, timeout=self.timeout_s)
        except httpx.HTTPError as error:
            raise LabError(f"Prometheus at {self.url} did not answer {path}: {error}") from None
        body = reply.json() if reply.headers.get("content-type", "").startswith("application/json") else {}
        if reply.status_code != 200 or body.get("status") != "success":
            raise LabError(f"Prometheus {path} {params}: {reply.status_code} {body.get('error') or reply.text[:200]}")
        return body["data"]

    def query(self, promql: str) -> list[dict]:
        data = self._get("/api/v1/query", query=promql)
        if data["resultType"] != "vector":
            raise LabError(f"query {promql!r} gave a {data['resultType']}, not an instant vector")
        return data["result"]

    def alerts(self) -> list[dict]:
        return self._get("/api/v1/alerts")["alerts"]

    def rules(self) -> list[dict]:
        return [rule for group in self._get("/api/v1/rules")["groups"] for rule in group["rules"]]

    def targets(self) -> list[dict]:
        return self._get("/api/v1/targets")["activeTargets"]

    def wait_for_alert(self, name: str, state: str = "firing", timeout_s: float = 60.0, poll_s: float = 0.5) -> dict:
        if state not in ("pending", "firing"):
            raise LabError(f"alert state must be 'pending' or 'firing', got {state!r}")
        deadline = time.monotonic() + timeout_s
        while True:
            seen = self.alerts()
            for alert in seen:
                if alert["labels"].get("alertname") == name and alert["state"] == state:
                    return alert
            if time.monotonic() > deadline:
                now = [(a["labels"].get("alertname"), a["state"]) for a in seen]
                raise LabError(f"alert {name!r} not {state} after {timeout_s:g} s; alerts now: {now}")
            time.sleep(poll_s)
