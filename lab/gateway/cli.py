"""`lab gateway`: run the QoS gateway, or hash a key for its config.

    lab gateway --config deploy/gateway.example.yaml --host 127.0.0.1 --port 9000 [--server lab|uvicorn]
    lab gateway --config deploy/gateway.example.yaml --replica http://127.0.0.1:8002,name=b   # other replicas
    lab gateway --replica http://127.0.0.1:8001 --anonymous-tier batch   # no config: default tiers, no keys
    lab gateway hash-key [KEY] [--scheme sha256|pbkdf2]   # KEY read from stdin when omitted

Contract: `register(subparsers)` adds the command (see lab/cli.py). A bad config is a `LabError`
naming the field, printed without a traceback. `gateway_config(config_path, replica_specs,
anonymous_tier)` is the config the command serves: the file (or the defaults) with `replicas` replaced by
the `--replica URL[,version=V][,name=N][,weight=W][,model=M]` options when there are any (version
defaults to the config's `stable_version`, else v1). A request's tier comes from its key only, so a
gateway without keys would answer every request 401: the command refuses to start so, unless
`--anonymous-tier TIER` (or the config's `anonymous_tier`) serves requests that carry no key at TIER. The server is one process (`lab.gateway.http_server`,
asyncio + httptools, by default; uvicorn, the plain path, with `--server uvicorn`): the buckets,
queue and health state live in the process, so one gateway process is one gateway. Both serve under the
config's `server` limits: all of them on the lab server; on uvicorn what it offers (`uvicorn_limits`:
`limit_concurrency` for max_connections, `timeout_keep_alive`, and `h11_max_incomplete_event_size` for
max_header_bytes, which binds only when uvicorn runs h11, not httptools; no header or body timeouts).
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import sys
from typing import TYPE_CHECKING, Any

from lab.errors import LabError

if TYPE_CHECKING:
    from lab.gateway.config import GatewayConfig, ServerConfig


def register(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    parser = subparsers.add_parser(
        "gateway",
        help="run the QoS gateway (tiers, token buckets, priority queue, routing, health, canary)",
        description="Front OpenAI-compatible replicas with authenticated tiers, token buckets, a priority queue "
                    "with deadlines, least-outstanding-work routing, health checks with rollback, and canaries.",
    )
    parser.add_argument("--config", help="gateway YAML config (see deploy/gateway.example.yaml); without it, the "
                                         "default tiers and no keys")
    parser.add_argument("--replica", action="append", dest="replicas", metavar="URL[,version=V][,name=N][,weight=W]",
                        help="a replica to route to (repeatable; also model=M to rewrite the body's model); replaces "
                             "the config's replicas. version defaults to the config's stable_version, else v1; "
                             "name to the URL; weight to 1")
    parser.add_argument("--anonymous-tier", metavar="TIER",
                        help="serve requests that carry no API key at TIER (e.g. batch); a wrong key is still 401. "
                             "Without keys in the config, the gateway refuses to start unless this is given, since "
                             "it would answer every request 401")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000, help="port to listen on (default: 9000)")
    parser.add_argument("--log-level", default="warning", help="log level (default: warning)")
    parser.add_argument("--server", choices=["lab", "uvicorn"], default="lab",
                        help="HTTP server: lab (asyncio + httptools, one write per reply; default) or uvicorn")
    parser.add_argument("--gc-freeze", action=argparse.BooleanOptionalAction, default=True,
                        help="with --server lab: move the objects alive after startup out of the cyclic GC's "
                             "reach, so no full collection pauses requests for ~100 ms (default: on)")
    parser.set_defaults(handler=_serve)
    actions = parser.add_subparsers(dest="gateway_action", metavar="ACTION")
    hasher = actions.add_parser("hash-key", help="print the hash of an API key, for the config's keys/admin_key_hash")
    hasher.add_argument("key", nargs="?", help="the key (read from stdin when omitted, to keep it out of history)")
    hasher.add_argument("--scheme", choices=["sha256", "pbkdf2"], default="sha256",
                        help="sha256 for random tokens (default), pbkdf2 (salted, slow) for keys people chose")
    hasher.set_defaults(handler=_hash_key)
    rolling = actions.add_parser(
        "rolling-reload", help="hot-reload every replica behind a gateway, one at a time, probed, rolled back on failure",
        description="Reload each replica of the gateway in turn (POST /admin/reload on the replica), probe it and "
                    "watch it through the gateway; the first failure reloads the replicas already done back to "
                    "their previous version. Keys come from the environment: LAB_GATEWAY_ADMIN_KEY (the gateway's "
                    "admin key) and LAB_REPLICA_ADMIN_KEY (the key whose hash the replicas got with --admin-key-hash).")
    rolling.add_argument("--gateway", required=True, metavar="URL", help="the gateway, e.g. http://127.0.0.1:9000")
    rolling.add_argument("--source", required=True, help="checkpoint directory (as the replicas see it) or preset")
    rolling.add_argument("--seed", type=int, help="a preset's dummy-weight seed")
    rolling.add_argument("--policy", choices=["drain", "switch"], default="drain",
                         help="drain (default): requests in flight finish on the old weights; switch: at once")
    rolling.add_argument("--staging", choices=["auto", "device", "host"], default="auto",
                         help="where the new weights wait before the switch (default auto: the GPU if it fits)")
    rolling.add_argument("--observe-s", type=float, default=10.0,
                         help="how long each reloaded replica must stay in service before the next (default 10)")
    rolling.set_defaults(handler=_rolling_reload)
    return actions  # `lab gateway bench-latency` (lab.studies.gateway_latency.cli) is added by lab/cli.py


def _hash_key(args: argparse.Namespace) -> int:
    from lab.gateway.auth import hash_key

    key = args.key
    if key is None:
        key = getpass.getpass("key: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
    if not key:
        raise LabError("an API key must not be empty")
    print(hash_key(key, args.scheme))
    return 0


def _rolling_reload(args: argparse.Namespace) -> int:
    from lab.gateway.rolling_reload import RollingReload, rolling_reload

    keys = {name: os.environ.get(name, "") for name in ("LAB_GATEWAY_ADMIN_KEY", "LAB_REPLICA_ADMIN_KEY")}
    missing = [name for name, key in keys.items() if not key]
    if missing:
        raise LabError(f"set {' and '.join(missing)} in the environment (keys stay out of the command line)")
    result = rolling_reload(RollingReload(args.gateway.rstrip("/"), keys["LAB_GATEWAY_ADMIN_KEY"],
                                          keys["LAB_REPLICA_ADMIN_KEY"], args.source, args.seed, args.policy,
                                          args.staging, args.observe_s))
    print(json.dumps(result, indent=1))
    return 0 if result["completed"] else 1


REPLICA_FIELDS = ("version", "name", "weight", "model")


def replica_option(spec: str, default_version: str) -> dict[str, Any]:
    """`URL[,version=V][,name=N][,weight=W][,model=M]` as a `replicas` entry of the config."""
    url, *pairs = (part.strip() for part in spec.split(","))
    if not url.startswith(("http://", "https://")) or not url.partition("://")[2]:
        raise LabError(f"--replica {spec!r}: expected an http(s) URL first, e.g. http://127.0.0.1:8001,version=v1")
    given: dict[str, str] = {}
    for pair in pairs:
        field, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not field:
            raise LabError(f"--replica {spec!r}: {pair!r} is not FIELD=VALUE; fields: {', '.join(REPLICA_FIELDS)}")
        if field not in REPLICA_FIELDS:
            raise LabError(f"--replica {spec!r}: unknown field {field!r}; fields: {', '.join(REPLICA_FIELDS)}")
        if field in given:
            raise LabError(f"--replica {spec!r}: {field} is given twice")
        if not value:
            raise LabError(f"--replica {spec!r}: {field} is empty")
        given[field] = value
    replica: dict[str, Any] = {"url": url, "version": default_version, **given}
    if "weight" in given:
        try:
            replica["weight"] = float(given["weight"])
        except ValueError:
            replica["weight"] = math.nan
        if not (math.isfinite(replica["weight"]) and replica["weight"] > 0):
            raise LabError(f"--replica {spec!r}: weight must be a positive number (a share of its version's "
                           f"work), got {given['weight']!r}")
    return replica


def gateway_config(config_path: str | None, replica_specs: list[str] | None,
                   anonymous_tier: str | None) -> GatewayConfig:
    """The `GatewayConfig` that `lab gateway` serves (see the module docstring)."""
    from lab.gateway.config import parse_config, read_config_file

    if not config_path and not replica_specs:
        raise LabError("lab gateway needs --config FILE (see deploy/gateway.example.yaml) or --replica URL")
    data = read_config_file(config_path) if config_path else {}
    if replica_specs and isinstance(data, dict):
        stable = data.get("stable_version")
        replicas = [replica_option(spec, str(stable or "v1")) for spec in replica_specs]
        if stable and all(r["version"] != stable for r in replicas):
            raise LabError(f"--replica: no replica has the config's stable_version {stable!r} (the version that "
                           f"serves what canaries do not); give one version={stable}")
        data = {**data, "replicas": replicas}
    if anonymous_tier is not None and isinstance(data, dict):
        data = {**data, "anonymous_tier": anonymous_tier}
    config = parse_config(data)
    if not config.keys and config.anonymous_tier is None:
        raise LabError(
            f"no API keys{' in ' + config_path if config_path else ' (no --config)'}: a request's tier comes from "
            "its key only, so this gateway would answer every request 401. Give --config FILE with `keys` "
            "(deploy/gateway.example.yaml has example keys; make your own with `lab gateway hash-key`), or "
            "--anonymous-tier TIER to serve requests without a key at TIER")
    return config


def _serve(args: argparse.Namespace) -> int:
    from lab.gateway.app import build_app

    config = gateway_config(args.config, args.replicas, args.anonymous_tier)
    app = build_app(config)
    print(f"lab gateway: http://{args.host}:{args.port}  ({len(config.replicas)} replicas, "
          f"tiers {[t.name for t in config.tiers]}, stable {config.stable_version!r}, server {args.server})", flush=True)
    for replica in config.replicas:
        print(f"  replica {replica.name}: {replica.url} (version {replica.version}, weight {replica.weight:g})", flush=True)
    if config.anonymous_tier is not None:
        print(f"  requests without an API key are served at tier {config.anonymous_tier!r} (anonymous_tier)", flush=True)
    if args.server == "lab":
        import logging

        from lab.gateway.http_server import serve

        level = logging.getLevelName(args.log_level.upper())
        logging.basicConfig(level=level if isinstance(level, int) else logging.DEBUG,
                            format="%(levelname)s %(name)s: %(message)s")
        serve(app, args.host, args.port, freeze_gc=args.gc_freeze, limits=config.server,
              max_body_bytes=config.proxy.max_body_bytes)
        return 0
    import uvicorn

    # loop/http "auto" pick uvloop and httptools when installed (they are dependencies).
    # The gateway is the front door: no X-Forwarded-* rewriting; access lines only at info level or below.
    access_log = args.log_level.lower() in ("trace", "debug", "info")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, workers=1, loop="auto", http="auto",
                proxy_headers=False, access_log=access_log, server_header=False, **uvicorn_limits(config.server))
    return 0


def uvicorn_limits(server: ServerConfig) -> dict[str, Any]:
    """The `ServerConfig` limits uvicorn offers, as `uvicorn.run` keywords (see the module docstring)."""
    return {"limit_concurrency": server.max_connections, "timeout_keep_alive": server.keepalive_timeout_s,
            "h11_max_incomplete_event_size": server.max_header_bytes}
