"""Gateway configuration: YAML validated into frozen dataclasses.

Contract: `load_config(path)` / `parse_config(mapping)` return a `GatewayConfig` or raise
`ConfigError` whose message names the bad field (`tiers[1].timeout_ms: ...`); `read_config_file(path)`
gives the file's mapping unchecked, for callers that override fields first (`lab gateway --replica`).
`anonymous_tier` (default none: 401) serves requests that carry no key at that tier. Unknown fields are
errors too, so a typo never silently falls back to a default. Everything omitted takes the
article's defaults: tiers VIP (32 concurrent, 500 ms) > realtime (64, 2000 ms) > async > batch,
health probes every 15 s with 3 failures to eject, canaries that start at 1%.

Each tier's overload knobs (`max_inflight_share`, `borrow`, `reclaim_after_ms`, `preempt_after_ms`,
`preempts`, `preempt_delays_ms`, `min_inflight`) are one line each on `TierConfig`; what they do
together is the queue's contract (`lab.gateway.queue`), and why the defaults are what they are is the
comment above `DEFAULT_TIERS`. Names, priorities, caps and deadlines come from `lab.tiers`. Checks
across fields: shares may not grow from a higher tier to a lower one; `preempts` names lower tiers
only, and `preempt_delays_ms` (one per entry, each >= `preempt_after_ms`, non-decreasing) goes with it;
a minimum may not exceed its tier's `max_concurrency`, and all minimums sum to less than
`queue.max_inflight`. A tier's `first_byte_timeout_ms` / `stall_timeout_ms` (null: derived from its
`timeout_ms`, see `lab.gateway.budget`) bound how long a replica may keep its requests; `server` holds
the client-facing HTTP server's timeouts and limits.
Values the gateway derives at run time (health, weights, outstanding work) live in
`lab.gateway.traffic`, never here. See `deploy/gateway.example.yaml` for a commented example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab.errors import LabError
from lab.tiers import TIERS


ANONYMOUS_KEY_NAME = "anonymous"  # the key name (for its buckets) of requests without a key, under anonymous_tier


class ConfigError(LabError):
    """The gateway configuration is invalid; the message names the field."""


@dataclass(frozen=True)
class BucketLimit:
    """Token-bucket rates and bursts, in requests and in tokens (prompt estimate + max_tokens)."""

    requests_per_s: float
    request_burst: float
    tokens_per_s: float
    token_burst: float


@dataclass(frozen=True)
class TierConfig:
    name: str
    priority: int  # lower is served first; sent to replicas as vLLM's `priority`
    max_concurrency: int  # requests of this tier in flight to replicas at once
    timeout_ms: int  # longest wait in the queue before an explicit error
    tier_limit: BucketLimit  # shared by every key of the tier
    key_limit: BucketLimit  # each key of the tier on its own
    max_inflight_share: float = 1.0  # within its share while within-share requests hold < floor(share * max_inflight)
    borrow: bool = False  # may start above its share on idle slots (borrowed: reclaimed when a higher tier needs one)
    reclaim_after_ms: int | None = 0  # waited this long for a free slot: reclaim a lower borrowed one; None: never
    preempt_after_ms: int | None = None  # waited this long: cancel a running request of a tier in `preempts`
    preempts: tuple[str, ...] = ()  # lower tiers whose running requests it may cancel, tried in this order
    preempt_delays_ms: tuple[int, ...] = ()  # per entry of `preempts`: waited this long before it may be taken
    min_inflight: int = 0  # guaranteed running slots while it has waiters, held against all but the top tier
    # A replica's time budget for this tier's requests (lab.gateway.budget); None: derived from timeout_ms.
    first_byte_timeout_ms: int | None = None  # request sent -> first body byte; then retried on another replica
    stall_timeout_ms: int | None = None  # longest silence between two chunks of a stream; then an error event


@dataclass(frozen=True)
class KeyConfig:
    name: str
    hash: str  # see lab.gateway.auth.hash_key; the plain key is never stored
    tier: str


@dataclass(frozen=True)
class ReplicaConfig:
    url: str
    version: str
    weight: float = 1.0  # share of its version's work, relative to its siblings
    name: str = ""  # defaults to the url
    model: str | None = None  # rewrite the body's `model` to this name upstream, if set


@dataclass(frozen=True)
class HealthConfig:
    interval_s: float = 15.0
    failure_threshold: int = 3
    probe_timeout_s: float = 10.0
    probe_prompt: str = "ping"
    # Passive detection between probes: upstream timeouts or connection failures in a row (never a 4xx or a
    # 5xx, which a request's own input can cause) that eject a replica before its next probe.
    passive_failure_threshold: int = 3


@dataclass(frozen=True)
class CanaryConfig:
    percent: float = 1.0  # first step of a canary
    steps: tuple[float, ...] = (1.0, 5.0, 25.0, 50.0, 100.0)
    window_s: float = 1800.0  # the article watches a canary 30 minutes before ramping
    min_requests: int = 20  # no verdict on fewer canary requests than this
    error_rate_margin: float = 0.01  # canary error rate may exceed stable's by this much (absolute)
    latency_margin: float = 0.2  # canary p99 may exceed stable's by this fraction


@dataclass(frozen=True)
class QueueConfig:
    max_inflight: int = 128  # all tiers together; who gets a freed slot is the priority queue's call
    default_max_tokens: int = 256  # token cost of a request that does not say max_tokens


PROXY_CLIENTS = ("lab", "aiohttp")
MIN_HEADER_BYTES = 1024  # server.max_header_bytes below this would refuse ordinary requests


@dataclass(frozen=True)
class ProxyConfig:
    max_attempts: int = 3  # replicas tried before the first byte
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 600.0
    max_body_bytes: int = 8 * 1024 * 1024  # larger request bodies get a 413 before anything is forwarded
    client: str = "lab"  # upstream HTTP client: lab (lab.gateway.upstream_http) or aiohttp (the plain path)
    # A non-streaming answer's first byte is its last: its first-byte budget grows by max_tokens at this pace.
    min_tokens_per_s: float = 2.0


@dataclass(frozen=True)
class ServerConfig:
    """The client-facing HTTP server's limits (`lab.gateway.http_server`; uvicorn gets what it offers)."""

    header_timeout_s: float = 10.0  # first byte of a request -> end of its headers; then 408 and close
    body_timeout_s: float = 30.0  # end of the headers -> end of the body; then 408 and close
    keepalive_timeout_s: float = 5.0  # an idle connection (no request started) is closed after this
    max_connections: int = 2048  # open client connections; past it the oldest idle one makes room, else a 503
    max_header_bytes: int = 65536  # request line and headers; larger gets a 431 before more is read


