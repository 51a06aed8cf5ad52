"""Real `lab serve` subprocesses on 127.0.0.1 for the server tests.

`server` is one replica shared by the whole package (the tiny model is loaded once);
`launch(*flags, tmp_dir=...)` starts another (the drain tests need their own, since they end it);
`base_flags=HF_MODEL_FLAGS` starts the transformers baseline (`--engine hf`) on the same model.
Replicas use a 2-layer tiny model and a small KV cache so the suite stays fast on 2 cores.
"""
from __future__ import annotations

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
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = "tiny"
MAX_MODEL_LEN = 512
SMALL_MODEL_FLAGS = ("--model", MODEL, "--hf-overrides", '{"num_hidden_layers": 2}', "--num-gpu-blocks", "64",
                     "--max-model-len", str(MAX_MODEL_LEN), "--max-num-seqs", "8")
# The same model (tiny, 2 layers, same seed: same weights) served by transformers generate().
HF_MODEL_FLAGS = ("--engine", "hf", "--model", MODEL, "--hf-overrides", '{"num_hidden_layers": 2}',
                  "--max-model-len", str(MAX_MODEL_LEN))
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


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = launch(tmp_dir=tmp_path_factory.mktemp("serve"))
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def tokenizer():
    from lab.engine.tokenizer import Tokenizer

    return Tokenizer.deepseek()
