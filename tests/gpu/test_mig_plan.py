"""MIG layout planning: profile tables, shorthand parsing, fit/refuse, and the printed nvidia-smi lines."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lab.errors import LabError
from lab.gpu.mig_plan import operator_commands, parse_layout, plan_layout
from lab.gpu.mig_profiles import profile_table, table_for_device

H100 = profile_table("H100-80GB")
A100_40 = profile_table("A100-40GB")


def names(profiles):
    return [p.name for p in profiles]


def test_shorthands_resolve_to_smallest_memory_profile():
    assert names(parse_layout("3x2g+1x1g", H100)) == ["2g.20gb"] * 3 + ["1g.10gb"]
    assert names(parse_layout("7x1g", A100_40)) == ["1g.5gb"] * 7
    assert names(parse_layout("1x7g", H100)) == ["7g.80gb"]


def test_list_and_full_names_and_counts():
    assert names(parse_layout(["3g.40gb", "2x2g.20gb", "MIG 1g.20gb"], H100)) == \
        ["3g.40gb", "2g.20gb", "2g.20gb", "1g.20gb"]
    assert names(parse_layout("1g.10gb+me+2g.20gb", H100)) == ["1g.10gb+me", "2g.20gb"]


def test_unknown_profile_names_the_choices():
    with pytest.raises(LabError, match=r"unknown MIG profile '5g'.*7g\.80gb"):
        parse_layout("1x5g", H100)
    with pytest.raises(LabError, match="unknown MIG profile"):
        parse_layout(["3g.20gb"], H100)  # an A100-40GB name on an 80 GB card


def test_empty_layout_is_refused():
    with pytest.raises(LabError, match="empty MIG layout"):
        parse_layout("", H100)


@pytest.mark.parametrize("spec, starts", [
    ("7x1g", [0, 1, 2, 3, 4, 5, 6]),
    ("3x2g+1x1g", [0, 2, 4, 6]),
    ("2x3g", [0, 4]),
    ("1x7g", [0]),
    ("4g+3g", [0, 4]),
    ("4g+1g.20gb+1g.20gb", [0, 4, 6]),
])
def test_layouts_that_fit(spec, starts):
    plan = plan_layout(spec, H100)
    assert [i.placement_start for i in plan.instances] == starts
    assert plan.compute_slices_used <= 7 and plan.memory_slices_used <= 8


def test_search_backtracks_past_first_placement():
    # 3g tried first at 0 leaves slices 4-7: 2g at 4, then only slice 6 for two 1g.10gb (7 is no 1g
    # start). The search must move the 3g to 4 and put 2g at 0 and the 1g at 2 and 3.
    plan = plan_layout("3g+2g+1g+1g", H100)
    assert [(i.profile.name, i.placement_start) for i in plan.instances] == \
        [("3g.40gb", 4), ("2g.20gb", 0), ("1g.10gb", 2), ("1g.10gb", 3)]
    spans = [set(i.memory_range) for i in plan.instances]
    assert sum(map(len, spans)) == len(set().union(*spans))  # no overlap


@pytest.mark.parametrize("spec, problem", [
    ("8x1g", "at most 7"),
    ("3x3g", "at most 2"),
    ("2x4g", "at most 1"),
    ("4x2g", "at most 3"),
    ("7g+1g", "8 compute slices asked"),
    ("4g+2x2g", "8 compute slices asked"),
    ("2x3g+1g.20gb", "10 memory slices asked"),
])
def test_layouts_refused_name_the_problem(spec, problem):
    with pytest.raises(LabError, match=f"layout does not fit H100-80GB: .*{problem}"):
        plan_layout(spec, H100)


def test_no_placement_is_refused_with_the_placements():
    # On NVIDIA's A100/H100 tables the slice and count rules already refuse every layout the
    # placements would; a table whose 2g may only start at 0 shows the search refusing on its own.
    two_g = replace(H100.profile("2g"), placement_starts=(0,), max_instances=3)
    table = replace(H100, gpu="toy", profiles=(H100.profile("1g"), two_g))
    with pytest.raises(LabError, match=r"no placement of 2g.20gb \+ 2g.20gb.*2g.20gb at \[0\]"):
        plan_layout("2x2g", table)


def test_only_one_media_extension_profile():
    with pytest.raises(LabError, match=r"at most 1|only one \+me"):
        plan_layout("1g.10gb+me+1g.10gb+me", H100)


def test_commands_for_an_enabled_empty_card():
    plan = plan_layout("3x2g+1x1g", H100)
    lines = operator_commands(plan, gpu_index=2)
    assert lines[0] == "sudo nvidia-smi mig -i 2 -cgi 14,14,14,19 -C  # 2g.20gb,2g.20gb,2g.20gb,1g.10gb"
    assert lines[-1].startswith("nvidia-smi -L")


def test_commands_enable_mig_and_clear_old_instances_first():
    plan = plan_layout("2x3g", A100_40)
    lines = operator_commands(plan, gpu_index=0, mig_enabled=False, has_instances=True)
    assert [line.split("  #")[0] for line in lines[:4]] == [
        "sudo nvidia-smi -i 0 -mig 1",
        "sudo nvidia-smi mig -i 0 -dci",
        "sudo nvidia-smi mig -i 0 -dgi",
        "sudo nvidia-smi mig -i 0 -cgi 9,9 -C",
    ]


def test_profile_tables_follow_the_documented_geometry():
    for gpu in ("A100-40GB", "A100-80GB", "H100-80GB", "H200-141GB"):
        table = profile_table(gpu)
        full = table.profile("7g")
        assert (full.compute_slices, full.memory_slices, full.memory_share) == (7, 8, 1.0)
        assert table.profile("1g").memory_share == 1 / 8
        assert table.profile("3g").memory_slices == 4 and table.profile("3g").max_instances == 2
    assert names(H100.profiles) == ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb",
                                    "7g.80gb"]
    assert profile_table("H200-141GB").profile("3g").name == "3g.71gb"


def test_table_for_device_from_nvml_name():
    assert table_for_device("NVIDIA A100-SXM4-40GB", 40536).gpu == "A100-40GB"
    assert table_for_device("NVIDIA A100 80GB PCIe", 81920).gpu == "A100-80GB"
    assert table_for_device("NVIDIA H100 80GB HBM3", 81559).gpu == "H100-80GB"
    assert table_for_device("NVIDIA H200", 143771).gpu == "H200-141GB"
    with pytest.raises(LabError, match="no MIG profile table for 'NVIDIA L4'"):
        table_for_device("NVIDIA L4", 23034)
    with pytest.raises(LabError, match="known: A100-40GB"):
        profile_table("B200")
