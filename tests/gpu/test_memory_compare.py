"""`compare_allocators`' plumbing on a CPU: configs, the child's target and environment, its result line."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from lab.errors import LabError
from lab.gpu.memory import MemorySnapshot
from lab.gpu.memory_child import ALLOC_CONF, resolve_target
from lab.gpu.memory_compare import (
    AllocatorComparison,
    child_env,
    compare_allocators,
    parse_child_output,
    target_name,
    validate_config,
)

FINAL = MemorySnapshot(5, 10, 5, 2, 8, 12, 1, 0)
ROW = {"phase": "load", "entries": 1, "allocated_bytes": 5, "reserved_bytes": 10, "allocated_delta_bytes": 5,
       "reserved_delta_bytes": 10, "peak_allocated_bytes": 8, "peak_reserved_bytes": 12, "alloc_retries": 1,
       "ooms": 0, "inactive_split_fraction": 0.2, "free_block_fragmentation": None}


def workload(timeline) -> None:  # a module-level target, importable by a child
    pass


def child_line(expandable: bool | None) -> str:
    return json.dumps({"config": None, "expandable_segments": expandable, "final": FINAL.to_dict(), "phases": [ROW]})


@pytest.mark.parametrize("config", ["default", "expandable_segments:True", "max_split_size_mb:128",
                                    "expandable_segments:True,roundup_power2_divisions:[256:1,512:2]"])
def test_valid_configs_pass(config: str) -> None:
    assert validate_config(config) == config


@pytest.mark.parametrize("config", ["", "expandable_segments", "expandable segments:True", "Default"])
def test_invalid_configs_are_named(config: str) -> None:
    with pytest.raises(LabError, match="neither 'default'"):
        validate_config(config)


def test_a_module_level_function_is_named_by_module_and_qualname() -> None:
    assert target_name(workload) == "tests.gpu.test_memory_compare:workload"
    assert resolve_target(target_name(workload)) is workload
    assert target_name("pkg.mod:run") == "pkg.mod:run"


def test_lambdas_and_closures_cannot_cross_to_a_child() -> None:
    def inner(timeline) -> None:
        pass

    for fn in (lambda timeline: None, inner):
        with pytest.raises(LabError, match="module-level function"):
            target_name(fn)


def test_a_target_without_a_colon_is_refused() -> None:
    with pytest.raises(LabError, match="module:qualname"):
        resolve_target("lab.gpu.memory_compare")


def test_the_child_env_sets_or_removes_the_allocator_config() -> None:
    base = {ALLOC_CONF: "max_split_size_mb:64", "HOME": "/h"}
    assert ALLOC_CONF not in child_env("default", base)
    env = child_env("expandable_segments:True", base)
    assert env[ALLOC_CONF] == "expandable_segments:True" and env["HOME"] == "/h"
    assert set(p for p in sys.path if p) <= set(env["PYTHONPATH"].split(os.pathsep))


def test_the_child_result_line_becomes_a_run() -> None:
    run = parse_child_output("expandable_segments:True", "warming up\n" + child_line(True) + "\n")
    assert run.final == FINAL and run.expandable_segments is True
    assert run.phases[0].peak_allocated_bytes == 8 and run.label == "expandable_segments_True"
    metrics = AllocatorComparison("cuda:0", (run,)).as_metrics()
    assert metrics["expandable_segments_True.final.inactive_split_fraction"] == pytest.approx(0.2)
    assert metrics["expandable_segments_True.load.alloc_retries"] == 1.0


def test_a_run_under_the_wrong_allocator_is_refused() -> None:
    with pytest.raises(LabError, match="did not take effect"):
        parse_child_output("expandable_segments:True", child_line(False))
    with pytest.raises(LabError, match="did not take effect"):
        parse_child_output("default", child_line(True))
    assert parse_child_output("default", child_line(None)).expandable_segments is None  # older torch: unknown


def test_a_child_without_a_result_line_is_an_error() -> None:
    with pytest.raises(LabError, match="no JSON result line"):
        parse_child_output("default", "Traceback ...\n")


def test_an_unknown_config_has_no_run() -> None:
    comparison = AllocatorComparison("cuda:0", (parse_child_output("default", child_line(False)),))
    with pytest.raises(LabError, match="ran: default"):
        comparison.run("expandable_segments:True")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_on_cpu_the_comparison_says_why_it_cannot_run() -> None:
    with pytest.raises(LabError, match="only exists on a CUDA device"):
        compare_allocators(workload)


def test_the_child_takes_keyword_arguments_as_one_json_object() -> None:
    from lab.gpu.memory_child import main

    with pytest.raises(LabError, match="must be a JSON object"):
        main(["tests.gpu.test_memory_compare:workload", "cuda:0", "[1, 2]"])
    with pytest.raises(LabError, match="usage"):
        main(["tests.gpu.test_memory_compare:workload"])
