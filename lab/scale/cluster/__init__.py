"""A torch-free cluster model of full-size DeepSeek-V3/R1: memory, step time and throughput per GPU.

Contract: plan a deployment of the 671B model from arithmetic and given (or measured) numbers only:
- `model`: the architecture (`ModelShape`, `DEEPSEEK_V3`) and what follows from it: parameters per
  component, weight bytes in bf16 and block-FP8, compressed MLA KV bytes per token;
- `hardware`: the GPU catalog (datasheet numbers) and the fabric (NVLink inside a node, NICs between);
- `layout`: one serving instance's parallel layout (TP, DP attention, EP, PP, role) and a prefill/decode
  disaggregated deployment, validated with errors that name the broken rule;
- `memory`: weights, KV and a given reserve per GPU, whether it fits, the largest batch that fits;
- `layer_time`: where per-layer compute time comes from (`RooflineLayerTime` with given efficiencies,
  `MeasuredLayerTime` fed by a GPU layer profile), behind the `LayerTimeSource` protocol;
- `comm`: TP all-reduce and EP dispatch/combine times from the fabric's bandwidths;
- `predict`: decode step time, ITL, TTFT and tokens/s per GPU for a workload;
- `anchors`: published throughputs with their sources, and the error of a prediction against them.
Nothing here is calibrated: every efficiency, latency, reserve or skew the model needs is an input.
Submodules are imported explicitly (`from lab.scale.cluster.model import DEEPSEEK_V3`).
"""
