"""Typed records that cross the pipe between a server and its engine core process.

Contract (torch-free, all picklable; `core_process.py` is the child side, `core_client.py` the
parent side):
- parent -> core: a *list* of commands per message (the parent's sender thread batches whatever
  queued up): `AddRequest`, `AbortRequest`, `Shutdown`.
- core -> parent, once: `CoreReady` (what the parent needs to serve) or `CoreLoadFailed`
  (the engine could not be built: the exception's type name and message).
- core -> parent, then: one `StepBatch` per loop turn that did anything (applied commands or ran
  a step): every request's new output since the previous batch (`CoreOutput`), per-request
  failures (`RequestFailure`: refused at admission, or failed in a step), and a stats snapshot
  taken after the step, so the parent answers `/metrics` without asking the core. An idle core
  also sends an empty `StepBatch` every `HEARTBEAT_S`: the loop itself sends it, so a parent that
  hears nothing for long knows the loop is stuck (a hung step, a stopped process), not idle.
  `CoreStats.degraded` names why the engine serves garbage if it did (non-finite logits), else None;
  `CoreStats.step_gaps` the gaps between steps with requests in flight (`lab.engine.step_gaps`).
- fault injection (`lab serve --enable-fault-injection`, `lab.engine.faults`): parent -> core
  `ArmFault(command_id, spec)` (spec: `OomFault`, `HangStepFault`, `SlowStepFault`, `NanWeightsFault`),
  `ClearFaults`, `ShowFaults`; core -> parent one `FaultReply` per command, sent as soon as the loop
  applies it (between steps; a `ClearFaults` also ends a hung step).
- hot reload (`lab.engine.weight_reload`): parent -> core `ReloadWeights(command_id, source, seed, policy,
  staging)`; core -> parent a `ReloadReply(command_id, record)` when it is refused, switched, or draining
  (new requests on the new weights), and one more when a drain ends (`promoted`). `CoreReady` and every
  `CoreStats` carry the live weights' version and generation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lab.engine.outputs import TokenLogprob
from lab.engine.sampling_params import SamplingParams
from lab.engine.step_gaps import NO_STEP_GAPS, StepGapStats

HEARTBEAT_S = 1.0  # an idle core's longest silence


# ---- parent -> core ------------------------------------------------------------------------------
@dataclass(frozen=True)
class AddRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    priority: int = 0
    deadline: float | None = None  # time.time() after which the scheduler ends the request


@dataclass(frozen=True)
class AbortRequest:
    request_id: str


@dataclass(frozen=True)
class Shutdown:
    pass


# ---- fault injection (parent -> core): what `lab.engine.faults` arms ------------------------------
OOM_MODES = ("auto", "raise", "allocate")  # auto: allocate on CUDA, raise elsewhere


@dataclass(frozen=True)
class OomFault:
    """The next `steps` steps (or every step for `duration_s`) fail with CUDA out-of-memory."""

    mode: str = "auto"  # raise: torch.cuda.OutOfMemoryError at the step boundary; allocate (CUDA): hold all free memory
    steps: int | None = None  # None with duration_s None: 1
    duration_s: float | None = None


@dataclass(frozen=True)
class HangStepFault:
    """The next step blocks for `duration_s` (a `ClearFaults` or `Shutdown` ends it sooner)."""

    duration_s: float = 60.0


@dataclass(frozen=True)
class SlowStepFault:
    """Every step sleeps `delay_ms` more until cleared: a slow replica."""

    delay_ms: float


@dataclass(frozen=True)
class NanWeightsFault:
    """Overwrite one weight with NaN in place (a copy restores it on clear)."""

    weight: str | None = None  # a parameter or buffer name; None: `layer`'s attention output projection
    layer: int = 0


FaultSpec = OomFault | HangStepFault | SlowStepFault | NanWeightsFault


@dataclass(frozen=True)
class ArmFault:
    command_id: int
    spec: FaultSpec


@dataclass(frozen=True)
class ClearFaults:
    command_id: int


@dataclass(frozen=True)
class ShowFaults:
    command_id: int


FaultCommand = ArmFault | ClearFaults | ShowFaults


@dataclass(frozen=True)
class ReloadWeights:
    """Load `source` (a checkpoint directory, or a preset with `seed`) beside the live weights and switch."""

    command_id: int
    source: str
    seed: int | None = None
    policy: str = "switch"  # switch | drain
    staging: str = "auto"  # auto | device | host


# ---- core -> parent ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CoreReady:
    max_model_len: int
    checkpoint_dir: str | None  # the tokenizer's default home (None: a preset, DeepSeek's tokenizer)
    num_gpu_blocks: int
    device: str
    vocab_size: int  # token ids the model has logits for: what prompts and stop_token_ids may name
    weights_version: str = ""  # the live weights: a preset@seed or a checkpoint path
    partition: str | None = None  # "emulated 1g.10gb" under `lab serve --emulate-mig` (lab.gpu.mig_emulation)


@dataclass(frozen=True)
class CoreLoadFailed:
    error_type: str  # e.g. "ValueError"
    message: str


@dataclass(frozen=True)
class CoreOutput:
    """What one step (or an abort) changed in one request: the delta since its previous output."""

    request_id: str
    new_text: str
    new_token_ids: list[int]
    num_output_tokens: int  # cumulative
    finish_reason: str | None  # set on the request's last output only
    queue_time_s: float | None  # arrival to first scheduled step; None until scheduled
    num_preemptions: int  # cumulative
    new_logprobs: list[TokenLogprob] = field(default_factory=list)  # one per new token, if logprobs were asked


@dataclass(frozen=True)
class RequestFailure:
    request_id: str
    refused: bool  # True: add_request refused it (nothing ran); False: it failed while running
    message: str
    alone: bool = False  # failed while running, in a step that went on for the rest of its batch


@dataclass(frozen=True)
class CoreStats:
    num_requests_running: int
    num_requests_waiting: int
    kv_cache_usage_perc: float  # fraction of KV blocks in use, in [0, 1]
    degraded: str | None = None  # why the engine's output cannot be trusted (non-finite logits), else None
    weights_version: str = ""
    weights_generation: int = 0  # reloads done
    reloading: bool = False  # a reload is loading its standby or draining
    step_gaps: StepGapStats = NO_STEP_GAPS  # gaps between steps with requests in flight (`lab.engine.step_gaps`)


IDLE_STATS = CoreStats(0, 0, 0.0)


@dataclass(frozen=True)
class StepBatch:
    outputs: list[CoreOutput]
    failures: list[RequestFailure]
    stats: CoreStats


@dataclass(frozen=True)
class FaultReply:
    """The core's answer to one fault command: JSON-able records (`lab.engine.faults`), or why it refused."""

    command_id: int
    record: dict | None  # what this command did: kind, mode, device, wall and monotonic times
    armed: list[dict]  # every fault armed after it
    recent: list[dict]  # the latest faults that ended (a hang's actual duration, an oom's failed steps)
    error: str | None = None  # refused (e.g. an unknown weight name): nothing changed
    degraded: str | None = None  # as `CoreStats.degraded`, after the command: a clear's answer follows its repair


@dataclass(frozen=True)
class ReloadReply:
    """A reload's record (`lab.engine.weight_reload`): outcome refused (with `error`), switched, draining or
    promoted, the version, and its timings."""

    command_id: int
    record: dict
