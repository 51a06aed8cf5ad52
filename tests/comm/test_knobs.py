"""NCCL knob variants: each runs in its own environment built from the machine's, and NVLS is never touched."""
from __future__ import annotations

from pathlib import Path

import pytest

from lab.comm.config import SweepConfig
from lab.comm.knob_sweep import run_knob_sweep
from lab.comm.knobs import DEFAULT_VARIANTS, KnobVariant, parse_variant, variant_environment
from lab.errors import LabError
from tests.comm.fakes import result, row

MACHINE = {"PATH": "/usr/bin", "NCCL_NVLS_ENABLE": "0", "NCCL_SOCKET_IFNAME": "lo", "NCCL_ALGO": "Tree"}


def test_a_variant_sets_its_variables_over_the_machines_and_keeps_the_rest() -> None:
    env = variant_environment(parse_variant("ring-ll"), MACHINE)
    assert env == {**MACHINE, "NCCL_ALGO": "Ring", "NCCL_PROTO": "LL"}
    assert env["NCCL_NVLS_ENABLE"] == "0"  # the machine's multicast setting, as it was
    assert MACHINE["NCCL_ALGO"] == "Tree"  # the base is copied, never changed


def test_the_default_base_is_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_TEST_MARK", "here")
    env = variant_environment(parse_variant("buffsize-1m"))
    assert env["LAB_TEST_MARK"] == "here" and env["NCCL_BUFFSIZE"] == "1048576"


def test_the_built_in_variants_cover_the_documented_knobs_and_never_nvls() -> None:
    names = {name for v in DEFAULT_VARIANTS for name in v.env}
    assert names == {"NCCL_ALGO", "NCCL_PROTO", "NCCL_MIN_NCHANNELS", "NCCL_MAX_NCHANNELS", "NCCL_BUFFSIZE"}
    assert {v.env.get("NCCL_PROTO") for v in DEFAULT_VARIANTS} >= {"LL", "LL128", "Simple"}
    assert {v.env.get("NCCL_ALGO") for v in DEFAULT_VARIANTS} >= {"Ring", "Tree"}
    assert not any("NVLS" in f"{k}={v}".upper() for variant in DEFAULT_VARIANTS for k, v in variant.env.items())


@pytest.mark.parametrize("text", ["nvls:NCCL_NVLS_ENABLE=1", "off:NCCL_NVLS_ENABLE=0", "ch:NCCL_NVLS_NCHANNELS=4",
                                  "algo:NCCL_ALGO=NVLS", "tree:NCCL_ALGO=NVLSTree", "no:NCCL_ALGO=^nvls"])
def test_nvls_variables_are_refused(text: str) -> None:
    with pytest.raises(LabError, match="NVLS"):
        parse_variant(text)


def test_other_mistakes_are_named() -> None:
    with pytest.raises(LabError, match="CUDA_VISIBLE_DEVICES is not an NCCL variable"):
        parse_variant("gpus:CUDA_VISIBLE_DEVICES=0")
    with pytest.raises(LabError, match="unknown knob variant 'ring'; built-in variants: algo-ring"):
        parse_variant("ring")
    with pytest.raises(LabError, match="expected NAME:VAR=VALUE"):
        parse_variant("x:NCCL_ALGO")
    with pytest.raises(LabError, match="sets no variable"):
        KnobVariant("empty", {})
    assert parse_variant("ll4:NCCL_PROTO=LL, NCCL_MAX_NCHANNELS=4").env == {"NCCL_PROTO": "LL",
                                                                             "NCCL_MAX_NCHANNELS": "4"}


def test_the_runner_gives_each_variant_its_environment_and_folder(tmp_path: Path) -> None:
    calls = []

    def runner(config, nproc, work_dir, env, timeout_s):
        calls.append((nproc, work_dir, {k: v for k, v in env.items() if k.startswith("NCCL_")}))
        if env.get("NCCL_PROTO") == "LL128":
            raise LabError("torchrun exited with status 1; log ...\nNCCL WARN ...")
        return result([row("all_reduce", 8, 10.0)])

    variants = [parse_variant("algo-ring"), parse_variant("proto-ll128")]
    outcomes = run_knob_sweep(SweepConfig(backend="gloo"), 2, variants, tmp_path, base_env=MACHINE, runner=runner)
    assert calls == [
        (2, tmp_path / "algo-ring", {"NCCL_NVLS_ENABLE": "0", "NCCL_SOCKET_IFNAME": "lo", "NCCL_ALGO": "Ring"}),
        (2, tmp_path / "proto-ll128", {"NCCL_NVLS_ENABLE": "0", "NCCL_SOCKET_IFNAME": "lo", "NCCL_ALGO": "Tree",
                                       "NCCL_PROTO": "LL128"}),
    ]
    assert outcomes[0].result is not None and outcomes[0].error is None
    assert outcomes[1].result is None and outcomes[1].error == "torchrun exited with status 1; log ..."


def test_variant_names_must_differ(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="repeat"):
        run_knob_sweep(SweepConfig(backend="gloo"), 2, [parse_variant("algo-ring")] * 2, tmp_path,
                       runner=lambda *a, **k: None)
