"""End to end: a real `lab serve --model tiny` behind a real `lab gateway`, queried with the openai SDK.

Two subprocesses on 127.0.0.1 (the replica loads the tiny dummy-weight model on the CPU, ~20 s),
shared by the tests of this module. Skipped, saying why, when the replica server is missing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lab.gateway.auth import hash_key
from tests.gateway.fakes import ADMIN_KEY, KEYS, free_port

ROOT = Path(__file__).resolve().parents[2]
openai = pytest.importorskip("openai")
pytestmark = pytest.mark.skipif(not (ROOT / "lab" / "server" / "cli.py").exists(),
                                reason="lab/server/cli.py (the replica server, `lab serve`) does not exist yet")

# `lab serve` if lab/cli.py registers it already, else the same register() contract driven by hand.
SERVE_LAUNCHER = ("import argparse, sys\nfrom lab.server import cli\nparser = argparse.ArgumentParser()\n"
                  "cli.register(parser.add_subparsers())\nargs = parser.parse_args(sys.argv[1:])\n"
                  "sys.exit(args.handler(args))\n")


def serve_command(port: int) -> list[str]:
    from lab.cli import COMMAND_MODULES

    prefix = [sys.executable, "-m", "lab"] if "lab.server.cli" in COMMAND_MODULES else [sys.executable, "-c", SERVE_LAUNCHER]
    return [*prefix, "serve", "--model", "tiny", "--port", str(port), "--log-level", "warning"]


def wait_until(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[-6:]} exited with {process.returncode}: {process.stderr.read()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s} s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[str]:
    replica_port, gateway_port = free_port(), free_port()
    config = tmp_path_factory.mktemp("gateway") / "gateway.yaml"
    config.write_text(
        f"keys:\n  - {{name: vip, tier: vip, hash: '{hash_key(KEYS['vip'])}'}}\n"
        f"  - {{name: batch, tier: batch, hash: '{hash_key(KEYS['batch'])}'}}\n"
        f"admin_key_hash: '{hash_key(ADMIN_KEY)}'\n"
        f"replicas:\n  - {{url: 'http://127.0.0.1:{replica_port}', version: v1, name: tiny-0}}\n"
        f"health: {{interval_s: 5}}\n")
    replica = subprocess.Popen(serve_command(replica_port), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    gateway = None
    try:
        wait_until(f"http://127.0.0.1:{replica_port}/ready", replica, 180)
        gateway = subprocess.Popen([sys.executable, "-m", "lab", "gateway", "--config", str(config),
                                    "--port", str(gateway_port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        wait_until(f"http://127.0.0.1:{gateway_port}/health", gateway, 60)
        yield f"http://127.0.0.1:{gateway_port}"
    finally:
        for process in (gateway, replica):
            if process is not None:
                stop(process)


def client(base_url: str, key: str = KEYS["vip"]):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=120)


def test_chat_through_the_gateway(service):
    reply = client(service).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=5)
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.choices[0].finish_reason in ("stop", "length") and 1 <= reply.usage.completion_tokens <= 5


def test_completion_through_the_gateway(service):
    reply = client(service).completions.create(model="tiny", prompt="Hello, my name is", max_tokens=4)
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens <= 4


def test_streaming_chat_and_completion_through_the_gateway(service):
    chunks = list(client(service).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True))
    assert len(chunks) >= 2  # streamed as SSE chunks, not one body
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (["stop"], ["length"])
    pieces = list(client(service).completions.create(model="tiny", prompt="Hi", max_tokens=4, stream=True))
    assert len(pieces) >= 2
    assert any(p.choices and p.choices[0].finish_reason in ("stop", "length") for p in pieces)


def admitted(base_url: str, tier: str) -> float:
    prefix = f'lab_gateway_requests_admitted_total{{tier="{tier}"}}'
    line = next(l for l in httpx.get(f"{base_url}/metrics").text.splitlines() if l.startswith(prefix))
    return float(line.rsplit(" ", 1)[1])


def test_a_batch_key_claiming_vip_stays_batch(service):
    before = admitted(service, "vip"), admitted(service, "batch")
    client(service, key=KEYS["batch"]).completions.create(
        model="tiny", prompt="Hi", max_tokens=1, extra_headers={"x-priority": "0", "x-tier": "vip"},
        extra_body={"priority": 0})
    assert (admitted(service, "vip"), admitted(service, "batch")) == (before[0], before[1] + 1)


def test_wrong_key_is_refused(service):
    with pytest.raises(openai.AuthenticationError) as caught:
        client(service, key="sk-not-a-key").completions.create(model="tiny", prompt="Hi", max_tokens=1)
    assert caught.value.status_code == 401


def test_gateway_counts_the_vip_traffic_and_lists_the_replica(service):
    before = admitted(service, "vip")
    client(service).completions.create(model="tiny", prompt="Hi", max_tokens=1)
    assert admitted(service, "vip") == before + 1
    listing = httpx.get(f"{service}/admin/replicas", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert [(r["name"], r["healthy"]) for r in listing["replicas"]] == [("tiny-0", True)]
