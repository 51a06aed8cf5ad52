"""`lab mig show` and `lab mig plan`: the MIG inventory, and the commands that would cut a card.

Contract: `lab mig show` prints every GPU's MIG mode and MIG devices (profile, SMs, memory, copy
engines, `MIG-<uuid>`), read-only through NVML. `lab mig plan LAYOUT -i N` checks LAYOUT ("7x1g",
"3x2g+1x1g", "2x3g", "1x7g" or "3g.40gb,2g.20gb,2g.20gb") against GPU N's profile table, prints the
placement and the `nvidia-smi` lines an operator would run, and runs none of them. `--gpu-model`
(e.g. H100-80GB) plans without asking NVML, for a card that is not in this machine. A layout that
does not fit is a `LabError` (exit 2) that names the problem.
"""

from __future__ import annotations

import argparse

from lab.errors import LabError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("mig", help="MIG inventory and layout planning (read-only)",
                                   description="Read MIG state through NVML; plan a layout (never applied).")
    sub = parser.add_subparsers(dest="mig_command", metavar="SUBCOMMAND", required=True)
    show = sub.add_parser("show", help="MIG mode and MIG devices of every GPU")
    show.set_defaults(handler=_show)
    plan = sub.add_parser("plan", help="check a layout and print the nvidia-smi commands that would create it")
    plan.add_argument("layout", help="e.g. 7x1g, 3x2g+1x1g, 2x3g, 1x7g, or 3g.40gb,2g.20gb,2g.20gb")
    plan.add_argument("-i", "--gpu-index", type=int, default=0, help="GPU index (default 0)")
    plan.add_argument("--gpu-model", help="plan for this model without NVML (A100-40GB, A100-80GB, "
                                          "H100-80GB, H200-141GB)")
    plan.set_defaults(handler=_plan)


def _show(args: argparse.Namespace) -> int:
    from lab.gpu.mig import format_inventory, mig_inventory

    gpus = mig_inventory()
    print(format_inventory(gpus) if gpus else "no NVIDIA GPU visible to NVML")
    return 0


def plan_lines(layout: str, gpu_index: int, gpu_model: str | None, inventory: tuple = ()) -> list[str]:
    """The text `lab mig plan` prints; `inventory` is `mig_inventory()`'s answer when no model is named."""
    from lab.gpu.mig_plan import operator_commands, plan_layout
    from lab.gpu.mig_profiles import profile_table, table_for_device

    mig_enabled, has_instances = False, False
    if gpu_model is not None:
        table = profile_table(gpu_model)
        mig_enabled = True  # unknown card state: assume MIG is on and the card empty
    else:
        gpu = next((g for g in inventory if g.index == gpu_index), None)
        if gpu is None:
            raise LabError(f"no GPU {gpu_index} visible to NVML; name the card with --gpu-model "
                           "(A100-40GB, A100-80GB, H100-80GB, H200-141GB)")
        if not gpu.mig_capable:
            raise LabError(f"GPU {gpu_index} ({gpu.name}) does not support MIG")
        table = table_for_device(gpu.name, gpu.memory_total_mib)
        mig_enabled, has_instances = gpu.mig_current, bool(gpu.gpu_instances)
    plan = plan_layout(layout, table)
    lines = [f"# plan: {plan.describe()}", "# the lab runs none of these; an operator runs them as root:"]
    return lines + operator_commands(plan, gpu_index, mig_enabled=mig_enabled, has_instances=has_instances)


def _plan(args: argparse.Namespace) -> int:
    inventory: tuple = ()
    if args.gpu_model is None:
        from lab.gpu.mig import mig_inventory

        inventory = mig_inventory()
    print("\n".join(plan_lines(args.layout, args.gpu_index, args.gpu_model, inventory)))
    return 0
