"""The result record: the source of truth of every experiment.

Contract: a `ResultRecord` is an immutable value holding what one notebook execution (or one
sweep point, as a child record) measured: `experiment`, `params`, `metrics` (name -> float),
`environment` (see `lab.track.environment`), `artifacts` (file paths; relative ones are relative
to the directory of the record's JSON file), `created_at` (ISO 8601, UTC), the `profile` and
`notebook` when known, a unique `record_id`, and `children` (nested records: the points of a
sweep). `save(path)` / `load(path)` round-trip it through JSON exactly; MLflow runs are derived
from records (`lab.track.log`), never the other way round.
`code_diff` is the uncommitted diff the record ran with (`git diff --binary HEAD`, whose sha256 the
environment names as `git_diff_sha256`): never in the JSON, `save` writes it beside it as `code.diff`
(one record per folder) and `load` reads it back when its hash matches. A record built from
`collect_environment()` takes it from that `CollectedEnvironment`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import numbers
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.track.code_state import DIFF_SHA256_FACT, sha256_hex

SCHEMA_VERSION = 1
CODE_DIFF_FILE = "code.diff"


class CollectedEnvironment(dict):
    """Environment facts (a JSON-ready dict) that also carry the uncommitted diff they were taken with.

    The diff travels beside the facts, not in them, because it is too large for the JSON and for MLflow
    tags; being a dict, this is still what every caller passes as a record's `environment`.
    """

    def __init__(self, facts: Mapping[str, Any], code_diff: bytes | None = None) -> None:
        super().__init__(facts)
        self.code_diff = code_diff


def utc_now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _new_record_id() -> str:
    return uuid.uuid4().hex


def _as_metric(name: str, value: Any) -> float:
    # numbers.Real admits numpy and Python ints/floats; bools and strings are not measurements
    # (they belong in params).
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"metric {name!r} must be an int or float, got {type(value).__name__}: {value!r}")
    return float(value)


@dataclass(frozen=True)
class ResultRecord:
    experiment: str
    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    environment: Mapping[str, Any] = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()
    created_at: str = field(default_factory=utc_now_iso)
    profile: str | None = None
    notebook: str | None = None
    record_id: str = field(default_factory=_new_record_id)
    children: tuple[ResultRecord, ...] = ()
    code_diff: bytes | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.experiment or not isinstance(self.experiment, str):
            raise ValueError("a record needs a non-empty experiment name")
        if self.code_diff is None and isinstance(self.environment, CollectedEnvironment):
            object.__setattr__(self, "code_diff", self.environment.code_diff)
        # Normalise once at the boundary: copies (callers may keep mutating their dicts),
        # floats for metrics, strings for artifact paths, a tuple of children.
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(
            self, "metrics", {str(k): _as_metric(str(k), v) for k, v in self.metrics.items()}
        )
        object.__setattr__(self, "environment", dict(self.environment))
        object.__setattr__(self, "artifacts", tuple(str(a) for a in self.artifacts))
        object.__setattr__(self, "children", tuple(self.children))

    # --- JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "record_id": self.record_id,
            "experiment": self.experiment,
            "notebook": self.notebook,
            "profile": self.profile,
            "created_at": self.created_at,
            "params": self.params,
            # JSON has no NaN/inf; store them as strings so a failed measurement survives the trip.
            "metrics": {k: v if math.isfinite(v) else repr(v) for k, v in self.metrics.items()},
            "environment": self.environment,
            "artifacts": list(self.artifacts),
            "children": [child.to_dict() for child in self.children],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResultRecord:
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ValueError(f"unsupported record schema_version {version} (this lab reads {SCHEMA_VERSION})")
        missing = [key for key in ("experiment", "params", "metrics") if key not in data]
        if missing:
            raise ValueError(f"not a result record: missing {', '.join(missing)}")
        return cls(
            experiment=data["experiment"],
            params=data["params"],
            metrics={k: float(v) for k, v in data["metrics"].items()},
            environment=data.get("environment", {}),
            artifacts=tuple(data.get("artifacts", ())),
            created_at=data.get("created_at") or utc_now_iso(),
            profile=data.get("profile"),
            notebook=data.get("notebook"),
            record_id=data.get("record_id") or _new_record_id(),
            children=tuple(cls.from_dict(child) for child in data.get("children", ())),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write the record as JSON (creating parent folders) and return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename so a crash never leaves a truncated record behind.
        partial = target.with_name(target.name + ".partial")
        partial.write_text(self.to_json(), encoding="utf-8")
        partial.replace(target)
        if self.code_diff:
            target.with_name(CODE_DIFF_FILE).write_bytes(self.code_diff)
        return target

    @classmethod
    def load(cls, path: str | Path) -> ResultRecord:
        source = Path(path)
        record = cls.from_dict(json.loads(source.read_text(encoding="utf-8")))
        diff_file = source.with_name(CODE_DIFF_FILE)
        expected = record.environment.get(DIFF_SHA256_FACT)
        # Only the diff the record names: a code.diff of another run left in the folder is not its code.
        if expected and diff_file.is_file():
            diff = diff_file.read_bytes()
            if sha256_hex(diff) == expected:
                object.__setattr__(record, "code_diff", diff)
        return record

    def code_diff_path(self, record_path: str | Path) -> Path | None:
        """Where `save(record_path)` puts the diff, when the record has one."""
        return Path(record_path).with_name(CODE_DIFF_FILE) if self.code_diff else None

    # --- helpers --------------------------------------------------------------------------
    def artifact_paths(self, base_dir: str | Path) -> list[Path]:
        """Artifact paths made absolute against `base_dir` (the record file's directory)."""
        base = Path(base_dir)
        return [p if p.is_absolute() else base / p for p in map(Path, self.artifacts)]

    @property
    def device(self) -> str | None:
        return self.environment.get("device")


def child_records(
    experiment: str, points: Sequence[tuple[Mapping[str, Any], Mapping[str, float]]]
) -> tuple[ResultRecord, ...]:
    """Child records for `[(params, metrics), ...]`, e.g. one per batch size of a sweep.

    Children carry no environment: they ran where their parent ran.
    """
    return tuple(ResultRecord(experiment=experiment, params=p, metrics=m) for p, m in points)
