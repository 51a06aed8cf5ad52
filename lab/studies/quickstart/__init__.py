"""Study 00, quickstart: a seeded matmul load under telemetry, then the default model answering.

What `notebooks/00_quickstart.ipynb` calls, from the product packages (nothing of its own):
`run_matmul_load` and `TelemetrySampler` / `plot_trace` (`lab.gpu`), `LLM` / `SamplingParams` and
`measure_generate` / `random_prompts` (`lab.engine`).
"""
from lab.studies.exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "run_matmul_load": "lab.gpu.load",
    "plot_trace": "lab.gpu.plot",
    "TelemetrySampler": "lab.gpu.telemetry",
    "LLM": "lab.engine",
    "SamplingParams": "lab.engine",
    "measure_generate": "lab.engine.throughput",
    "random_prompts": "lab.engine.throughput",
})
