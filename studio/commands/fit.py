"""`configi-studio fit MODEL (--target-gb N | --mac GB [--context N])`: bits that fit a size, least error first.

First checks that the target is reachable at all (sizes alone decide that), then
surveys the quantization error of every quantized unit on samples of its real
weights (or, with --sensitivity, runs the calibration pass), lets `budget.propose`
spend the budget where the error falls most, prints the change from the current
policy, and writes the proposed policy only with --out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from studio.commands.calibrating import add_arguments as add_calibration_arguments
from studio.commands.calibrating import run_calibration
from studio.commands.estimate import check_context
from studio.core.errors import StudioError
from studio.core.formatting import human_bytes, table
from studio.core.memory import CONTEXT_CHOICES, MAC_MEMORY_GB
from studio.core.policy.compact import compact


def configure_parser(parser):
    parser.add_argument("model", help="a model folder (Hugging Face style or MLX) or a Hub repo org/name[@revision]")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-gb", type=float, help="largest output size in GB (1e9 bytes)")
    target.add_argument("--mac", type=int, choices=MAC_MEMORY_GB,
                        help="fit a Mac with this much memory: GPU limit less KV cache and runtime")
    parser.add_argument("--context", type=int, default=None, help=f"context length for the KV cache with --mac "
                        f"(default 32768 or the model's max_position_embeddings, whichever is less; "
                        f"e.g. {', '.join(map(str, CONTEXT_CHOICES))})")
    parser.add_argument("--policy", default=None, help="preset name (default config-i) or policy JSON file to start from")
    parser.add_argument("--out", help="write the proposed policy to this JSON file (a new one; see --force)")
    parser.add_argument("--force", action="store_true", help="let --out replace a file that exists")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sample", type=int, default=None, metavar="N",
                        help="values sampled per unit for the error survey (default 4194304)")
    add_calibration_arguments(parser, "--sensitivity", "spend the budget by output-space sensitivity instead of "
                              "weight error")


def check_policy_destination(path: Path, force: bool) -> None:
    """A policy file is written only where nothing of the user's would be lost."""
    if path.is_dir():
        raise StudioError(f"{path} is a folder; --out takes the policy file to write.")
    if path.exists() and not force:
        raise StudioError(f"{path} already exists; choose another file or replace it with --force.")
    if not path.parent.is_dir():
        raise StudioError(f"cannot write {path}: the folder {path.parent} does not exist.")


def run(args) -> int:
    from studio.core.quant_error.survey import DEFAULT_MAX_ELEMENTS, survey
    from studio.core.budget.propose import check_feasible
    from studio.core.budget.report import error_text, fit_to_budget, target_bytes
    from studio.core.project import Project

    from studio.core.memory import default_context

    check_context(args.context)
    if args.sample is not None and args.sample < 1:
        raise StudioError(f"--sample must be at least 1 value, not {args.sample}.")
    if args.out:  # before minutes of survey or calibration, not after
        check_policy_destination(Path(args.out).expanduser(), args.force)
    project = Project.open(args.model, args.policy)
    if args.context is None:
        args.context = default_context(project.inventory.text_config)
    budget = target_bytes(project, args.target_gb, args.mac, args.context)
    check_feasible(project, budget)  # sizes alone decide this: before minutes of survey or calibration
    interactive = sys.stderr.isatty()

    def progress(p):
        if interactive:
            sys.stderr.write(f"\rsurveying errors {100 * p.fraction:5.1f}% [{p.done}/{p.total}] {p.unit[-60:]:<60}")
            sys.stderr.flush()

    if args.sensitivity is not None:
        stats = run_calibration(project, args.sensitivity, sensitivity=True)
        if stats is None:
            return 130
        result = fit_to_budget(project, budget, stats.sensitivity, additive=True,
                               note="fit to budget (output-space sensitivity)")
        seconds = stats.seconds
        measure = "output-space sensitivity: predicted KL of the next-token distribution, summed over the cells"
    else:
        cells = survey(project, progress=progress, max_elements_per_unit=args.sample or DEFAULT_MAX_ELEMENTS)
        if interactive:
            sys.stderr.write("\n")
        result = fit_to_budget(project, budget, cells)
        seconds, measure = cells.seconds, "relative error of the quantized weights, RMS, on samples"
    proposal = result.proposal
    if args.out:  # compacted as the window's Save writes it: the same decision for every tensor, fewer rules
        compact(proposal.policy, project.grid).save(Path(args.out).expanduser())
    if args.json:
        out = {"model": project.inventory.source.label, "from_policy": project.policy.name,
               "survey_seconds": round(seconds, 3),
               "measure": "output-space sensitivity" if args.sensitivity is not None else "weight error",
               "error_unit": "nats (predicted KL, summed over cells)" if result.additive else "relative (RMS)",
               **result.to_dict(), "written": args.out}
        print(json.dumps(out, indent=2))
        return 0

    def shown(error: float) -> str:
        return error_text(error, result.additive)

    where = f"a {args.mac} GB Mac at {args.context:,} tokens" if args.mac else f"{args.target_gb:g} GB"
    print(f"{project.inventory.source.label}  (policy {project.policy.name}; budget {human_bytes(budget)} for {where})\n")
    if result.rows:
        rows = [[r.role_label, r.layers_text, f"{r.old_bits} -> {r.new_bits}", human_bytes(r.bytes_before),
                 human_bytes(r.bytes_after), shown(r.error_before), shown(r.error_after)]
                for r in result.rows]
        print(table(["role", "layers", "bits", "size before", "size after", "error before", "error after"], rows,
                    right={3, 4, 5, 6}))
    else:
        print("no change: the current policy is already the best fit the survey finds.")
    print()
    print(f"size        {human_bytes(result.bytes_before)} -> {human_bytes(proposal.total_bytes)} "
          f"(budget {human_bytes(budget)})")
    print(f"error       {shown(result.error_before)} -> {shown(result.error_after)} "
          f"({measure})")
    print(f"policy      written to {args.out}" if args.out else "policy      not written (use --out FILE)")
    return 0
