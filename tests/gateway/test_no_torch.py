"""The gateway never imports torch: it must start on a machine that has none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["lab.gateway", "lab.gateway.app", "lab.gateway.cli", "lab.gateway.admin", "lab.gateway.health",
           "lab.gateway.proxy", "lab.gateway.canary", "lab.gateway.metrics", "lab.cli"]


def test_importing_the_gateway_leaves_torch_out():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in MODULES) +
            "from lab.gateway.app import build_app\nfrom lab.gateway.config import parse_config\n"
            "build_app(parse_config({'replicas': [{'url': 'http://127.0.0.1:9', 'version': 'v1'}]}))\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'mlflow') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
