"""`lab bench coldstart`: real child processes on a CPU (a preset and a checkpoint on disk), their phases and
record, the table, and clear errors for bad arguments, bad engines and stuck children."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from lab.bench import coldstart as cs
from lab.cli import main
from lab.errors import LabError
from lab.track import ResultRecord

SMALL = '{"num_hidden_layers": 2}'
CHEAP = '{"num_gpu_blocks": 64, "max_model_len": 256}'  # a small KV cache: the start is the model's, not 1 GiB of zeros


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> tuple[Path, list[str]]:
    """One run through the CLI: the tiny preset and its checkpoint on disk, one start each."""
    out = tmp_path_factory.mktemp("coldstart")
    argv = ["bench", "coldstart", "--model", "tiny", "--model", "disk:tiny", "--repeats", "1", "--warmups", "0",
            "--device", "cpu", "--hf-overrides", SMALL, "--engine-args", CHEAP, "--checkpoint-dir", str(out / "ck"),
            "--drop-page-cache", "--out", str(out / "run"), "--no-track", "--timeout-s", "120"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    return out, stdout.getvalue().splitlines()


def _runs(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "run" / "runs.jsonl").read_text().splitlines()]


def test_every_phase_is_timed_and_they_fit_in_the_wall_time(bench_run) -> None:
    out, _ = bench_run
    runs = _runs(out)
    assert [r["scenario"] for r in runs] == ["tiny/default", "disk:tiny/default"]
    for run in runs:
        phases = run["phases"]
        assert all(seconds >= 0 for seconds in phases.values())
        for name in ("interpreter", "imports", "model_build", "tokenizer", "first_token"):
            assert phases[name] > 0, (run["scenario"], name)
        assert sum(phases.values()) <= run["total_s"] + 1e-6
        assert run["ready_s"] < run["total_s"] <= run["wall_s"]
        assert run["facts"]["device"] == "cpu" and run["facts"]["decode_graph_sizes"] == []
    preset, disk = (r["phases"] for r in runs)
    assert "weight_init" in preset and "weight_read" not in preset
    assert disk["weight_read"] > 0 and disk["weight_transfer"] > 0 and "weight_init" not in disk


def test_the_record_names_the_device_and_each_scenario(bench_run) -> None:
    out, lines = bench_run
    record = ResultRecord.load(out / "run" / "record.json")
    assert record.experiment == "bench-coldstart" and record.device
    assert set(record.metrics) == {"tiny.default.ready_s", "tiny.default.total_s", "disk_tiny.default.ready_s",
                                   "disk_tiny.default.total_s"}
    assert [c.params["model"] for c in record.children] == ["tiny", "disk:tiny"]
    assert record.params["page_cache"].startswith("dropped")
    assert Path(record.params["checkpoints"]["disk:tiny"]).parent == out / "ck"
    assert json.loads(lines[-1]) == record.metrics  # the last stdout line
    table = "\n".join(lines)
    assert "weight_read" in table and "tiny/default" in table and "disk:tiny/default" in table


def test_a_checkpoint_is_written_once_then_reused(bench_run) -> None:
    out, _ = bench_run
    (written,) = (out / "ck").iterdir()
    assert cs.prepare_model("disk:tiny", out / "ck", hf_overrides={"num_hidden_layers": 2}) == str(written)
    assert cs.prepare_model("tiny", out / "ck") == "tiny"


def test_variants_parse_or_say_what_is_wrong() -> None:
    assert cs.parse_variant("load-overlap") == cs.Variant("load-overlap", {"load_format": "overlap"})
    assert cs.parse_variant("cold-kernels") == cs.Variant("cold-kernels", {}, fresh_kernel_cache=True)
    lean = cs.parse_variant('lean={"load_format": "cpu", "enforce_eager": true, "fresh_kernel_cache": true}')
    assert lean == cs.Variant("lean", {"load_format": "cpu", "enforce_eager": True}, True)
    with pytest.raises(LabError, match="unknown variant 'fast'.*default, load-cpu"):
        cs.parse_variant("fast")
    with pytest.raises(LabError, match="not valid JSON"):
        cs.parse_variant("x={load_format: cpu}")
    with pytest.raises(LabError, match="must be a JSON object"):
        cs.parse_variant("x=[1]")
    with pytest.raises(LabError, match="variant name"):
        cs.parse_variant("a b={}")
    with pytest.raises(LabError, match="fresh_kernel_cache must be true or false"):
        cs.parse_variant('x={"fresh_kernel_cache": "yes"}')


def test_scenarios_cross_models_and_variants_once_each() -> None:
    variants = [cs.parse_variant("default"), cs.parse_variant("eager")]
    scenarios = cs.build_scenarios(["tiny", "disk:tiny"], variants, {"seed": 1}, {"tiny": "tiny", "disk:tiny": "/ck"}.get)
    assert [s.label for s in scenarios] == ["tiny/default", "tiny/eager", "disk:tiny/default", "disk:tiny/eager"]
    assert scenarios[3].engine_args == {"seed": 1, "model": "/ck", "enforce_eager": True}
    with pytest.raises(LabError, match="given twice: tiny/default"):
        cs.build_scenarios(["tiny", "tiny"], variants[:1], {})


def test_phase_order_merges_across_scenarios() -> None:
    preset = ["imports", "model_build", "weight_init", "tokenizer"]
    disk = ["imports", "model_build", "weight_read", "weight_transfer", "tokenizer"]
    assert cs.merged_order([preset, disk]) == ["imports", "model_build", "weight_read", "weight_transfer",
                                               "weight_init", "tokenizer"]


def test_an_engine_that_cannot_start_is_a_clear_error() -> None:
    scenario = cs.Scenario("nope", cs.Variant("default"), {"model": "nope", "device": "cpu"})
    with pytest.raises(LabError, match="nope/default: the engine did not start: .*neither a preset"):
        cs.run_child(scenario, timeout_s=120)


def test_a_stuck_child_is_stopped() -> None:
    scenario = cs.Scenario("tiny", cs.Variant("default"), {"model": "tiny", "device": "cpu"})
    with pytest.raises(LabError, match="took longer than 0.2 s"):
        cs.run_child(scenario, timeout_s=0.2)


@pytest.mark.parametrize(("argv", "message"), [
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--warmups", "-1"], "--warmups must be >= 0"),
    (["--variant", "turbo"], "unknown variant 'turbo'"),
    (["--hf-overrides", "{layers: 2}"], "--hf-overrides is not valid JSON"),
    (["--engine-args", "[]"], "--engine-args must be a JSON object"),
])
def test_bad_arguments_fail_before_any_start(argv, message, capsys, tmp_path) -> None:
    assert main(["bench", "coldstart", "--no-track", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs.jsonl").exists()
