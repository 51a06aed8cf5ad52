"""What the service said during a drill: the gateway's view of each replica and Prometheus' alerts, over time.

Contract: `ServiceWatch(gateway_url, admin_key, prometheus_url=None, interval_s=0.25)` polls, in its own
thread, `GET /admin/replicas` (each replica's `healthy` and failure counts, and the gateway's own events:
`ejected`, `readmitted`, ... stamped with its `time.monotonic()`, the system-wide clock the fault records
and the drill client use) and, when given a Prometheus, `GET /api/v1/alerts` (every pending or firing
alert, with its `activeAt`). `start()` / `stop()` (or `with`); `stop()` returns a `WatchLog` of typed
samples: `replica_samples`, `gateway_events` (deduplicated: each poll returns the last 200 events),
`alert_samples`, and `gateway_down_s` (polls the gateway did not answer: it was down or restarting).
Times are `time.monotonic()` seconds; an alert's `activeAt` is converted to that clock too. A poll that
fails is recorded, never raised: the watch must outlive the faults it watches. It stops by itself after
`max_duration_s`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime

import httpx

POLL_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class ReplicaSample:
    at_s: float
    replica: str
    healthy: bool
    consecutive_failures: int  # probes failed in a row
    consecutive_upstream_failures: int  # requests that timed out or could not connect, in a row


@dataclass(frozen=True)
class GatewayEvent:
    at_s: float
    kind: str  # ejected, readmitted, rollback, ...
    replica: str
    message: str


@dataclass(frozen=True)
class AlertSample:
    at_s: float  # when this poll saw it
    name: str
    state: str  # pending | firing
    active_at_s: float | None  # when it became pending (Prometheus' activeAt), same clock
    labels: dict = field(default_factory=dict)


@dataclass(frozen=True)
class WatchLog:
    started_s: float
    stopped_s: float
    replica_samples: tuple[ReplicaSample, ...] = ()
    gateway_events: tuple[GatewayEvent, ...] = ()
    alert_samples: tuple[AlertSample, ...] = ()
    gateway_down_s: tuple[float, ...] = ()

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> WatchLog:
        return cls(data["started_s"], data["stopped_s"], tuple(ReplicaSample(**s) for s in data["replica_samples"]),
                   tuple(GatewayEvent(**e) for e in data["gateway_events"]),
                   tuple(AlertSample(**a) for a in data["alert_samples"]), tuple(data["gateway_down_s"]))


def rfc3339_to_wall_s(text: str) -> float | None:
    """Prometheus' timestamps carry nanoseconds; Python's parser takes microseconds."""
    try:
        head, _, rest = text.rstrip("Z").partition(".")
        fraction = "".join(c for c in rest if c.isdigit())[:6]
        stamp = datetime.fromisoformat(f"{head}.{fraction or '0'}+00:00")
    except ValueError:
        return None
    return stamp.timestamp()


class ServiceWatch:
    def __init__(self, gateway_url: str, admin_key: str, prometheus_url: str | None = None,
                 interval_s: float = 0.25, max_duration_s: float = 1800.0) -> None:
        self.gateway_url, self.admin_key, self.prometheus_url = gateway_url.rstrip("/"), admin_key, prometheus_url
        self.interval_s, self.max_duration_s = interval_s, max_duration_s
        self._replicas: list[ReplicaSample] = []
        self._events: dict[tuple[float, str, str], GatewayEvent] = {}
        self._alerts: list[AlertSample] = []
        self._down: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def __enter__(self) -> ServiceWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ServiceWatch:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="lab-chaos-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> WatchLog:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10 * POLL_TIMEOUT_S)
        events = sorted(self._events.values(), key=lambda e: e.at_s)
        return WatchLog(self._started, time.monotonic(), tuple(self._replicas), tuple(events), tuple(self._alerts),
                        tuple(self._down))

    def _run(self) -> None:
        with httpx.Client(timeout=POLL_TIMEOUT_S, trust_env=False) as http:
            while not self._stop.is_set() and time.monotonic() - self._started < self.max_duration_s:
                self._poll_gateway(http)
                if self.prometheus_url:
                    self._poll_alerts(http)
                self._stop.wait(self.interval_s)

    def _poll_gateway(self, http: httpx.Client) -> None:
        now = time.monotonic()
        try:
            snapshot = http.get(f"{self.gateway_url}/admin/replicas",
                                headers={"Authorization": f"Bearer {self.admin_key}"}).json()
        except (httpx.HTTPError, ValueError):
            self._down.append(now)
            return
        for r in snapshot.get("replicas", []):
            self._replicas.append(ReplicaSample(now, r["name"], bool(r["healthy"]), int(r["consecutive_failures"]),
                                                int(r.get("consecutive_upstream_failures", 0))))
        for e in snapshot.get("events", []):
            key = (float(e["at"]), e["kind"], e.get("replica", ""))
            self._events.setdefault(key, GatewayEvent(key[0], key[1], key[2], e.get("message", "")))

    def _poll_alerts(self, http: httpx.Client) -> None:
        now, offset = time.monotonic(), time.time() - time.monotonic()  # wall -> monotonic
        try:
            alerts = http.get(f"{self.prometheus_url}/api/v1/alerts").json()["data"]["alerts"]
        except (httpx.HTTPError, ValueError, KeyError):
            return
        for alert in alerts:
            wall = rfc3339_to_wall_s(alert.get("activeAt", ""))
            labels = {k: v for k, v in alert["labels"].items() if k != "alertname"}
            self._alerts.append(AlertSample(now, alert["labels"].get("alertname", ""), alert["state"],
                                            None if wall is None else wall - offset, labels))
