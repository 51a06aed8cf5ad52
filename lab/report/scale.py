"""Which runs may stand for a claim: full-scale ones, never a smoke run.

Contract: `scale_of(profile, committed)` classifies one measurement by its record's `profile` (what
`lab reproduce --profile P` sets; None for a run by hand) and by where it was read:
- profile `smoke` -> SMOKE: tiny parameters that check the road end to end; never a claim.
- profile `gpu` or `multi-gpu` -> FULL: the profiles that run every notebook at full scale.
- no profile, read from a records folder (`reports/records/` by default) -> FULL: committing a hand run
  beside the NOTE.md that says how it ran is the statement that it is the study at full scale (the
  14-day fleet simulation, the 2-core CPU scheduling study).
- no profile in the MLflow store -> AD_HOC: an interactive run with whatever parameters it was given.
- any other profile -> AD_HOC: the lab cannot vouch for the scale of a profile it does not ship.
Only FULL measurements fill the claims table; SMOKE and AD_HOC ones are shown apart.
"""

from __future__ import annotations

from enum import Enum

SMOKE_PROFILE = "smoke"
FULL_SCALE_PROFILES = frozenset({"gpu", "multi-gpu"})


class Scale(Enum):
    FULL = "full scale"
    SMOKE = "smoke"
    AD_HOC = "ad hoc"


def scale_of(profile: str | None, committed: bool) -> Scale:
    if profile == SMOKE_PROFILE:
        return Scale.SMOKE
    if profile in FULL_SCALE_PROFILES or (profile is None and committed):
        return Scale.FULL
    return Scale.AD_HOC
