"""`lab mig plan`'s text, from a named GPU model or from the (fake) NVML inventory of this machine."""

from __future__ import annotations

import pytest

from lab.cli import main
from lab.errors import LabError
from lab.gpu.mig import read_mig_inventory
from lab.gpu.mig_cli import plan_lines
from tests.gpu.fake_nvml import FakeGpu, FakeNvml


def commands(lines):
    return [line.split("  #")[0] for line in lines if not line.startswith("#")]


def test_plan_for_a_card_with_mig_off_enables_it_first():
    inventory = read_mig_inventory(FakeNvml([FakeGpu("H100-80GB", "off"), FakeGpu("A100-80GB", "off")]))
    lines = plan_lines("2x3g", 1, None, inventory)
    assert "A100-80GB: 3g.40gb@0 + 3g.40gb@4" in lines[0]
    assert commands(lines) == ["sudo nvidia-smi -i 1 -mig 1", "sudo nvidia-smi mig -i 1 -cgi 9,9 -C",
                               "nvidia-smi -L"]


def test_plan_for_a_partitioned_card_clears_it_first():
    inventory = read_mig_inventory(FakeNvml([FakeGpu("H100-80GB", "7x1g")]))
    assert commands(plan_lines("1x7g", 0, None, inventory))[:3] == [
        "sudo nvidia-smi mig -i 0 -dci", "sudo nvidia-smi mig -i 0 -dgi", "sudo nvidia-smi mig -i 0 -cgi 0 -C"]


def test_plan_refuses_missing_or_non_mig_gpu():
    with pytest.raises(LabError, match="no GPU 0 visible to NVML; name the card with --gpu-model"):
        plan_lines("7x1g", 0, None, ())
    with pytest.raises(LabError, match="does not support MIG"):
        plan_lines("7x1g", 0, None, read_mig_inventory(FakeNvml([FakeGpu("L4")])))


def test_cli_prints_commands_and_refuses_bad_layout(capsys):
    assert main(["mig", "plan", "7x1g", "--gpu-model", "A100-40GB", "-i", "3"]) == 0
    assert "sudo nvidia-smi mig -i 3 -cgi 19,19,19,19,19,19,19 -C" in capsys.readouterr().out
    assert main(["mig", "plan", "3x3g", "--gpu-model", "H100-80GB"]) == 2
    assert "3 x 3g.40gb asked, the profile allows at most 2" in capsys.readouterr().err
