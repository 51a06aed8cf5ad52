"""The drill runner: start the service, put each drill's experiment through it with chaostoolkit, keep everything.

Contract: `run_drills(config, run_dir)` starts the service of `lab.studies.chaos.service` (replicas, their
network, the gateway, Prometheus with the drill rules) under `<run_dir>/service/`, then for each drill of
`config.drills`, in order: waits until every replica is ready and in service (`settle`), starts a
`ServiceWatch` (gateway view and alerts), runs `chaos/<drill>.yaml` in this process with chaostoolkit's
own runner (`chaoslib.run_experiment`; the targets, keys and tunables passed as configuration, so the
file is exactly what `chaos run` executes), stops the watch, and reads the client ledger and state.json.
The journal goes to `<run_dir>/journals/<drill>.json`, the ledger to `<run_dir>/ledgers/<drill>.json`,
the watch to `<run_dir>/watch/<drill>.json`. A drill whose experiment fails still gives its report (its
verdict says so) and the next drill runs after the service settled; a service that does not settle ends
the study with a `LabError`. The service stops at the end, also on error. Returns a `DrillStudy`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lab.chaos.drill_client import DrillRequest
from lab.chaos.drill_report import DrillResult
from lab.chaos.probes import replica_state
from lab.chaos.records import Instant
from lab.chaos.watch import ServiceWatch
from lab.errors import LabError
from lab.service.supervisor import Service
from lab.studies.chaos.catalog import load_drill
from lab.studies.chaos.config import DrillStudyConfig
from lab.studies.chaos.metrics import DrillInputs, DrillReport, drill_report
from lab.studies.chaos.service import DRILL_RULES, choose_network, drill_keys, drill_service_spec

WATCH_INTERVAL_S = 0.25


@dataclass(frozen=True)
class DrillStudy:
    config: DrillStudyConfig
    network: dict  # {"backend": proxy | netns, "reason": ...}
    reports: tuple[DrillReport, ...]
    journals: tuple[Path, ...]
    service_ready_s: float  # the service's start, replicas loading included
    wall_s: float  # the whole study
    artifacts: tuple[Path, ...] = field(default_factory=tuple)

    def metrics(self) -> dict[str, float]:
        metrics: dict[str, float] = {"drills": float(len(self.reports)), "service_ready_s": self.service_ready_s,
                                     "probe_interval_s": self.config.probe_interval_s,
                                     "drills_passed": float(sum(r.passed for r in self.reports)),
                                     "lost_total": float(sum(r.lost for r in self.reports)),
                                     "network_backend_netns": float(self.network["backend"] == "netns")}
        for report in self.reports:
            metrics.update(report.metrics())
        return metrics


def rule_windows_s(rules: Path = DRILL_RULES) -> dict[str, float]:
    """alert -> its `for:` in seconds (0 without one), from a Prometheus rules file."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    windows = {}
    for group in yaml.safe_load(rules.read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            text = str(rule.get("for", "0s"))
            unit = "ms" if text.endswith("ms") else text[-1]
            windows[rule["alert"]] = float(text[: -len(unit)]) * units[unit]
    return windows


def ledger_from_file(path: Path) -> DrillResult | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    summary, names = data["summary"], DrillRequest.__dataclass_fields__
    rows = tuple(DrillRequest(**{k: v for k, v in row.items() if k in names}) for row in data["timeline"])
    return DrillResult(rows, Instant(summary["started_wall_s"], summary["started_monotonic_s"]),
                       Instant(0.0, summary["stopped_monotonic_s"]), params=summary.get("params", {}),
                       tiers=tuple(summary["tiers"]))


def settle(service: Service, admin_key: str, timeout_s: float) -> None:
    """Every replica ready (supervisor) and in service (gateway), the gateway ready."""
    deadline = time.monotonic() + timeout_s
    names = [p.name for p in service.processes() if p.kind in ("replica", "proxy")]
    while True:
        try:
            for name in [*names, "gateway"]:
                service.wait_ready(name, max(0.1, deadline - time.monotonic()))
            if all(replica_state(service.gateway_url, n, admin_key)["state"] == "healthy"
                   for n in names if service.process(n).kind == "replica"):
                return
        except LabError:
            pass
        if time.monotonic() > deadline:
            raise LabError(f"the service did not settle (every replica ready and in service) within {timeout_s} s; "
                           f"logs in {service.log_dir}")
        time.sleep(0.5)


def _run_experiment(experiment: dict, variables: dict) -> dict:
    from chaoslib.experiment import run_experiment

    return run_experiment(experiment, settings={}, experiment_vars=(variables, {}))


def warm_up(gateway_url: str, keys: dict, config: DrillStudyConfig) -> None:
    """The drill load for `config.warmup_s`, unrecorded: a fresh replica compiles kernels and captures shapes on
    its first requests, which would fail the first drill's steady state (its VIP TTFT) for no fault of its own."""
    if config.warmup_s <= 0:
        return
    from lab.chaos.load_faults import run_drill_load

    tiers = {tier: {"api_key": keys[tier], "rate_per_s": float(config.rates_per_s[tier])} for tier in config.rates_per_s}
    run_drill_load(gateway_url, tiers, config.warmup_s, max_tokens=config.max_tokens)


def run_drills(config: DrillStudyConfig, run_dir: Path) -> DrillStudy:
    began = time.monotonic()
    run_dir = Path(run_dir)
    network, keys = choose_network(config), drill_keys()
    spec = drill_service_spec(config, run_dir / "service", network["backend"], keys)
    reports, journals = [], []
    windows, slack = rule_windows_s(), 2 * config.scrape_interval_s + WATCH_INTERVAL_S
    for folder in ("journals", "ledgers", "watch"):
        (run_dir / folder).mkdir(parents=True, exist_ok=True)
    with Service(spec) as service:
        ready_s = time.monotonic() - began
        state_path = str(service.state_path)
        warm_up(service.gateway_url, keys, config)
        for name in config.drills:
            drill = load_drill(name)
            settle(service, keys["admin"], config.settle_timeout_s)
            ledger_path = run_dir / "ledgers" / f"{name}.json"
            variables = {**config.experiment_vars(name), "state_path": state_path, "vip_key": keys["vip"],
                         "batch_key": keys["batch"], "admin_key": keys["admin"], "replica_admin_key": keys["admin"],
                         "summary_path": str(ledger_path),
                         "overload_summary_path": str(run_dir / "ledgers" / f"{name}-excess.json"),
                         "summary_dir": str(run_dir / "ledgers")}
            watch = ServiceWatch(service.gateway_url, keys["admin"], service.prometheus_url, WATCH_INTERVAL_S).start()
            try:
                journal = _run_experiment(drill.experiment, variables)
            finally:
                log = watch.stop()
            journal_path = run_dir / "journals" / f"{name}.json"
            journal_path.write_text(json.dumps(journal, indent=1, default=str), encoding="utf-8")
            (run_dir / "watch" / f"{name}.json").write_text(json.dumps(log.as_dict()), encoding="utf-8")
            journals.append(journal_path)
            target = "gateway" if drill.target == "gateway" else config.target
            inputs = DrillInputs(drill, journal, ledger_from_file(ledger_path), log, service.state().events,
                                 time.time() - time.monotonic(), target, config.probe_interval_s, windows, slack)
            reports.append(drill_report(inputs))
    return DrillStudy(config, network, tuple(reports), tuple(journals), ready_s, time.monotonic() - began)
