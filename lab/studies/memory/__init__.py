"""Study 06, memory compression: the allocator's view of an engine run, activation memory against chunk size,
and 8-bit KV cache and weights against the plain engine (capacity, speed, fidelity).

What `notebooks/06_memory_compression.ipynb` calls (re-exported lazily: `from lab.studies import memory`):
`StudyConfig` / `run_model` / `allocator_comparison` (`study`), `chunk_metrics` / `variant_metrics` /
`target_rows` / `target_metrics` / `prefix` (`summary`), `plot_chunks` / `plot_variants` / `plot_allocators`
(`plots`), `phase_rows` (`plots`: the allocator comparison as table rows).
"""
from lab.studies.exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "StudyConfig": "lab.studies.memory.study",
    "ModelRun": "lab.studies.memory.study",
    "run_model": "lab.studies.memory.study",
    "allocator_comparison": "lab.studies.memory.study",
    "chunk_metrics": "lab.studies.memory.summary",
    "variant_metrics": "lab.studies.memory.summary",
    "target_rows": "lab.studies.memory.summary",
    "target_metrics": "lab.studies.memory.summary",
    "prefix": "lab.studies.memory.summary",
    "plot_chunks": "lab.studies.memory.plots",
    "plot_variants": "lab.studies.memory.plots",
    "plot_allocators": "lab.studies.memory.plots",
    "phase_rows": "lab.studies.memory.plots",
})
