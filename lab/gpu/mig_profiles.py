"""NVIDIA's MIG GPU-instance profile tables for the cards the lab plans for (A100, H100, H200), torch-free.

Contract: `profile_table(gpu)` returns the `MigProfileTable` of a GPU model key ("A100-40GB", "A100-80GB",
"H100-80GB", "H200-141GB"), `table_for_device(name, memory_mib)` picks one from what NVML reports, and
`table.profile(token)` resolves a profile name ("3g.40gb", "MIG 3g.40gb") or a compute-only shorthand ("3g":
the profile with 3 compute slices and the fewest memory slices, without media extensions). Unknown GPUs
and profiles raise `LabError` naming the valid choices.

Sources (NVIDIA Multi-Instance GPU User Guide): the pages "Supported MIG Profiles" (A100/H100/H200 tables:
fraction of memory and SMs, L2 share, copy engines, number of instances; the placement diagrams) and
"Getting Started with MIG" (`nvidia-smi mig -lgip` / `-lgipp`: profile IDs, SM counts, placements). A card
has 7 compute slices and 8 memory slices; a GPU instance occupies `memory_slices` consecutive memory
slices starting at one of its profile's documented placement starts. Unverified here: the absolute SM counts
and the 7g copy-engine counts were written from recollection of `nvidia-smi mig -lgip` output on SXM boards,
not read from a document or a MIG-enabled card in this lab (the guide's tables give SMs as fractions, 1/7 per
compute slice, of the card in MIG mode). The live inventory (`lab.gpu.mig`) reads the true numbers from NVML and
is what to trust on a real card; the slice model (`lab.gpu.mig_model`) takes its SM shares from these counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.errors import LabError

COMPUTE_SLICES = 7  # per A100 / H100 / H200 card
MEMORY_SLICES = 8


@dataclass(frozen=True)
class MigProfile:
    """One GPU-instance profile of one GPU model, as NVIDIA's table lists it."""

    name: str  # "3g.40gb" (nvidia-smi prints "MIG 3g.40gb")
    profile_id: int  # the GI profile ID `nvidia-smi mig -cgi` takes
    compute_slices: int  # the "3g" part: sevenths of the card's compute
    memory_slices: int  # eighths of the card's memory, L2 and memory bandwidth
    sm_count: int
    copy_engines: int
    max_instances: int
    placement_starts: tuple[int, ...]  # first memory slice of each allowed placement

    @property
    def media_extensions(self) -> bool:
        return self.name.endswith("+me")

    @property
    def memory_share(self) -> float:
        """Share of DRAM capacity, memory bandwidth and L2 (all three follow the memory slices)."""
        return self.memory_slices / MEMORY_SLICES


@dataclass(frozen=True)
class MigProfileTable:
    """Every GI profile of one GPU model, plus the full card's SM count (MIG off)."""

    gpu: str  # "H100-80GB"
    full_sm_count: int
    memory_gib: float  # nominal card memory, only for estimates when no device answers
    profiles: tuple[MigProfile, ...]

    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.profiles)

    def profile(self, token: str) -> MigProfile:
        """Resolve "3g.40gb", "MIG 3g.40gb" or the shorthand "3g" to a profile of this table."""
        name = token.strip().removeprefix("MIG ").strip().lower()
        for p in self.profiles:
            if p.name == name:
                return p
        if name.endswith("g") and name[:-1].isdigit():
            candidates = [p for p in self.profiles
                          if p.compute_slices == int(name[:-1]) and not p.media_extensions]
            if candidates:
                return min(candidates, key=lambda p: p.memory_slices)
        raise LabError(f"unknown MIG profile {token!r} for {self.gpu}; valid: {', '.join(self.names())} "
                       f"or a compute shorthand such as '1g', '3g'")

    def by_id(self, profile_id: int) -> MigProfile | None:
        return next((p for p in self.profiles if p.profile_id == profile_id), None)


