"""Multi-tier request mixes: which share of the load each QoS tier (and its API key) sends.

Contract: a `TierMix` is a tuple of `TierShare(name, api_key, fraction)`; fractions are > 0 and are
normalised to sum to 1. `assign(num_requests, rng)` gives each request a tier by a seeded draw
with those probabilities. The client sends a tier's key as `Authorization: Bearer <api_key>`, so
a gateway (`lab gateway`) can map it to VIP / realtime / async / batch. `parse_tier("vip:KEY:0.2")`
reads the command-line form `NAME:API_KEY:FRACTION` (the key may itself contain ':').
Without a mix every request belongs to `DEFAULT_TIER` and is sent with the run's own key, if any.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lab.errors import LabError

DEFAULT_TIER = "default"


@dataclass(frozen=True)
class TierShare:
    name: str
    api_key: str | None
    fraction: float


@dataclass(frozen=True)
class TierMix:
    tiers: tuple[TierShare, ...]

    def __post_init__(self) -> None:
        if not self.tiers:
            raise LabError("a tier mix needs at least one tier")
        names = [tier.name for tier in self.tiers]
        if len(set(names)) != len(names):
            raise LabError(f"tier names must be unique, got {', '.join(names)}")
        bad = [tier.name for tier in self.tiers if not tier.fraction > 0]
        if bad:
            raise LabError(f"tier fractions must be > 0 (tiers {', '.join(bad)})")

    @property
    def probabilities(self) -> np.ndarray:
        weights = np.array([tier.fraction for tier in self.tiers], dtype=np.float64)
        return weights / weights.sum()

    def assign(self, num_requests: int, rng: np.random.Generator) -> tuple[TierShare, ...]:
        picks = rng.choice(len(self.tiers), size=num_requests, p=self.probabilities)
        return tuple(self.tiers[i] for i in picks)

    def describe(self) -> dict[str, float]:
        # Keys are secrets: the record keeps the tier names and fractions only.
        return {tier.name: float(p) for tier, p in zip(self.tiers, self.probabilities)}


def single_tier(api_key: str | None) -> TierMix:
    return TierMix((TierShare(DEFAULT_TIER, api_key, 1.0),))


def parse_tier(text: str) -> TierShare:
    """`NAME:API_KEY:FRACTION` -> TierShare (see module docstring)."""
    name, sep, rest = text.partition(":")
    key, sep2, fraction_text = rest.rpartition(":")
    if not (sep and sep2 and name and key):
        raise LabError(f"a tier is NAME:API_KEY:FRACTION, e.g. vip:sk-vip:0.2; got {text!r}")
    try:
        fraction = float(fraction_text)
    except ValueError:
        raise LabError(f"tier {name!r}: fraction must be a number, got {fraction_text!r}") from None
    return TierShare(name, key, fraction)
