"""`lab bench serve`: help text, option -> config mapping, and one run through the CLI."""

from __future__ import annotations

import json
import math

import pytest

from lab.bench.arrivals import ConstantArrivals, FlashSaleArrivals, GammaArrivals, PoissonArrivals
from lab.bench.cli import config_from_args
from lab.bench.tiers import parse_tier
from lab.bench.workloads import ChatWorkload, RandomWorkload, TraceWorkload
from lab.cli import build_parser, main
from lab.errors import LabError


def parse(*argv: str):
    return build_parser().parse_args(["bench", "serve", *argv])


def test_help_documents_every_workload_arrival_and_metric(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "serve", "--help"])
    text = capsys.readouterr().out
    for word in ("random", "trace", "--trace-speedup", "--max-duration-s", "--max-context-tokens",
                 "poisson", "gamma", "burstiness", "constant", "flash-sale", "--request-rates", "--max-concurrency",
                 "--tier", "TTFT", "TPOT", "ITL", "E2EL", "goodput", "P99", "timeout", "GPU", "Ctrl-C",
                 "chat", "lognormal", "--random-range-ratio", "telemetry.steady", "ramp-up", "max_qps"):
        assert word in text, word


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ((), PoissonArrivals(math.inf)),
        (("--arrival", "gamma", "--request-rate", "4", "--burstiness", "0.5"), GammaArrivals(4.0, 0.5)),
        (("--arrival", "constant", "--request-rate", "2"), ConstantArrivals(2.0)),
        (("--arrival", "flash-sale", "--request-rate", "2", "--flash-sale-factor", "3", "--flash-sale-start-s", "1",
          "--flash-sale-end-s", "4"), FlashSaleArrivals(2.0, 3.0, 1.0, 4.0)),
    ],
)
def test_arrival_options_map_to_processes(argv, expected):
    assert config_from_args(parse(*argv)).arrivals == expected


def test_trace_options_and_tiers(tmp_path):
    config = config_from_args(parse("--workload", "trace", "--trace", str(tmp_path / "t.csv"), "--trace-speedup", "3",
                                    "--max-duration-s", "60", "--max-context-tokens", "2048", "--tier", "vip:a:b:1",
                                    "--tier", "batch:k:3", "--goodput", "ttft:500", "tpot:50"))
    assert config.workload == TraceWorkload(tmp_path / "t.csv", 3.0, 60.0, 2048, None)
    assert config.arrivals is None  # the trace's own timestamps
    assert [(t.name, t.api_key, t.fraction) for t in config.tiers.tiers] == [("vip", "a:b", 1.0), ("batch", "k", 3.0)]
    assert [(s.metric, s.limit_ms) for s in config.slos] == [("ttft", 500.0), ("tpot", 50.0)]


def test_random_range_ratio_and_chat_options(tmp_path):
    config = config_from_args(parse("--input-len", "64", "--output-len", "16", "--random-range-ratio", "0.25",
                                    "--num-prompts", "9"))
    assert config.workload == RandomWorkload(9, 64, 16, range_ratio=0.25)
    config = config_from_args(parse("--workload", "chat", "--num-prompts", "7", "--max-context-tokens", "1024",
                                    "--trace", str(tmp_path / "t.csv"), "--request-rate", "3"))
    assert config.workload == ChatWorkload(7, 1024, tmp_path / "t.csv") and config.arrivals == PoissonArrivals(3.0)


@pytest.mark.parametrize("argv", [("--random-range-ratio", "1.5"), ("--tier", "vip"), ("--tier", "vip:k:x"),
                                  ("--goodput", "speed:3"),
                                  ("--arrival", "trace"), ("--request-rate", "0")])
def test_bad_options_are_lab_errors(argv):
    with pytest.raises(LabError):
        config_from_args(parse(*argv))


def test_parse_tier_keeps_colons_in_keys():
    assert parse_tier("rt:sk:with:colons:0.5").api_key == "sk:with:colons"


def test_cli_run_writes_outputs_and_ends_with_json(fake_server, tmp_path, capsys):
    out = tmp_path / "bench"
    status = main(["bench", "serve", "--base-url", fake_server.base_url, "--num-prompts", "5", "--input-len", "6",
                   "--output-len", "3", "--request-rate", "100", "--goodput", "ttft:5000", "--out-dir", str(out),
                   "--no-track", "--no-progress"])
    assert status == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["points"][0]["completed"] == 5 and last["points"][0]["request_rate_per_s"] == 100.0
    assert {p.name for p in out.iterdir()} >= {"record.json", "requests.csv", "latency_cdf.png"}
    record = json.loads((out / "record.json").read_text())
    assert record["metrics"]["good_requests"] == 5 and record["params"]["input_tokens"] == 6