def _table(gpu: str, full_sm: int, memory_gib: float, gb: dict[str, int], sms: dict[str, int],
           copy_engines_7g: int) -> MigProfileTable:
    """The A100/H100/H200 family share one geometry; only memory sizes in names, SMs and CEs differ.

    `gb` maps the geometry key to the GB figure in the profile name, `sms` to the SM count.
    Geometry: (key, profile ID, compute slices, memory slices, copy engines, max instances, starts).
    """
    geometry = (
        ("1g", 19, 1, 1, 1, 7, (0, 1, 2, 3, 4, 5, 6)),
        ("1g+me", 20, 1, 1, 1, 1, (0, 1, 2, 3, 4, 5, 6)),
        ("1g.2m", 15, 1, 2, 1, 4, (0, 2, 4, 6)),
        ("2g", 14, 2, 2, 2, 3, (0, 2, 4)),
        ("3g", 9, 3, 4, 3, 2, (0, 4)),
        ("4g", 5, 4, 4, 4, 1, (0,)),
        ("7g", 0, 7, 8, copy_engines_7g, 1, (0,)),
    )
    profiles = []
    for key, pid, compute, memory, ces, count, starts in geometry:
        suffix = "+me" if key.endswith("+me") else ""
        sm_key = key.removesuffix("+me")
        name = f"{compute}g.{gb[sm_key]}gb{suffix}"
        profiles.append(MigProfile(name, pid, compute, memory, sms[sm_key], ces, count, starts))
    return MigProfileTable(gpu, full_sm, memory_gib, tuple(profiles))


# GA100 in MIG mode exposes 98 of the A100's 108 SMs (14 per compute slice); GH100 SXM exposes all 132
# in 7g but only 16 per 1g: seven 1g slices hold 112 SMs, a single 7g 132.
_A100_SMS = {"1g": 14, "1g.2m": 14, "2g": 28, "3g": 42, "4g": 56, "7g": 98}
_H100_SMS = {"1g": 16, "1g.2m": 26, "2g": 32, "3g": 60, "4g": 64, "7g": 132}

TABLES: dict[str, MigProfileTable] = {
    "A100-40GB": _table("A100-40GB", 108, 40, {"1g": 5, "1g.2m": 10, "2g": 10, "3g": 20, "4g": 20, "7g": 40},
                        _A100_SMS, copy_engines_7g=7),
    "A100-80GB": _table("A100-80GB", 108, 80, {"1g": 10, "1g.2m": 20, "2g": 20, "3g": 40, "4g": 40, "7g": 80},
                        _A100_SMS, copy_engines_7g=7),
    "H100-80GB": _table("H100-80GB", 132, 80, {"1g": 10, "1g.2m": 20, "2g": 20, "3g": 40, "4g": 40, "7g": 80},
                        _H100_SMS, copy_engines_7g=8),
    "H200-141GB": _table("H200-141GB", 132, 141,
                         {"1g": 18, "1g.2m": 35, "2g": 35, "3g": 71, "4g": 71, "7g": 141},
                         _H100_SMS, copy_engines_7g=8),
}
# The "1g.2m" key above is the 1-compute/2-memory-slice profile (1g.10gb on A100-40GB, 1g.20gb on 80 GB).


def profile_table(gpu: str) -> MigProfileTable:
    try:
        return TABLES[gpu]
    except KeyError:
        raise LabError(f"no MIG profile table for GPU model {gpu!r}; known: {', '.join(TABLES)}") from None


def table_for_device(name: str, memory_total_mib: float) -> MigProfileTable:
    """Pick the table from NVML's device name and total memory ("NVIDIA H100 80GB HBM3", 81559 MiB)."""
    gib = memory_total_mib / 1024
    upper = name.upper()
    if "A100" in upper:
        return TABLES["A100-80GB" if gib > 60 else "A100-40GB"]
    if "H200" in upper:
        return TABLES["H200-141GB"]
    # H100 NVL / 94 GB boards cut other sizes (1g.12gb ...): refuse rather than plan with wrong names.
    if "H100" in upper and gib < 85:
        return TABLES["H100-80GB"]
    raise LabError(f"no MIG profile table for {name!r} ({gib:.0f} GiB); known: {', '.join(TABLES)}")
