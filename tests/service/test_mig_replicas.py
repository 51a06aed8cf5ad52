"""A service replica per MIG slice (`mig:` in the service YAML), against a fake NVML's H100 layouts.

Nothing here partitions a card: the layouts are the fake NVML's (tests/gpu/fake_nvml.py), read through
`lab.gpu.mig.read_mig_inventory`, and each replica only gets CUDA_VISIBLE_DEVICES=<its MIG device UUID>.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import LabError
from lab.gpu.mig import read_mig_inventory
from lab.service.load import parse_spec
from tests.gpu.fake_nvml import FakeGpu, FakeNvml


def inventory(*layouts: str):
    return lambda: read_mig_inventory(FakeNvml([FakeGpu("H100-80GB", layout) for layout in layouts]))


def spec(replicas: list[dict], *layouts: str):
    return parse_spec({"name": "mig", "replicas": replicas}, Path("."), mig_inventory=inventory(*layouts))


def uuids(*layouts: str) -> list[str]:
    return [u for gpu in inventory(*layouts)() for u in gpu.device_uuids()]


def test_all_starts_one_replica_per_slice_each_seeing_only_its_own():
    service = spec([{"name": "r1", "model": "r1-distill-qwen-1.5b", "device": "cuda", "mig": "all"}], "7x1g")
    assert [r.name for r in service.replicas] == [f"r1-{i}" for i in range(7)]
    assert [r.env["CUDA_VISIBLE_DEVICES"] for r in service.replicas] == uuids("7x1g")
    assert all(u.startswith("MIG-") for u in uuids("7x1g")) and len(set(uuids("7x1g"))) == 7
    assert {r.env["LAB_MIG_PROFILE"] for r in service.replicas} == {"1g.10gb"}
    assert all("--device" in r.command and "cuda" in r.command for r in service.replicas)


def test_a_profile_pins_a_model_to_its_slices_and_keeps_the_replicas_env():
    service = spec([{"name": "big", "model": "deepseek-v2-lite", "mig": "2g.20gb", "env": {"OMP_NUM_THREADS": 4}},
                    {"name": "small", "model": "r1-distill-qwen-1.5b", "mig": "1g.10gb"}], "3x2g+1x1g")
    names = {r.name: r for r in service.replicas}
    assert sorted(names) == ["big-0", "big-1", "big-2", "small-0"]
    assert [names[f"big-{i}"].env["CUDA_VISIBLE_DEVICES"] for i in range(3)] == uuids("3x2g+1x1g")[:3]
    assert names["small-0"].env["CUDA_VISIBLE_DEVICES"] == uuids("3x2g+1x1g")[3]
    assert names["big-0"].env["OMP_NUM_THREADS"] == "4" and "deepseek-v2-lite" in names["big-0"].command


def test_uuids_pick_slices_across_two_gpus_in_the_given_order():
    picked = [uuids("2x3g", "7x1g")[8], uuids("2x3g", "7x1g")[0]]  # a 1g of GPU 1, then a 3g of GPU 0
    service = spec([{"name": "r", "mig": picked}], "2x3g", "7x1g")
    assert [r.env["CUDA_VISIBLE_DEVICES"] for r in service.replicas] == picked
    assert [r.env["LAB_MIG_GPU"] for r in service.replicas] == ["1", "0"]
    assert [r.env["LAB_MIG_PROFILE"] for r in service.replicas] == ["1g.10gb", "3g.40gb"]


@pytest.mark.parametrize("replica, layouts, match", [
    ({"mig": "3g.40gb"}, ("7x1g",), r"replicas\[0\]\.mig: found no MIG device of profile '3g.40gb'; this machine has "
                                    r"7 MIG device\(s\): 1g.10gb"),
    ({"mig": "all"}, ("off",), r"found no MIG device; MIG is off or unpartitioned on every GPU \(`lab mig plan"),
    ({"mig": ["MIG-nope"]}, ("2x3g",), r"no MIG device MIG-nope; this machine has 2 MIG device\(s\): 3g.40gb"),
    ({"mig": []}, ("2x3g",), r"expected 'all', a MIG profile name or a list of MIG device UUIDs"),
    ({"mig": "all", "count": 2}, ("2x3g",), r"replicas\[0\]\.count: leave it out with `mig`"),
    ({"mig": "all", "device": "cpu"}, ("2x3g",), r"replicas\[0\]\.device: a MIG replica sees its slice"),
    ({"mig": "all", "env": {"CUDA_VISIBLE_DEVICES": "0"}}, ("2x3g",), r"CUDA_VISIBLE_DEVICES is set per replica"),
])
def test_a_selector_that_cannot_be_met_names_the_field_and_what_the_machine_has(replica, layouts, match):
    with pytest.raises(LabError, match=match):
        spec([{"name": "r", **replica}], *layouts)


def test_a_listed_slice_twice_is_refused():
    twice = [uuids("2x3g")[0]] * 2
    with pytest.raises(LabError, match="listed twice"):
        spec([{"name": "r", "mig": twice}], "2x3g")


def test_no_gpu_at_all_is_said_so():
    with pytest.raises(LabError, match="NVML sees no GPU here"):
        parse_spec({"name": "m", "replicas": [{"mig": "all"}]}, Path("."), mig_inventory=lambda: ())