@dataclass(frozen=True)
class GatewayConfig:
    tiers: tuple[TierConfig, ...]
    keys: tuple[KeyConfig, ...]
    replicas: tuple[ReplicaConfig, ...]
    admin_key_hash: str | None = None  # no admin endpoints without it
    anonymous_tier: str | None = None  # requests without a key are served at this tier; None: 401
    stable_version: str = ""  # defaults to the first replica's version
    health: HealthConfig = field(default_factory=HealthConfig)
    canary: CanaryConfig = field(default_factory=CanaryConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    def tier(self, name: str) -> TierConfig:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(name)


def _limit(rps: float, tps: float) -> BucketLimit:
    return BucketLimit(rps, 2 * rps, tps, 2 * tps)  # burst: two seconds' worth


# The names, priorities, caps and deadlines come from the one tier table (`lab.tiers`: the article's
# VIP 32 / 500 ms and realtime 64 / 2000 ms, the lab's async and batch); what follows is the gateway's own.
# Reservation and preemption (not in the article) keep VIP's 500 ms deadline under 2x overload; batch
# borrows the idle reserved slots, so the reservation costs little throughput. VIP takes a borrowed slot
# back at once; realtime and async first wait a little (500 ms, 5 s: a fraction of their timeouts), since
# a slot frees every ~1/8 of a request's time on a full replica and every reclaim loses a batch request.
# Async's share is realtime's (with 0.75 it waited for its share while borrowed batch requests ran, and
# timed out); VIP's last resort waits 200 ms for batch's slot (turnover usually frees one first), 300 ms
# for async's or realtime's, so those are taken only when VIP would otherwise miss its 500 ms. Batch keeps
# one running request (min_inflight) for that last resort to cancel.
# Measured (notebook 02's 2x overload, simulated over 40 seeds): the per-victim delays cut realtime and
# async cancellations from 126 to 51 with no VIP miss and VIP's queue wait at most 300 ms (400 ms cut them
# to 21, but with ~0.15 s of prefill on top VIP's TTFT P99 passed 500 ms in notebook 02: 0.55 s). Batch's
# minimum of 1 changes nothing with these shares (realtime and async may not start above 7 of 8
# within-share slots, so the 8th goes to batch whenever VIP leaves it) but keeps a batch request to cancel
# where realtime and async may use every slot (shares 1.0: their cancellations halve in the simulation);
# 2 trades fewer cancellations for realtime queue timeouts (10 to 22), async waits (P99 7 to 14 s) and
# throughput (-7 %).
_GATEWAY_TIER_SETTINGS: dict[str, dict[str, Any]] = {
    "vip": dict(tier_limit=_limit(200, 200_000), key_limit=_limit(50, 50_000), max_inflight_share=1.0,
                reclaim_after_ms=0, preempt_after_ms=200, preempts=("batch", "async", "realtime"),
                preempt_delays_ms=(200, 300, 300)),
    "realtime": dict(tier_limit=_limit(400, 400_000), key_limit=_limit(100, 100_000), max_inflight_share=0.9,
                     reclaim_after_ms=500, preempt_after_ms=500, preempts=("batch", "async"),
                     preempt_delays_ms=(500, 1500)),
    "async": dict(tier_limit=_limit(400, 800_000), key_limit=_limit(100, 200_000), max_inflight_share=0.9,
                  reclaim_after_ms=5000),
    "batch": dict(tier_limit=_limit(200, 800_000), key_limit=_limit(100, 400_000), max_inflight_share=0.5,
                  borrow=True, min_inflight=1),
}
DEFAULT_TIERS: tuple[TierConfig, ...] = tuple(
    TierConfig(t.name, t.priority, t.max_concurrency, t.timeout_ms, **_GATEWAY_TIER_SETTINGS[t.name]) for t in TIERS
)


def load_config(path: str | Path) -> GatewayConfig:
    return parse_config(read_config_file(path))


def read_config_file(path: str | Path) -> Any:
    """The YAML of a config file (an empty mapping for an empty file), not yet validated."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read gateway config {path}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"gateway config {path} is not valid YAML: {error}") from None
    return data if data is not None else {}


def parse_config(data: Any) -> GatewayConfig:
    top = _Fields(data, "")
    tiers = tuple(_tier(t) for t in top.items("tiers")) or DEFAULT_TIERS
    keys = tuple(_key(k) for k in top.items("keys"))
    replicas = tuple(_replica(r) for r in top.items("replicas"))
    config = GatewayConfig(
        tiers=tiers,
        keys=keys,
        replicas=replicas,
        admin_key_hash=top.get("admin_key_hash", str, None),
        anonymous_tier=top.get("anonymous_tier", str, None),
        stable_version=top.get("stable_version", str, replicas[0].version if replicas else ""),
        health=_section(top.sub("health"), HealthConfig, {"failure_threshold": int, "passive_failure_threshold": int}),
        canary=_canary(top.sub("canary")),
        queue=_section(top.sub("queue"), QueueConfig, {"max_inflight": int, "default_max_tokens": int}),
        proxy=_section(top.sub("proxy"), ProxyConfig, {"max_attempts": int, "max_body_bytes": int}),
        server=_section(top.sub("server"), ServerConfig, {"max_connections": int, "max_header_bytes": int}),
    )
    top.done()
    _cross_check(config)
    return config


def _tier(t: _Fields) -> TierConfig:
    tier = TierConfig(
        name=t.get("name", str), priority=t.get("priority", int),
        max_concurrency=t.positive("max_concurrency", int), timeout_ms=t.positive("timeout_ms", int),
        tier_limit=_bucket(t.sub("tier_limit", required=True)), key_limit=_bucket(t.sub("key_limit", required=True)),
        max_inflight_share=t.positive("max_inflight_share", float, 1.0),
        borrow=t.get("borrow", bool, False),
        reclaim_after_ms=t.optional_non_negative("reclaim_after_ms", int, 0),
        preempt_after_ms=t.optional_positive("preempt_after_ms", int),
        preempts=tuple(t.names("preempts")),
        preempt_delays_ms=tuple(t.ints("preempt_delays_ms")),
        min_inflight=t.get("min_inflight", int, 0),
        first_byte_timeout_ms=t.optional_positive("first_byte_timeout_ms", int),
        stall_timeout_ms=t.optional_positive("stall_timeout_ms", int),
    )
    if tier.min_inflight < 0:
        raise ConfigError(f"gateway config: {t.path}.min_inflight: expected an integer >= 0, got {tier.min_inflight}")
    if tier.min_inflight > tier.max_concurrency:
        raise ConfigError(f"gateway config: {t.path}.min_inflight: {tier.min_inflight} exceeds the tier's "
                          f"max_concurrency ({tier.max_concurrency}), so the minimum could never be met")
    if tier.max_inflight_share > 1.0:
        raise ConfigError(f"gateway config: {t.path}.max_inflight_share: expected 0 < share <= 1, "
                          f"got {tier.max_inflight_share}")
    if tier.borrow and tier.max_inflight_share >= 1.0:
        raise ConfigError(f"gateway config: {t.path}.borrow: a tier with max_inflight_share 1.0 has no share to "
                          "exceed, so it has nothing to borrow; lower its share or drop `borrow`")
    if (tier.preempt_after_ms is None) != (not tier.preempts):
        raise ConfigError(f"gateway config: {t.path}.preempts: preempt_after_ms and preempts go together "
                          f"(when to preempt, and whom); got {tier.preempt_after_ms} and {list(tier.preempts)}")
    _check_preempt_delays(tier, t.path)
    t.done()
    return tier


def _check_preempt_delays(tier: TierConfig, path: str) -> None:
    delays = tier.preempt_delays_ms
    if not delays:
        return
    field_name = f"gateway config: {path}.preempt_delays_ms"
    if len(delays) != len(tier.preempts):
        raise ConfigError(f"{field_name}: expected one delay per entry of preempts {list(tier.preempts)}, "
                          f"got {list(delays)}")
    if any(d < tier.preempt_after_ms for d in delays):
        raise ConfigError(f"{field_name}: expected delays >= preempt_after_ms ({tier.preempt_after_ms}), "
                          f"got {list(delays)}")
    if any(later < earlier for earlier, later in zip(delays, delays[1:])):
        raise ConfigError(f"{field_name}: expected non-decreasing delays (a tier later in preempts gives up its "
                          f"slots no sooner than one before it), got {list(delays)}")


def _bucket(b: _Fields) -> BucketLimit:
    limit = BucketLimit(*(b.positive(n, float) for n in ("requests_per_s", "request_burst", "tokens_per_s", "token_burst")))
    b.done()
    return limit


def _key(k: _Fields) -> KeyConfig:
    key = KeyConfig(name=k.get("name", str), hash=k.get("hash", str), tier=k.get("tier", str))
    k.done()
    return key


def _replica(r: _Fields) -> ReplicaConfig:
    url = r.get("url", str)
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"gateway config: {r.path}.url: expected an http(s) URL, got {url!r}")
    replica = ReplicaConfig(url=url.rstrip("/"), version=r.get("version", str), weight=r.positive("weight", float, 1.0),
                            name=r.get("name", str, url.rstrip("/")), model=r.get("model", str, None))
    r.done()
    return replica


def _canary(c: _Fields) -> CanaryConfig:
    steps = tuple(float(s) for s in c.get("steps", list, list(CanaryConfig.steps)))
    if not steps or any(b <= a for a, b in zip(steps, steps[1:])) or steps[-1] != 100.0 or steps[0] <= 0:
        raise ConfigError(f"gateway config: {c.path}.steps: expected increasing percents ending at 100, got {list(steps)}")
    canary = _section(c, CanaryConfig, {"min_requests": int}, steps=steps)
    if not 0 < canary.percent <= 100:
        raise ConfigError(f"gateway config: {c.path}.percent: expected 0 < percent <= 100, got {canary.percent}")
    return canary


def _section(f: _Fields, cls: type, ints: dict[str, type], **fixed: Any) -> Any:
    """A flat section of numbers (and strings) whose defaults are the dataclass defaults."""
    defaults = cls()
    values = dict(fixed)
    for name in cls.__dataclass_fields__:
        if name in values:
            continue
        default = getattr(defaults, name)
        kind = str if isinstance(default, str) else ints.get(name, float)
        values[name] = f.get(name, str, default) if kind is str else f.positive(name, kind, default)
    f.done()
    return cls(**values)


def _cross_check(config: GatewayConfig) -> None:
    names = [t.name for t in config.tiers]
    if len(set(names)) != len(names):
        raise ConfigError(f"gateway config: tiers: duplicate tier names in {names}")
    from lab.gateway.auth import check_hash_format  # here, not at the top: auth imports this module

    key_names = [k.name for k in config.keys]
    if len(set(key_names)) != len(key_names):
        raise ConfigError(f"gateway config: keys: duplicate key names in {key_names} (each key has its own buckets)")
    for i, key in enumerate(config.keys):
        if not check_hash_format(key.hash):
            raise ConfigError(f"gateway config: keys[{i}].hash: not a key hash; make one with `lab gateway hash-key`")
        if key.tier not in names:
            raise ConfigError(f"gateway config: keys[{i}].tier: unknown tier {key.tier!r}; known: {names}")
    if config.admin_key_hash is not None and not check_hash_format(config.admin_key_hash):
        raise ConfigError("gateway config: admin_key_hash: not a key hash; make one with `lab gateway hash-key`")
    if config.anonymous_tier is not None:
        if config.anonymous_tier not in names:
            raise ConfigError(f"gateway config: anonymous_tier: unknown tier {config.anonymous_tier!r}; known: {names}")
        if ANONYMOUS_KEY_NAME in key_names:
            raise ConfigError(f"gateway config: keys: the name {ANONYMOUS_KEY_NAME!r} is the buckets' name of requests "
                              "without a key (anonymous_tier); name the key otherwise")
    by_name = {t.name: t for t in config.tiers}
    for i, tier in enumerate(config.tiers):
        for name in tier.preempts:
            if name not in by_name:
                raise ConfigError(f"gateway config: tiers[{i}].preempts: unknown tier {name!r}; known: {names}")
            if by_name[name].priority <= tier.priority:
                raise ConfigError(f"gateway config: tiers[{i}].preempts: {name!r} (priority {by_name[name].priority}) "
                                  f"is not below {tier.name!r} (priority {tier.priority}): a tier preempts lower "
                                  "tiers only")
    minimums = sum(t.min_inflight for t in config.tiers)
    if minimums >= config.queue.max_inflight:
        raise ConfigError(f"gateway config: tiers: min_inflight sums to {minimums}, which leaves none of "
                          f"queue.max_inflight ({config.queue.max_inflight}) to the tiers without a minimum; "
                          "lower the minimums or raise max_inflight")
    by_priority = sorted(config.tiers, key=lambda t: t.priority)
    for higher, lower in zip(by_priority, by_priority[1:]):
        if lower.max_inflight_share > higher.max_inflight_share:
            raise ConfigError(f"gateway config: tiers: max_inflight_share of {lower.name!r} ({lower.max_inflight_share}) "
                              f"exceeds that of the higher tier {higher.name!r} ({higher.max_inflight_share}): "
                              "a lower tier would take the slots kept for a higher one")
    if config.server.max_header_bytes < MIN_HEADER_BYTES:
        raise ConfigError(f"gateway config: server.max_header_bytes: expected at least {MIN_HEADER_BYTES} (a request "
                          f"line and an Authorization header), got {config.server.max_header_bytes}")
    if config.proxy.client not in PROXY_CLIENTS:
        raise ConfigError(f"gateway config: proxy.client: expected one of {list(PROXY_CLIENTS)}, "
                          f"got {config.proxy.client!r}")
    replica_names = [r.name for r in config.replicas]
    if len(set(replica_names)) != len(replica_names):
        raise ConfigError(f"gateway config: replicas: duplicate replica names in {replica_names}")
    versions = {r.version for r in config.replicas}
    if config.replicas and config.stable_version not in versions:
        raise ConfigError(f"gateway config: stable_version: {config.stable_version!r} has no replica; known: {sorted(versions)}")


class _Fields:
    """Reads one mapping of the YAML, remembering its path for error messages and unread fields."""

    def __init__(self, data: Any, path: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"gateway config: {path or 'top level'}: expected a mapping, got {type(data).__name__}")
        self.data, self.path, self.seen = data, path, set()

    def _name(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, kind: type, default: Any = ...) -> Any:
        self.seen.add(name)
        if name not in self.data:
            if default is ...:
                raise ConfigError(f"gateway config: {self._name(name)}: required field is missing")
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ConfigError(f"gateway config: {self._name(name)}: expected {kind.__name__}, got {value!r}")
        return value

    def optional_positive(self, name: str, kind: type) -> Any:
        """A positive number, or None when missing or null (the feature is off)."""
        if self.data.get(name) is None:
            self.seen.add(name)
            return None
        return self.positive(name, kind)

    def optional_non_negative(self, name: str, kind: type, default: Any) -> Any:
        """A number >= 0, `default` when missing, None when null (the feature is off)."""
        self.seen.add(name)
        if name not in self.data:
            return default
        if self.data[name] is None:
            return None
        value = self.get(name, kind)
        if value < 0:
            raise ConfigError(f"gateway config: {self._name(name)}: expected a number >= 0 or null, got {value!r}")
        return value

    def names(self, name: str) -> list[str]:
        """A list of distinct strings (empty when missing or null)."""
        self.seen.add(name)
        values = self.data.get(name)
        if values is None:
            return []
        if (not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values)
                or len(set(values)) != len(values)):
            raise ConfigError(f"gateway config: {self._name(name)}: expected a list of distinct names, got {values!r}")
        return list(values)

    def ints(self, name: str) -> list[int]:
        """A list of integers (empty when missing or null)."""
        self.seen.add(name)
        values = self.data.get(name)
        if values is None:
            return []
        if not isinstance(values, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise ConfigError(f"gateway config: {self._name(name)}: expected a list of integers, got {values!r}")
        return list(values)

    def positive(self, name: str, kind: type, default: Any = ...) -> Any:
        value = self.get(name, kind, default)
        if value <= 0:
            raise ConfigError(f"gateway config: {self._name(name)}: expected a positive number, got {value!r}")
        return value

    def sub(self, name: str, required: bool = False) -> _Fields:
        self.seen.add(name)
        if required and name not in self.data:
            raise ConfigError(f"gateway config: {self._name(name)}: required section is missing")
        return _Fields(self.data.get(name), self._name(name))

    def items(self, name: str) -> list[_Fields]:
        value = self.get(name, list, [])
        return [_Fields(item, f"{self._name(name)}[{i}]") for i, item in enumerate(value)]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(f"gateway config: {self._name(unknown[0])}: unknown field; known: {sorted(self.seen)}")
