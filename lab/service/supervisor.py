"""`Service`: a whole local service (replicas, gateway, Prometheus) started from a `ServiceSpec`, kept up, stopped.

Contract: `Service(spec)` is a context manager. `start()` checks what would fail late (binaries on PATH,
fixed ports busy), picks free ports on 127.0.0.1, writes `<log_dir>/gateway.yaml` (the spec's gateway
config with `replicas` pointing at the replicas, or at the fault proxy of a `network: proxy` replica) and
`<log_dir>/prometheus.yml`, creates the namespaces of `network: netns` replicas (`lab.service.network`),
starts the replicas, their proxies and Prometheus, waits for their readiness (`/ready`, the proxy's
`/health`, Prometheus `/-/ready`), then starts the gateway and
waits for its `/ready`. A process that exits first, or a wait past `ready_timeout_s`, raises `LabError`
with its log tail, after stopping whatever started. Each process runs in its own session and logs to
`<log_dir>/<name>.log` (see `lab.service.process`). Once ready, a monitor thread restarts a process that
exits when the policy is on-failure (backoff, a cap on failures in a row; `lab.service.slot`), and, as a
liveness probe would, ends a `lab serve` replica whose `/health` says its engine is dead (its engine-core
process died: the HTTP server lives on but can never serve again) so that it is restarted like an exit.
A restart keeps the process's port, so the gateway's config, which lists replica URLs, stays right and
Prometheus keeps scraping the same target. `restart(name)` stops one process and starts it again
(same port), waiting until it is ready: for chaos drills. `stop()` stops the gateway first (no new
requests), then the proxies, the replicas (SIGTERM: they drain; SIGKILL after `stop_timeout_s`), then
Prometheus, and deletes the namespaces it created.
Every change is written to `<log_dir>/state.json` (schema in `lab.service.state`); its events time each
exit, restart and return to ready; `wait_ready(name, replaced_pid=...)` waits for a restarted process.
`replica(name)` / `process(name)` give a `ProcessRecord` (pid, url, restarts, ...); `gateway_url`,
`prometheus_url`, `prometheus` (a `PrometheusClient`); `pids` lists every process started, restarts
included. Only processes started here are ever signalled; a program that exits without `stop()` stops
them at exit (atexit; a killed program leaves them to `lab down --state`).
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import time
import yaml

from lab.errors import LabError
from lab.service import network
from lab.service import prometheus as prom
from lab.service.process import ManagedProcess, check_binary, choose_port, engine_dead, wait_ready
from lab.service.spec import HOST, PYTHON_LAB, ServiceSpec
from lab.service.slot import Slot
from lab.service.state import (MAX_EVENTS, STATE_FILE, Event, ProcessRecord, ServiceState, refuse_a_second_supervisor,
                               write_state)


LIVENESS_INTERVAL_S = 1.0  # how often ready replicas' /health is read for a dead engine


class Service:
    def __init__(self, spec: ServiceSpec, monitor_interval_s: float = 0.2, supervisor: str = "python") -> None:
        self.spec, self.monitor_interval_s, self.supervisor = spec, monitor_interval_s, supervisor
        self.log_dir = spec.resolved_log_dir
        self.state_path = self.log_dir / STATE_FILE
        self.gateway_url: str | None = None
        self.prometheus_url: str | None = None
        self._slots: dict[str, Slot] = {}
        self._events: list[Event] = []
        self._status = "new"
        self._lock = threading.RLock()
        self._quit = threading.Event()
        self._monitor: threading.Thread | None = None
        self._namespaces: list[str] = []  # lab network namespaces created for netns replicas

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- starting -----------------------------------------------------------------------------------------
    def start(self) -> Service:
        with self._lock:
            if self._status != "new":
                raise LabError("this Service was started already; make a new one")
            self.log_dir.mkdir(parents=True, exist_ok=True)
            refuse_a_second_supervisor(self.state_path)  # before this Service writes anything into log_dir
            self._status = "starting"
        atexit.register(self.stop)  # a program that forgets stop() still leaves nothing running when it exits
        try:
            self._prepare()
            first = [s for s in self._slots.values() if s.process.kind != "gateway"]
            self._launch_and_wait(first)
            self._launch_and_wait([s for s in self._slots.values() if s.process.kind == "gateway"])
        except BaseException:
            self.stop(final_status="failed")  # never leave half a service running
            raise
        with self._lock:
            self._status = "ready"
            self._write()
        self._monitor = threading.Thread(target=self._watch, name=f"lab.service {self.spec.name}", daemon=True)
        self._monitor.start()
        return self

    def _prepare(self) -> None:
        taken: set[int] = set()  # ports chosen here: each process gets its own
        gateway, prometheus = self.spec.gateway, self.spec.prometheus
        gateway_port = choose_port(gateway.port, "gateway.port", taken) if gateway else None
        prometheus_port = choose_port(prometheus.port, "prometheus.port", taken) if prometheus.enabled else None
        binary = prom.find_prometheus(prometheus.binary) if prometheus.enabled else None
        links: dict[str, network.ReplicaLink] = {}
        for replica in self.spec.replicas:
            check_binary(replica.command[0], f"replica {replica.name!r}")
            port = choose_port(None, "", taken)
            proxy_port = choose_port(None, "", taken) if replica.network == "proxy" else None
            links[replica.name] = link = network.plan_link(self.spec.name, replica, port, proxy_port)
            if link.namespace:
                self._namespaces.append(link.namespace)  # deleted by stop(), also after a failed start
            self._add(replica.name, "replica", link.replica_command(replica.command), port, replica.ready_path,
                      replica.env, replica.version, host=link.host)
            if link.proxy_name and link.proxy_listen_port:
                self._add(link.proxy_name, "proxy", network.proxy_command(link.proxy_listen_port, link.host, port),
                          choose_port(None, "", taken), "/health")
            self._slots[replica.name].link = {
                "network": link.network, "route_url": link.route_url, "namespace": link.namespace,
                "proxy_control_url": self._url(link.proxy_name) if link.proxy_name else None}
        if gateway is not None and gateway_port is not None:
            config_path = self.log_dir / "gateway.yaml"
            replicas = [{"url": links[r.name].route_url, "version": r.version, "name": r.name}
                        for r in self.spec.replicas]
            config_path.write_text(yaml.safe_dump({**gateway.config, "replicas": replicas}, sort_keys=False),
                                   encoding="utf-8")
            command = (*PYTHON_LAB, "gateway", "--config", str(config_path), "--host", HOST, "--port", "{port}",
                       "--log-level", gateway.log_level)
            self._add("gateway", "gateway", command, gateway_port, "/ready")
            self.gateway_url = self._url("gateway")
        if binary is not None and prometheus_port is not None:
            targets = [prom.ScrapeTarget("lab-replica", self._slots[r.name].process.port,
                                         {"replica": r.name, "version": r.version}, r.metrics_path, links[r.name].host)
                       for r in self.spec.replicas if r.metrics_path is not None]
            if gateway_port is not None:
                targets.insert(0, prom.ScrapeTarget("lab-gateway", gateway_port))
            command = prom.prepare_server(binary, self.log_dir, prometheus, targets, prometheus_port)
            self._add("prometheus", "prometheus", command, prometheus_port, "/-/ready")
            self.prometheus_url = self._url("prometheus")

    def _url(self, name: str) -> str:
        process = self._slots[name].process
        return f"http://{process.host}:{process.port}"

    def _add(self, name: str, kind: str, command: tuple[str, ...], port: int, ready_path: str,
             env: dict[str, str] | None = None, version: str | None = None, host: str = HOST) -> None:
        command = tuple(part.replace("{port}", str(port)).replace("{host}", host) for part in command)
        process = ManagedProcess(name, kind, command, port, self.log_dir / f"{name}.log",
                                 f"http://{host}:{port}{ready_path}", env, host)
        self._slots[name] = Slot(process, version)

    def _launch_and_wait(self, slots: list[Slot]) -> None:
        with self._lock:
            for slot in slots:
                slot.launch(self._event)
            self._write()
        wait_ready([s.process for s in slots], self.spec.ready_timeout_s)
        with self._lock:
            for slot in slots:
                slot.mark_ready(self._event)
            self._write()

    # ----- keeping it up ------------------------------------------------------------------------------------
    def _watch(self) -> None:
        next_liveness = time.monotonic() + LIVENESS_INTERVAL_S
        while not self._quit.wait(self.monitor_interval_s):
            with self._lock:
                changed = [slot.tend(self.spec.restart, self._event) for slot in self._slots.values() if not slot.held]
                if any(changed):
                    self._write()
            if time.monotonic() >= next_liveness:
                next_liveness = time.monotonic() + LIVENESS_INTERVAL_S
                self._end_dead_engines()

    def _end_dead_engines(self) -> None:
        """Kill each ready `lab serve` replica whose engine is dead; the next look restarts it (policy permitting)."""
        with self._lock:
            ready = [s for s in self._slots.values() if s.process.kind == "replica" and s.state == "ready" and not s.held]
        for slot in ready:  # HTTP outside the lock: the monitor's restarts and restart() must not wait on it
            reason = engine_dead(f"http://{slot.process.host}:{slot.process.port}")
            if reason is not None:
                with self._lock:
                    if slot.state == "ready" and not slot.held:
                        self._event(slot.process.name, "engine_dead", reason)
                        slot.process.signal(signal.SIGKILL)

    def restart(self, name: str) -> ProcessRecord:
        """Stop `name` (SIGTERM, SIGKILL after stop_timeout_s) and start it again on its port; wait until ready."""
        with self._lock:
            slot = self._slot(name)
            if self._status != "ready" or slot.held:
                raise LabError(f"cannot restart {name!r} now: the service is {self._status}"
                               + (" and a restart of it is under way" if slot.held else ""))
            slot.held = True
        try:
            slot.process.stop(self.spec.stop_timeout_s)
            with self._lock:
                slot.state = "down"
                self._event(name, "stopped", "restart requested")
                slot.restarts += 1
                slot.launch(self._event)
                self._write()
            wait_ready([slot.process], self.spec.ready_timeout_s)
            with self._lock:
                slot.mark_ready(self._event)
        finally:
            with self._lock:
                slot.held = False  # not ready: the monitor sees the exit and applies the restart policy
                self._write()
        return self.process(name)

    def wait_ready(self, name: str, timeout_s: float = 60.0, replaced_pid: int | None = None,
                   poll_s: float = 0.1) -> ProcessRecord:
        """Block until `name` is ready, else `LabError`. After killing it, pass its old pid as `replaced_pid`:
        until the monitor notices the exit (within `monitor_interval_s`) the old record still says ready."""
        deadline = time.monotonic() + timeout_s
        while (record := self.process(name)).state != "ready" or record.pid == replaced_pid:
            if record.state in ("failed", "exited", "stopped") or time.monotonic() > deadline:
                raise LabError(f"{name} is {record.state}, not ready, after {timeout_s:g} s; log {record.log}")
            time.sleep(poll_s)
        return record

    # ----- stopping -----------------------------------------------------------------------------------------
    def stop(self, final_status: str = "stopped") -> None:
        with self._lock:
            if self._status in ("stopped", "failed"):
                return
            started = self._status != "new"
            self._status = "stopping"
            for slot in self._slots.values():
                slot.held = True
            if started:
                self._write()
        atexit.unregister(self.stop)
        self._quit.set()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join()
        # Gateway first (no new requests reach a draining replica), Prometheus last (it sees the end).
        for kind in ("gateway", "proxy", "replica", "prometheus"):
            slots = [s for s in self._slots.values() if s.process.kind == kind and s.process.popen is not None]
            for slot in slots:
                slot.process.terminate()
            deadline = time.monotonic() + self.spec.stop_timeout_s
            for slot in slots:
                slot.process.wait_or_kill(deadline)
                with self._lock:
                    if slot.state in ("starting", "ready", "down"):
                        self._event(slot.process.name, "stopped", f"status {slot.process.exit_code()}")
                    slot.state = "stopped"
        for name in self._namespaces:  # after the replicas inside them have stopped
            try:
                network.delete_namespace(name)
            except LabError as error:
                with self._lock:
                    self._event("supervisor", "namespace_left", f"{name}: {error}")
        with self._lock:
            self._status = final_status
            if started:
                self._write()

    # ----- what it looks like -------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        return self._status

    @property
    def prometheus(self) -> prom.PrometheusClient:
        if self.prometheus_url is None:
            raise LabError(f"service {self.spec.name!r} runs no Prometheus (prometheus.enabled: false)")
        return prom.PrometheusClient(self.prometheus_url)

    @property
    def pids(self) -> list[int]:
        """Every process started here, restarts included, replicas first (for audits and tests)."""
        return [pid for slot in self._slots.values() for pid in slot.process.pids]

    def _slot(self, name: str) -> Slot:
        if name not in self._slots:
            raise LabError(f"no process {name!r} in service {self.spec.name!r}; known: {list(self._slots)}")
        return self._slots[name]

    def process(self, name: str) -> ProcessRecord:
        with self._lock:
            return self._slot(name).record()

    def replica(self, name: str) -> ProcessRecord:
        record = self.process(name)
        if record.kind != "replica":
            raise LabError(f"{name!r} is the service's {record.kind}, not a replica")
        return record

    def processes(self) -> list[ProcessRecord]:
        with self._lock:
            return [slot.record() for slot in self._slots.values()]

    def state(self) -> ServiceState:
        with self._lock:
            return ServiceState(self.spec.name, self._status, os.getpid(), self.supervisor,
                                str(self.spec.source) if self.spec.source else None, str(self.log_dir),
                                self.gateway_url, self.prometheus_url, tuple(s.record() for s in self._slots.values()),
                                tuple(self._events))

    def _event(self, process: str, event: str, detail: str = "") -> None:
        self._events.append(Event(time.time(), process, event, detail))
        del self._events[:-MAX_EVENTS]  # a crash loop must not grow memory without end

    def _write(self) -> None:
        write_state(self.state_path, self.state())


