"""Real `lab serve` subprocesses on 127.0.0.1 for the server tests.

`server` is one replica shared by the whole package (the tiny model is loaded once), on the
default engine core (its own process); `thread_server` is the same replica with `--engine-core
thread` (the reference the process core is compared with); `hf_server` is the transformers baseline
(`--engine hf`, static batches of `HF_BATCH_SIZE`) on the same model, shared by the baseline's test modules;
`fault_server` serves with `--enable-fault-injection` (admin key `FAULT_ADMIN_KEY`) and
`--engine-iteration-timeout-s 2`, for the fault and hung-core tests (each leaves it healthy, faults cleared);
the shared replicas the collected tests use load in parallel;
`launch(*flags, tmp_dir=...)` starts another (the drain tests need their own, since they end it);
`base_flags=HF_MODEL_FLAGS` starts the transformers baseline (`--engine hf`) on the same model, and
`base_flags=HF_CB_MODEL_FLAGS` transformers' continuous batching (`--engine hf-cb`).
`engine_core_pids(srv)` are the pids of a replica's engine core processes.
Replicas use a 2-layer tiny model and a small KV cache so the suite stays fast on 2 cores.
Under pytest-xdist the package is one work unit (`xdist_group("server-replicas")`), so its shared replicas start
once, on one worker (tests/scheduling.py).
"""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = "tiny"
MAX_MODEL_LEN = 512
SMALL_MODEL_FLAGS = ("--model", MODEL, "--hf-overrides", '{"num_hidden_layers": 2}', "--num-gpu-blocks", "64",
                     "--max-model-len", str(MAX_MODEL_LEN), "--max-num-seqs", "8")
# The same model (tiny, 2 layers, same seed: same weights) served by transformers generate().
HF_MODEL_FLAGS = ("--engine", "hf", "--model", MODEL, "--hf-overrides", '{"num_hidden_layers": 2}',
                  "--max-model-len", str(MAX_MODEL_LEN))
# The same model again, served by transformers' continuous batching manager (--engine hf-cb), with a
# small paged cache: 64 blocks of 32 tokens, 512-token steps.
HF_CB_MODEL_FLAGS = ("--engine", "hf-cb", "--model", MODEL, "--hf-overrides", '{"num_hidden_layers": 2}',
                     "--max-model-len", str(MAX_MODEL_LEN), "--hf-cb-num-blocks", "64", "--hf-cb-block-size", "32",
                     "--hf-cb-max-batch-tokens", "512")
READY_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lab serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"lab serve not ready after {timeout_s}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def launch(*flags: str, tmp_dir: Path, base_flags: tuple[str, ...] = SMALL_MODEL_FLAGS) -> ServerProcess:
    port = free_port()
    log_path = tmp_dir / f"serve-{port}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lab", "serve", *base_flags, "--port", str(port), *flags],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    return ServerProcess(proc, port, log_path)


HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before xdist names each item's group after its xdist_group mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.xdist_group("server-replicas"))
            item.add_marker(pytest.mark.long_running(420))


HF_BATCH_SIZE = 2
FAULT_ADMIN_KEY = "sk-test-fault-admin"
ENGINE_ITERATION_TIMEOUT_S = 2.0
FAULT_FLAGS = ("--device", "cpu", "--engine-iteration-timeout-s", str(ENGINE_ITERATION_TIMEOUT_S),
               "--enable-fault-injection",
               "--admin-key-hash", "sha256:" + hashlib.sha256(FAULT_ADMIN_KEY.encode()).hexdigest())
# fixture -> (its flags, its base flags)
SHARED_SERVERS = {"server": ((), SMALL_MODEL_FLAGS), "thread_server": (("--engine-core", "thread"), SMALL_MODEL_FLAGS),
                  "hf_server": (("--hf-batch-size", str(HF_BATCH_SIZE)), HF_MODEL_FLAGS),
                  "fault_server": (FAULT_FLAGS, SMALL_MODEL_FLAGS)}


class _SharedServers:
    """Session replicas by fixture name, launched on first use or all at once by `prelaunch`."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._servers: dict[str, ServerProcess] = {}

    def prelaunch(self, names: set[str]) -> None:
        for name in SHARED_SERVERS:
            if name in names:
                self._launch(name)

    def ready(self, name: str) -> ServerProcess:
        srv = self._servers.get(name) or self._launch(name)
        srv.wait_ready()
        return srv

    def _launch(self, name: str) -> ServerProcess:
        if name not in self._servers:
            flags, base_flags = SHARED_SERVERS[name]
            self._servers[name] = launch(*flags, tmp_dir=self._tmp.mktemp(name), base_flags=base_flags)
        return self._servers[name]

    def stop(self) -> None:
        for srv in self._servers.values():
            srv.stop()


@pytest.fixture(scope="session")
def _shared_servers(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[_SharedServers]:
    shared = _SharedServers(tmp_path_factory)
    # Launch every shared replica the collected tests use at once: they load in parallel.
    used = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    shared.prelaunch({"server", "thread_server"} | used if "any_core_server" in used else used)
    try:
        yield shared
    finally:
        shared.stop()


@pytest.fixture(scope="session")
def server(_shared_servers: _SharedServers) -> ServerProcess:
    return _shared_servers.ready("server")


@pytest.fixture(scope="session")
def thread_server(_shared_servers: _SharedServers) -> ServerProcess:
    return _shared_servers.ready("thread_server")


@pytest.fixture(scope="session")
def hf_server(_shared_servers: _SharedServers) -> ServerProcess:
    return _shared_servers.ready("hf_server")


@pytest.fixture(scope="session")
def fault_server(_shared_servers: _SharedServers) -> ServerProcess:
    return _shared_servers.ready("fault_server")


def engine_core_pids(srv: ServerProcess) -> list[int]:
    """The replica's engine core children (multiprocessing spawn), not its resource tracker."""
    children = psutil.Process(srv.proc.pid).children()
    return [c.pid for c in children if "spawn_main" in " ".join(c.cmdline())]


@pytest.fixture(scope="session")
def tokenizer():
    from lab.engine.tokenizer import Tokenizer

    return Tokenizer.deepseek()
