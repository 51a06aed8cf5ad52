"""A real gateway on 127.0.0.1 in a thread of the test process, in front of replica URLs, and what tests read back.

`running_gateway(replicas, server="lab", run_health=False, **sections)` builds the app from
`make_config` (known keys, see `fakes.KEYS`) with one replica per `name -> url` (version v1) and
serves it with `lab.gateway.http_server` (or uvicorn), under the config's server limits; it yields an
`httpx.Client` on it and the `Gateway`. `metric(text, name, **labels)` is one sample of `/metrics`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx

from lab.gateway.app import build_app
from tests.gateway.fakes import make_config, serve


@contextlib.contextmanager
def running_gateway(replicas: dict[str, str], server: str = "lab", run_health: bool = False,
                    **sections: Any) -> Iterator[tuple[httpx.Client, Any]]:
    config = make_config([{"url": url, "version": "v1", "name": name} for name, url in replicas.items()], **sections)
    app = build_app(config, run_health=run_health)
    with serve(app, server) as running, httpx.Client(base_url=running.url, timeout=30) as client:
        yield client, app.state.gateway


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` carrying these labels (0 when there are none)."""
    found = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and \
                all(f'{k}="{v}"' in line for k, v in labels.items()):
            found += float(line.rsplit(" ", 1)[1])
    return found
