"""What a chaostoolkit journal says about one drill: did it complete, did the hypothesis hold, when was the fault.

Contract (pure functions of the journal dict `chaos run` writes, or `run_experiment` returns):
- `activity_outputs(journal, name)`: the outputs of the method's runs of activity `name` that succeeded.
- `fault_window(journal, drill)`: `(start_s, end_s)` on the `time.monotonic()` clock, from the records of
  the drill's `fault_start` / `fault_end` activities (`lab.chaos` actions stamp `at_monotonic_s`): a load
  activity named as both is its own window (its `started_monotonic_s` and `stopped_monotonic_s`; a flash
  sale: its burst marks inside it); `end_s` is None for an instantaneous fault. `(None, None)` when the
  fault action did not succeed.
- `verdict(journal)`: status, deviated, hypothesis met before and after, and the rollbacks' statuses.
- `load_output(journal)`: the summary of the drill load (`run_drill_load`, or the flash sale that is it).
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.studies.chaos.catalog import Drill

LOAD_FUNCS = ("run_drill_load", "flash_sale")


@dataclass(frozen=True)
class Verdict:
    status: str  # completed | failed | aborted | interrupted
    deviated: bool
    steady_before: bool | None
    steady_after: bool | None
    rollbacks: tuple[str, ...]  # each rollback's status
    failed_activities: tuple[str, ...]

    @property
    def completed(self) -> bool:
        return self.status == "completed" and not self.deviated


def _runs(journal: dict) -> list[dict]:
    return list(journal.get("run") or [])


def activity_outputs(journal: dict, name: str) -> list:
    return [r.get("output") for r in _runs(journal) if r["activity"].get("name") == name and r["status"] == "succeeded"]


def fault_window(journal: dict, drill: Drill) -> tuple[float | None, float | None]:
    starts = activity_outputs(journal, drill.fault_start)
    if not starts or not isinstance(starts[0], dict):
        return None, None
    first = starts[0]
    if drill.fault_end == drill.fault_start:  # a load: its own start and stop
        origin = float(first["started_monotonic_s"])
        if "burst_start_s" in first:
            return origin + float(first["burst_start_s"]), origin + float(first["burst_end_s"])
        return origin, float(first["stopped_monotonic_s"])
    start = float(first["at_monotonic_s"])
    if drill.fault_end is None:
        return start, None
    ends = activity_outputs(journal, drill.fault_end)
    return start, (float(ends[0]["at_monotonic_s"]) if ends and isinstance(ends[0], dict) else None)


def _met(journal: dict, when: str) -> bool | None:
    found = (journal.get("steady_states") or {}).get(when)
    return None if not found else bool(found.get("steady_state_met"))


def verdict(journal: dict) -> Verdict:
    failed = tuple(r["activity"].get("name", "") for r in _runs(journal) if r["status"] != "succeeded")
    return Verdict(str(journal.get("status")), bool(journal.get("deviated")), _met(journal, "before"),
                   _met(journal, "after"), tuple(str(r.get("status")) for r in journal.get("rollbacks") or []), failed)


def load_output(journal: dict) -> dict | None:
    for run in _runs(journal):
        provider = run["activity"].get("provider", {})
        if provider.get("func") in LOAD_FUNCS and isinstance(run.get("output"), dict):
            return run["output"]
    return None
