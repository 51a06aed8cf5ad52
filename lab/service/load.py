"""The service YAML (see deploy/service.example.yaml) validated into a `ServiceSpec`.

Contract: `load_spec(path)` / `parse_spec(mapping, base_dir)` return a `ServiceSpec` or raise `LabError`
naming the field (`service config: replicas[0].flags: ...`); unknown fields are errors. Relative paths in
the file (`log_dir`, `gateway.config`, `prometheus.rules`) are relative to the file's folder, as in a
compose file; the defaults (`runs/up/<name>/`, `deploy/prometheus/rules.yml`) are under the project root.
A replica runs `lab serve` with its `engine`, `model`, `device` and extra `flags`, or its own `command`
(a string split as a shell would, or a list) holding `{port}`; a leading `python` there means this
interpreter, so the command sees the same environment as `lab`. `network` (direct, proxy, netns; see
`lab.service.network`) says how the gateway reaches it; a netns replica's own `command` must hold `{host}`.
`count: N` makes N replicas named `<name>-0` .. `<name>-(N-1)`; `mig: all | <profile> | [MIG-uuid, ...]` makes one
per matching MIG device (`lab.service.mig_slices`, from NVML: `parse_spec(..., mig_inventory=...)` takes another
source), each with CUDA_VISIBLE_DEVICES set to its slice. The gateway config is read here (a file's
own `replicas` are replaced, as `lab gateway --replica` does; an inline mapping must leave them out) and
checked with the gateway's own parser, so a bad gateway field fails before any process starts.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from lab.errors import LabError
from lab.gpu.mig import GpuMig
from lab.service.fields import Fields, fail
from lab.service.spec import (HOST, NETWORKS, GatewaySpec, PrometheusSpec, ReplicaProcess, RestartPolicy,
                              ServiceSpec, check_name, lab_serve_command)

MigInventory = Callable[[], Sequence[GpuMig]]  # lab.gpu.mig.mig_inventory, or a fake NVML's reading in tests


def load_spec(path: str | Path, mig_inventory: MigInventory | None = None) -> ServiceSpec:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise LabError(f"cannot read service config {path}: {error}") from None
    except yaml.YAMLError as error:
        raise LabError(f"service config {path} is not valid YAML: {error}") from None
    return parse_spec(data, path.resolve().parent, source=path.resolve(), mig_inventory=mig_inventory)


def parse_spec(data: Any, base_dir: Path, source: Path | None = None,
               mig_inventory: MigInventory | None = None) -> ServiceSpec:
    """`mig_inventory`: what a `mig:` replica is matched against (default: NVML's, read only if one asks)."""
    top = Fields(data)
    name = check_name(top.get("name", str), "service config: name")
    log_dir = top.get("log_dir", str, None)
    entries = top.get("replicas", list)
    replicas = [r for i, item in enumerate(entries)
                for r in _replicas(Fields(item, f"replicas[{i}]"), i, mig_inventory)]
    gateway_fields = top.sub("gateway")  # left out: replicas only, no gateway
    gateway = _gateway(gateway_fields, base_dir, replicas) if top.has("gateway") else None
    prometheus, restart = _prometheus(top.sub("prometheus"), base_dir), _restart(top, "restart")
    ready_timeout_s = top.positive("ready_timeout_s", float, 300.0)
    stop_timeout_s = top.positive("stop_timeout_s", float, 30.0)
    top.done()
    spec = _named(lambda: ServiceSpec(name, tuple(replicas), base_dir / log_dir if log_dir else None, gateway,
                                      prometheus, restart, ready_timeout_s, stop_timeout_s, source), "replicas")
    return spec


def _named(check: Any, path: str) -> Any:
    """Run a record's own check, prefixing its message with the field's path."""
    try:
        return check()
    except LabError as error:
        if str(error).startswith("service config:"):
            raise
        raise fail(path, str(error)) from None


def _replicas(r: Fields, index: int, mig_inventory: MigInventory | None) -> list[ReplicaProcess]:
    name = r.get("name", str, f"replica-{index}")
    count = r.positive("count", int, None)
    version = r.get("version", (str, int, float), "v1")
    env = r.get("env", dict, {})
    bad_env = [k for k, v in env.items() if not isinstance(k, str) or isinstance(v, (dict, list, bool)) or v is None]
    if bad_env:
        raise fail(r.name("env"), f"expected VAR: value pairs (strings or numbers); bad: {bad_env}")
    metrics_path = r.get("metrics_path", (str, type(None)), "/metrics")
    ready_path = r.get("ready_path", str, "/ready")
    network = r.get("network", str, "direct")
    if network not in NETWORKS:
        raise fail(r.name("network"), f"expected one of {list(NETWORKS)}, got {network!r}")
    if r.has("command"):
        given = [f for f in ("model", "device", "engine", "flags") if r.has(f)]
        if given:
            raise fail(r.name(given[0]), "applies to `lab serve` replicas only; this one runs its own `command`")
        command = _command(r.get("command", (str, list)), r.name("command"))
    else:
        engine, model, device = r.get("engine", str, "lab"), r.get("model", str, "tiny"), r.get("device", str, "auto")
        flags = r.get("flags", list, [])
        if not all(isinstance(f, (str, int, float)) and not isinstance(f, bool) for f in flags):
            raise fail(r.name("flags"), f"expected a list of `lab serve` flags (strings), got {flags!r}")
        flags = tuple(str(f) for f in flags)
        host = "{host}" if network == "netns" else HOST  # inside a namespace: listen on its address
        command = _named(lambda: lab_serve_command(engine, model, device, flags, host), r.name("flags"))
    mig = r.get("mig", (str, list), None)
    r.done()
    if mig is not None:
        return [_named(lambda n=n, e=e: ReplicaProcess(n, command, str(version), e, metrics_path, ready_path, network),
                       r.path) for n, e in _mig_replicas(r, name, count, env, mig, mig_inventory)]
    names = [name] if count is None else [f"{name}-{i}" for i in range(count)]
    return [_named(lambda n=n: ReplicaProcess(n, command, str(version), env, metrics_path, ready_path, network),
                   r.path) for n in names]


def _mig_replicas(r: Fields, name: str, count: int | None, env: dict, mig: Any,
                  mig_inventory: MigInventory | None) -> list[tuple[str, dict]]:
    """(name, env) per MIG device the selector matches: `<name>-0` .. in NVML order."""
    if count is not None:
        raise fail(r.name("count"), "leave it out with `mig`: one replica per matching MIG device")
    if "CUDA_VISIBLE_DEVICES" in env:
        raise fail(r.name("env"), "CUDA_VISIBLE_DEVICES is set per replica from `mig`; leave it out")
    if r.has("device") and r.get("device", str) not in ("cuda", "cuda:0", "auto"):
        raise fail(r.name("device"), "a MIG replica sees its slice as its only GPU: use cuda (or leave it out)")
    from lab.gpu.mig import mig_inventory as nvml_inventory
    from lab.service.mig_slices import select_slices, slice_env

    inventory = (mig_inventory or nvml_inventory)()
    return [(f"{name}-{i}", {**env, **slice_env(s)}) for i, s in enumerate(select_slices(mig, inventory, r.name("mig")))]


def _command(value: str | list, path: str) -> tuple[str, ...]:
    if isinstance(value, list) and not all(isinstance(part, (str, int)) for part in value):
        raise fail(path, f"expected a string or a list of strings, got {value!r}")
    parts = shlex.split(value) if isinstance(value, str) else [str(part) for part in value]
    if not parts:
        raise fail(path, "is empty")
    if not any("{port}" in part for part in parts):
        raise fail(path, f"must contain {{port}} (the service picks the port): {value!r}")
    if parts[0] in ("python", "python3"):
        parts[0] = sys.executable  # the interpreter `lab` runs in, with the same packages
    return tuple(parts)


def _gateway(g: Fields, base_dir: Path, replicas: list[ReplicaProcess]) -> GatewaySpec:
    config_value = g.get("config", (str, dict), {})
    if isinstance(config_value, str):
        from lab.gateway.config import read_config_file

        config = read_config_file(base_dir / config_value)
        if not isinstance(config, dict):
            raise fail(g.name("config"), f"{config_value} does not hold a mapping")
        config = {k: v for k, v in config.items() if k != "replicas"}  # filled in from the replicas above
    elif "replicas" in config_value:
        raise fail(g.name("config.replicas"), "leave it out: the service fills it in from its replicas")
    else:
        config = config_value
    spec = GatewaySpec(config=config, port=_port(g, "port"), log_level=g.get("log_level", str, "warning"))
    g.done()
    _check_gateway_config(spec, replicas, g.name("config"))
    return spec


def _check_gateway_config(spec: GatewaySpec, replicas: list[ReplicaProcess], path: str) -> None:
    """The gateway's own parser on the config as it will run (placeholder URLs), before any process starts."""
    from lab.gateway.config import parse_config

    placeholder = [{"url": "http://127.0.0.1:1", "version": r.version, "name": r.name} for r in replicas]
    config = _named(lambda: parse_config({**spec.config, "replicas": placeholder}), path)
    if not config.keys and config.anonymous_tier is None:
        raise fail(path, "no `keys` and no `anonymous_tier`: a request's tier comes from its key, so the gateway "
                         "would answer every request 401 (see deploy/gateway.example.yaml)")


def _port(f: Fields, field: str) -> int | None:
    port = f.get(field, (int, type(None)), None)
    if port is not None and not 1 <= port <= 65535:
        raise fail(f.name(field), f"expected a port 1..65535 (or leave it out for a free one), got {port}")
    return port


def _prometheus(p: Fields, base_dir: Path) -> PrometheusSpec:
    defaults = PrometheusSpec()
    rules = p.get("rules", str, None)
    spec = PrometheusSpec(
        enabled=p.get("enabled", bool, True),
        scrape_interval_s=p.positive("scrape_interval_s", float, defaults.scrape_interval_s),
        evaluation_interval_s=p.positive("evaluation_interval_s", float, defaults.evaluation_interval_s),
        rules=(base_dir / rules).resolve() if rules else defaults.rules, port=_port(p, "port"),
        binary=p.get("binary", str, None))
    p.done()
    if spec.enabled and not spec.rules.is_file():
        raise fail(p.name("rules"), f"no rules file at {spec.rules}")
    return spec


def _restart(top: Fields, field: str) -> RestartPolicy:
    value = top.get(field, (str, dict), "on-failure")
    if isinstance(value, str):
        return _named(lambda: RestartPolicy(value), field)
    r, defaults = Fields(value, field), RestartPolicy()
    policy = _named(lambda: RestartPolicy(
        policy=r.get("policy", str, defaults.policy),
        max_restarts=r.positive("max_restarts", int, defaults.max_restarts),
        backoff_s=r.positive("backoff_s", float, defaults.backoff_s),
        max_backoff_s=r.positive("max_backoff_s", float, defaults.max_backoff_s)), field)
    r.done()
    return policy
