"""The drills: one chaostoolkit experiment file each in chaos/, described by its own `lab-drill` extension.

Contract: `load_drill(name)` reads `chaos/<name>.yaml` and returns a `Drill`: the experiment (as
chaostoolkit loads it) and what the study needs to read its journal, from the file's extension
    extensions: [{name: lab-drill, target: replica | gateway | load, fault_start: <activity name>,
                  fault_end: <activity name> | null, expect_ejection: bool, expect_restart: bool,
                  expect_alert: <alert name> | null, hostile: bool, bad_reload: bool}]
`fault_start` / `fault_end` name the method's activities whose records mark the fault (null end: an
instantaneous fault, recovery counts from its start; the same name twice: a load activity whose own
start and stop are the window). `hostile: true` marks a flood the service must shrug off: VIP keeps its
queue budget and no replica is ejected (`lab.studies.chaos.targets`); `bad_reload: true` a refused hot
reload: the old version serves on and no request fails. A new drill (a GPU fault, a bad reload) is one new file with this block;
nothing here changes. A file without the block, or naming an activity its method lacks, is a `LabError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from lab.errors import LabError
from lab.studies.chaos.config import experiments_dir

EXTENSION = "lab-drill"
TARGETS = ("replica", "gateway", "load")


@dataclass(frozen=True)
class Drill:
    name: str
    path: Path
    experiment: dict
    target: str  # replica | gateway | load
    fault_start: str  # activity name
    fault_end: str | None  # activity name; None: instantaneous
    expect_ejection: bool
    expect_restart: bool
    expect_alert: str | None
    hostile: bool = False  # a flood: VIP keeps its budget, nothing is ejected
    bad_reload: bool = False  # a corrupt reload: refused, the old version serves on, nothing fails

    @property
    def title(self) -> str:
        return str(self.experiment.get("title", self.name))

    @property
    def metric_prefix(self) -> str:
        return self.name.replace("-", "_")


def load_drill(name: str, directory: Path | None = None) -> Drill:
    path = (directory or experiments_dir()) / f"{name}.yaml"
    try:
        experiment = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise LabError(f"cannot read the experiment of drill {name!r} ({path}): {error}") from None
    blocks = [e for e in experiment.get("extensions", []) if isinstance(e, dict) and e.get("name") == EXTENSION]
    if len(blocks) != 1:
        raise LabError(f"{path}: needs one `extensions: [{{name: {EXTENSION}, ...}}]` block "
                       "(see lab.studies.chaos.catalog)")
    block = blocks[0]
    activities = {a.get("name") for a in experiment.get("method", [])}
    for key in ("fault_start", "fault_end"):
        if block.get(key) is not None and block[key] not in activities:
            raise LabError(f"{path}: {EXTENSION}.{key} names {block[key]!r}, which is no activity of its method")
    if block.get("target") not in TARGETS or block.get("fault_start") is None:
        raise LabError(f"{path}: {EXTENSION} needs target (one of {TARGETS}) and fault_start")
    return Drill(name, path, experiment, block["target"], block["fault_start"], block.get("fault_end"),
                 bool(block.get("expect_ejection")), bool(block.get("expect_restart")), block.get("expect_alert"),
                 bool(block.get("hostile")), bool(block.get("bad_reload")))
