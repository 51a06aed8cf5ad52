"""NCCL knob variants: named sets of NCCL's documented environment variables, and the environment each runs in.

Contract: a `KnobVariant` is a name, the NCCL_* variables it sets and why it is worth a look. `DEFAULT_VARIANTS`
covers the documented knobs that change what a small decode all-reduce or a large one costs: the algorithm
(NCCL_ALGO Ring/Tree), the protocol (NCCL_PROTO LL/LL128/Simple), the channel count (NCCL_MIN_NCHANNELS /
NCCL_MAX_NCHANNELS) and the per-channel buffer (NCCL_BUFFSIZE, 4 MiB by default). Reference: NCCL's user guide,
"Environment Variables" (docs.nvidia.com/deeplearning/nccl/user-guide/docs/env.html).
`parse_variant("ring-ll:NCCL_ALGO=Ring,NCCL_PROTO=LL")` reads one from the command line.
`variant_environment(variant, base)` is `base` (this process's environment by default) with the variant's
variables set on top; everything else, the machine's own NCCL settings included, is left as it is.

NVLink SHARP / multicast (NVLS) is never touched: the lab does not set, override or unset NCCL_NVLS_* variables,
nor select or exclude the NVLS algorithms through NCCL_ALGO. Whether multicast is on is the machine's setting
(its driver, fabric manager and administrators decide it) and the sweep measures the machine as it is set up;
a variant naming it raises `LabError`. So does a variable that is not NCCL's (this is a sweep of NCCL knobs).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from lab.errors import LabError

NVLS_PREFIX = "NCCL_NVLS"


@dataclass(frozen=True)
class KnobVariant:
    name: str
    env: Mapping[str, str] = field(default_factory=dict)
    why: str = ""

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in ":=, /"):
            raise LabError(f"a knob variant needs a plain name (no ':', '=', ',', '/' or spaces), got {self.name!r}")
        if not self.env:
            raise LabError(f"knob variant {self.name!r} sets no variable (the default is the sweep itself)")
        object.__setattr__(self, "env", {str(k): str(v) for k, v in self.env.items()})
        for name, value in self.env.items():
            check_variable(name, value)

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.env.items())


def check_variable(name: str, value: str) -> None:
    if name.startswith(NVLS_PREFIX):
        raise LabError(f"{name}: the lab never sets NVLink SHARP / multicast (NVLS) variables; they stay as the "
                       "machine sets them")
    if name == "NCCL_ALGO" and "nvls" in value.lower():
        raise LabError(f"NCCL_ALGO={value}: selecting or excluding the NVLS algorithms changes the machine's "
                       "multicast setting, which the lab leaves alone")
    if not name.startswith("NCCL_"):
        raise LabError(f"{name} is not an NCCL variable; a knob variant sets NCCL_* variables only")


DEFAULT_VARIANTS: tuple[KnobVariant, ...] = (
    KnobVariant("algo-ring", {"NCCL_ALGO": "Ring"}, "ring only: full link bandwidth at large sizes"),
    KnobVariant("algo-tree", {"NCCL_ALGO": "Tree"}, "tree only: fewer steps, lower latency at small sizes"),
    KnobVariant("proto-ll", {"NCCL_PROTO": "LL"}, "low-latency protocol: 8-byte flag+data stores, small sizes"),
    KnobVariant("proto-ll128", {"NCCL_PROTO": "LL128"}, "128-byte low-latency protocol: NVLink's middle ground"),
    KnobVariant("proto-simple", {"NCCL_PROTO": "Simple"}, "plain protocol: best bandwidth, highest latency"),
    KnobVariant("ring-ll", {"NCCL_ALGO": "Ring", "NCCL_PROTO": "LL"}, "the usual decode-size choice, forced"),
    KnobVariant("channels-2", {"NCCL_MIN_NCHANNELS": "2", "NCCL_MAX_NCHANNELS": "2"},
                "two channels: fewer SMs taken from compute, less bandwidth"),
    KnobVariant("channels-32", {"NCCL_MIN_NCHANNELS": "32"}, "at least 32 channels: more SMs for bandwidth"),
    KnobVariant("buffsize-1m", {"NCCL_BUFFSIZE": str(1 << 20)}, "1 MiB buffers per channel (default 4 MiB)"),
    KnobVariant("buffsize-16m", {"NCCL_BUFFSIZE": str(16 << 20)}, "16 MiB buffers per channel"),
)


def default_variant(name: str) -> KnobVariant:
    for variant in DEFAULT_VARIANTS:
        if variant.name == name:
            return variant
    raise LabError(f"unknown knob variant {name!r}; built-in variants: {', '.join(v.name for v in DEFAULT_VARIANTS)}"
                   " (or NAME:VAR=VALUE,VAR=VALUE)")


def parse_variant(text: str) -> KnobVariant:
    """A built-in name, or NAME:VAR=VALUE[,VAR=VALUE...]."""
    name, sep, spec = text.partition(":")
    if not sep:
        return default_variant(name.strip())
    env = {}
    for item in spec.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise LabError(f"knob variant {text!r}: expected NAME:VAR=VALUE[,VAR=VALUE...], got {item!r}")
        env[key.strip()] = value.strip()
    return KnobVariant(name.strip(), env)


def variant_environment(variant: KnobVariant, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(variant.env)  # checked at construction: never an NVLS variable, so the machine's stay untouched
    return env
