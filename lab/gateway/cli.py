"""`lab gateway`: run the QoS gateway, or hash a key for its config.

    lab gateway --config deploy/gateway.example.yaml --host 127.0.0.1 --port 9000
    lab gateway hash-key [KEY] [--scheme sha256|pbkdf2]   # KEY read from stdin when omitted

Contract: `register(subparsers)` adds the command (see lab/cli.py). A bad config is a `LabError`
naming the field, printed without a traceback. The server is uvicorn with one worker: the
buckets, queue and health state live in the process, so one gateway process is one gateway.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from lab.errors import LabError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="run the QoS gateway (tiers, token buckets, priority queue, routing, health, canary)",
        description="Front OpenAI-compatible replicas with authenticated tiers, token buckets, a priority queue "
                    "with deadlines, least-outstanding-work routing, health checks with rollback, and canaries.",
    )
    parser.add_argument("--config", help="gateway YAML config (see deploy/gateway.example.yaml)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000, help="port to listen on (default: 9000)")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default: warning)")
    parser.set_defaults(handler=_serve)
    actions = parser.add_subparsers(dest="gateway_action", metavar="ACTION")
    hasher = actions.add_parser("hash-key", help="print the hash of an API key, for the config's keys/admin_key_hash")
    hasher.add_argument("key", nargs="?", help="the key (read from stdin when omitted, to keep it out of history)")
    hasher.add_argument("--scheme", choices=["sha256", "pbkdf2"], default="sha256",
                        help="sha256 for random tokens (default), pbkdf2 (salted, slow) for keys people chose")
    hasher.set_defaults(handler=_hash_key)


def _hash_key(args: argparse.Namespace) -> int:
    from lab.gateway.auth import hash_key

    key = args.key
    if key is None:
        key = getpass.getpass("key: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
    if not key:
        raise LabError("an API key must not be empty")
    print(hash_key(key, args.scheme))
    return 0


def _serve(args: argparse.Namespace) -> int:
    if not args.config:
        raise LabError("lab gateway needs --config FILE (see deploy/gateway.example.yaml)")
    import uvicorn

    from lab.gateway.app import build_app
    from lab.gateway.config import load_config

    config = load_config(args.config)
    app = build_app(config)
    print(f"lab gateway: http://{args.host}:{args.port}  ({len(config.replicas)} replicas, "
          f"tiers {[t.name for t in config.tiers]}, stable {config.stable_version!r})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, workers=1)
    return 0
