"""`lab bench coldstart`: process start to first token of an engine, phase by phase, beside its variants.

Contract: `register(bench_commands)` adds the subcommand (lab/bench/cli.py calls it); the handler runs
`lab.bench.coldstart` over every --model x --variant, writes `record.json` (device inside) and `runs.jsonl`
(each child's own JSON line) into --out, logs the record to MLflow unless --no-track, prints the table
and, as its last stdout line, one JSON object of the headline metrics (ready and total per scenario).
Argparse only at import.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lab.track.cli import add_tracking_uri_option

EPILOG = """\
phases (seconds, disjoint, in order; each measurement is a fresh `python -m lab.engine.coldstart_child`):
  interpreter        spawn -> the child's first line (exec, Python, site)
  imports            torch and the engine's modules
  device_init        the CUDA context (0 on a CPU)
  config             config.json or the preset, parsed
  model_build        the module built on meta and its parameters allocated on the device
  weight_init        a preset's dummy weights drawn on the device
  weight_read        a checkpoint: time waiting for the next tensor (with load_format auto, safetensors'
                     own host->device copy is inside it)
  weight_transfer    a checkpoint: the rest of the copy into the parameters (host->device with load-cpu)
  weight_postprocess derived tensors (MLA's absorbed projections)
  tokenizer          tokenizer.json loaded
  kv_profile         activation profiling (CUDA) and the KV block count
  kv_allocation      the paged KV cache allocated
  graph_capture      CUDA graphs (decode buckets, then mixed-step token buckets); ~0 when eager
  engine_other       the rest of LLMEngine's constructor
  first_token        one short greedy request, admission to its token on the host
  ready / total      start (the spawn) -> engine built / -> first token

variants (--variant, repeatable; NAME=JSON gives EngineArgs fields of your own, plus
"fresh_kernel_cache": true):
  default            today's path: safetensors opened on the device, every graph bucket captured
  load-cpu           each tensor read into host memory, then copied (the plain path)
  load-overlap       a reader thread fills pinned buffers while the copies of earlier chunks run
  eager              no CUDA graphs (what capture costs; decode is slower afterwards)
  no-mixed-graphs    decode graphs only
  few-graphs         cuda_graph_sizes 1, 2, 4, ..., 256 (9 decode buckets instead of 20)
  cold-kernels       an empty Triton cache: every kernel compiles (what reusing them saves)

models (--model, repeatable): a preset (dummy weights), a checkpoint directory, or disk:PRESET: the
preset's dummy weights written once as a bf16 safetensors checkpoint under --checkpoint-dir and loaded
from there (no download). With --drop-page-cache the checkpoint's files leave the page cache before
every start, so the weights come from the disk; otherwise a repeat reads them from memory.

examples:
  lab bench coldstart --model disk:r1-distill-qwen-1.5b --variant default --variant load-overlap \\
      --variant few-graphs --repeats 3 --drop-page-cache --out runs/coldstart
  lab bench coldstart --model tiny --hf-overrides '{"num_hidden_layers": 2}' --repeats 2 --device cpu
  lab bench coldstart --model /data/DeepSeek-R1-Distill-Qwen-1.5B \\
      --variant 'lean={"load_format": "overlap", "mixed_cuda_graphs": false}'
"""


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "coldstart", help="an engine's cold start, process start to first token, phase by phase",
        description="Start the engine in fresh processes, N times per model and variant, and time every phase "
        "from process start to the first token (imports, config, weight read and transfer, KV sizing and "
        "allocation, graph capture). Writes record.json (device name inside) and runs.jsonl to --out and logs "
        "the record to MLflow.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", help="preset, checkpoint directory or disk:PRESET (repeatable; "
                   "default: tiny)")
    p.add_argument("--variant", action="append", help="a built-in variant or NAME=JSON (repeatable; default: default)")
    p.add_argument("--repeats", type=int, default=3, help="measured starts per model and variant (default: %(default)s)")
    p.add_argument("--warmups", type=int, default=1,
                   help="unmeasured starts of the first scenario before the others (default: %(default)s)")
    p.add_argument("--device", default="auto", help="EngineArgs.device: auto, cpu, cuda[:N] (default: %(default)s)")
    p.add_argument("--hf-overrides", default="{}", help='config fields for every model, JSON: {"num_hidden_layers": 2}')
    p.add_argument("--engine-args", default="{}", help='EngineArgs fields for every scenario, JSON: {"max_model_len": 4096}')
    p.add_argument("--seed", type=int, default=0, help="dummy weights of presets and disk: checkpoints (default: 0)")
    p.add_argument("--checkpoint-dir", type=Path, help="where disk:PRESET checkpoints are written and reused "
                   "(default: runs/checkpoints)")
    p.add_argument("--drop-page-cache", action="store_true",
                   help="evict a checkpoint's files from the page cache before every start (read from disk)")
    p.add_argument("--timeout-s", type=float, default=600.0, help="per start (default: %(default)s)")
    p.add_argument("--out", type=Path, help="folder for record.json and runs.jsonl (default: runs/coldstart-<timestamp>)")
    p.add_argument("--experiment", default="bench-coldstart", help="MLflow experiment (default: %(default)s)")
    add_tracking_uri_option(p)
    p.add_argument("--no-track", action="store_true", help="write record.json but log nothing to MLflow")
    p.set_defaults(handler=_coldstart)


def _coldstart(args: argparse.Namespace) -> int:
    import dataclasses

    from lab.bench import coldstart as cs
    from lab.bench.coldstart_report import coldstart_record, table_text
    from lab.paths import ProjectLayout, timestamp_slug

    cs.check_counts(args.repeats, args.warmups)  # before a checkpoint is written
    hf_overrides = cs.parse_json_object("--hf-overrides", args.hf_overrides)
    engine_args = cs.parse_json_object("--engine-args", args.engine_args)
    variants = [cs.parse_variant(text) for text in (args.variant or ["default"])]
    models = args.model or ["tiny"]
    runs_dir = ProjectLayout.discover().runs_dir
    common = {**engine_args, "seed": args.seed, **({"device": args.device} if args.device != "auto" else {}),
              **({"hf_overrides": hf_overrides} if hf_overrides else {})}
    checkpoint_root = args.checkpoint_dir or runs_dir / "checkpoints"
    resolved = {m: cs.prepare_model(m, checkpoint_root, seed=args.seed, hf_overrides=hf_overrides or None)
                for m in models}
    scenarios = cs.build_scenarios(models, variants, common, resolved.__getitem__)
    out = args.out or runs_dir / f"coldstart-{timestamp_slug()}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs.jsonl").write_text("", encoding="utf-8")

    def keep(scenario, repeat: int, run) -> None:  # each start as it ends: a run cut short keeps what it measured
        with (out / "runs.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"scenario": scenario.label, "repeat": repeat, **dataclasses.asdict(run)}) + "\n")

    results = cs.run_coldstart(scenarios, args.repeats, warmups=args.warmups, timeout_s=args.timeout_s,
                               drop_cache=args.drop_page_cache, progress=lambda text: print(text, flush=True),
                               on_run=keep)
    params = {"models": models, "variants": {v.name: {**v.engine_args, "fresh_kernel_cache": v.fresh_kernel_cache}
                                             for v in variants},
              "repeats": args.repeats, "warmups": args.warmups, "device": args.device, "hf_overrides": hf_overrides,
              "engine_args": engine_args, "seed": args.seed,
              "page_cache": "dropped before every start" if args.drop_page_cache else "warm (not dropped)",
              "checkpoints": {m: path for m, path in resolved.items() if m != path}}
    record = coldstart_record(results, params, artifacts=("runs.jsonl",))
    path = record.save(out / "record.json")
    print(table_text(results))
    print(f"record: {path}")
    if not args.no_track:
        from lab.track import log_record

        print(f"MLflow run: {log_record(record, record_path=path, tracking_uri=args.tracking_uri, experiment=args.experiment)}")
    print(json.dumps(record.metrics))
    return 0
