"""`lab.gpu.mig` reads MIG state through an injected NVML: modes, instances, profiles, UUIDs, read-only."""

from __future__ import annotations

import pytest

from lab.gpu.mig import format_inventory, read_mig_inventory
from tests.gpu.fake_nvml import READ_ONLY_CALLS, FakeGpu, FakeNvml


def inventory(*gpus: FakeGpu, deny: frozenset[str] = frozenset()):
    nvml = FakeNvml(list(gpus), deny=deny)
    return read_mig_inventory(nvml), nvml


def test_mig_off_reports_mode_and_no_instances():
    (gpu,), _ = inventory(FakeGpu("H100-80GB", "off"))
    assert gpu.mig_capable and not gpu.mig_current and not gpu.mig_pending
    assert gpu.gpu_instances == () and gpu.device_uuids() == ()
    assert gpu.name == "NVIDIA H100 80GB HBM3"  # bytes from NVML decoded
    assert gpu.memory_total_mib == 81559


def test_card_without_mig_is_not_capable():
    (gpu,), _ = inventory(FakeGpu("L4"))
    assert not gpu.mig_capable and not gpu.mig_current and not gpu.mode_change_pending


def test_pending_mode_change_is_visible():
    (gpu,), _ = inventory(FakeGpu("A100-80GB", "off", mig_pending=True))
    assert not gpu.mig_current and gpu.mig_pending and gpu.mode_change_pending


def test_seven_1g_slices_on_h100():
    (gpu,), _ = inventory(FakeGpu("H100-80GB", "7x1g"))
    assert [gi.profile for gi in gpu.gpu_instances] == ["1g.10gb"] * 7
    assert [gi.placement_start for gi in gpu.gpu_instances] == list(range(7))
    gi = gpu.gpu_instances[0]
    assert (gi.compute_slices, gi.memory_slices, gi.memory_mib, gi.copy_engines) == (1, 1, 10240, 1)
    assert gi.compute_instances[0].sm_count == 16
    assert gi.compute_instances[0].profile == "1g.10gb"


def test_mixed_layout_on_a100_names_each_profile():
    (gpu,), _ = inventory(FakeGpu("A100-80GB", "3x2g+1x1g"))
    got = [(gi.profile, gi.profile_id, gi.placement_start, gi.compute_instances[0].sm_count)
           for gi in gpu.gpu_instances]
    assert got == [("2g.20gb", 14, 0, 28), ("2g.20gb", 14, 2, 28), ("2g.20gb", 14, 4, 28),
                   ("1g.10gb", 19, 6, 14)]


def test_uuids_are_mig_devices_in_nvml_order_and_distinct():
    (gpu,), nvml = inventory(FakeGpu("H100-80GB", "2x3g"))
    uuids = gpu.device_uuids()
    assert len(uuids) == 2 and len(set(uuids)) == 2
    assert all(u.startswith("MIG-") for u in uuids)
    assert uuids[0] == nvml.nvmlDeviceGetUUID(("mig", 0, 0))
    assert [gi.memory_slices for gi in gpu.gpu_instances] == [4, 4]


def test_several_gpus_are_read_independently():
    gpus, _ = inventory(FakeGpu("A100-80GB", "7x1g"), FakeGpu("H100-80GB", "off"))
    assert [g.index for g in gpus] == [0, 1]
    assert len(gpus[0].device_uuids()) == 7 and gpus[1].device_uuids() == ()
    assert set(gpus[0].device_uuids()).isdisjoint({gpus[1].uuid})


def test_inventory_only_calls_getters():
    _, nvml = inventory(FakeGpu("A100-80GB", "3x2g+1x1g"), FakeGpu("H100-80GB", "off"), FakeGpu("L4"))
    assert nvml.calls and set(nvml.calls) <= READ_ONLY_CALLS
    assert not any(word in name for name in nvml.calls for word in ("Set", "Create", "Destroy"))


def test_refused_gi_queries_fall_back_to_device_name():
    # Without permission to read GPU instances the profile still comes from the MIG device name.
    (gpu,), _ = inventory(FakeGpu("H100-80GB", "2x3g"),
                          deny=frozenset({"nvmlDeviceGetGpuInstanceById", "nvmlDeviceGetGpuInstanceProfileInfo"}))
    assert [gi.profile for gi in gpu.gpu_instances] == ["3g.40gb", "3g.40gb"]
    assert all(gi.placement_start is None and gi.profile_id is None for gi in gpu.gpu_instances)
    assert len(gpu.device_uuids()) == 2


def test_format_lists_every_mig_device():
    gpus, _ = inventory(FakeGpu("A100-80GB", "2x3g"))
    text = format_inventory(gpus)
    assert "MIG on" in text and text.count("MIG-") == 2 and "3g.40gb" in text


@pytest.mark.parametrize("layout", ["7x1g", "3x2g+1x1g", "2x3g"])
def test_fake_layouts_are_valid_plans(layout):
    # The fake's recorded placements must themselves obey the planner's rules.
    from lab.gpu.mig_plan import plan_layout
    from lab.gpu.mig_profiles import profile_table

    (gpu,), _ = inventory(FakeGpu("H100-80GB", layout))
    plan = plan_layout(layout, profile_table("H100-80GB"))
    assert sorted(i.profile.name for i in plan.instances) == sorted(gi.profile for gi in gpu.gpu_instances)
