"""`configi-studio estimate MODEL --policy ...`: exact output size, both bpw figures, memory fit."""

from __future__ import annotations

import json

from studio.core.errors import StudioError
from studio.core.formatting import human_bytes, table
from studio.core.memory import CONTEXT_CHOICES, MAC_MEMORY_GB
from studio.core.project import Project
from studio.core.model.roles import ROLE_BY_KEY


def check_context(context: int | None) -> None:
    if context is not None and context < 1:
        raise StudioError(f"--context must be at least 1 token, not {context}.")


def configure_parser(parser):
    parser.add_argument("model", help="a model folder (Hugging Face style or MLX) or a Hub repo org/name[@revision]")
    parser.add_argument("--policy", default=None, help="preset name (default config-i) or policy JSON file")
    parser.add_argument("--mac", type=int, default=256, choices=MAC_MEMORY_GB, help="Mac unified memory in GB")
    parser.add_argument("--context", type=int, default=None, help=f"context length for the KV cache "
                        f"(default 32768 or the model's max_position_embeddings, whichever is less; "
                        f"e.g. {', '.join(map(str, CONTEXT_CHOICES))})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    check_context(args.context)
    project = Project.open(args.model, args.policy)
    est = project.estimate
    fit = project.memory_fit(args.mac, args.context)
    if args.json:
        out = {"policy": project.policy.name, **est.to_dict(), "fit": fit.to_dict(), "warnings": project.warnings}
        print(json.dumps(out, indent=2))
        return 0
    print(f"{project.inventory.source.label}  ({project.inventory.model_type}, policy {project.policy.name})\n")
    rows = []
    for role, size in sorted(est.by_role.items(), key=lambda kv: -kv[1]):
        src = est.by_role_source.get(role, 0)
        rows.append([ROLE_BY_KEY[role].label, human_bytes(src), human_bytes(size),
                     f"{100 * size / est.total_bytes:.1f}%" if est.total_bytes else "-"])
    print(table(["role", "source", "output", "share"], rows))
    print()
    print(f"output size               {human_bytes(est.total_bytes)} ({est.total_bytes:,} bytes of tensor data)")
    print(f"source size               {human_bytes(est.source_bytes)}")
    print(f"bpw, quantized weights    {est.bpw_quantized:.3f}")
    print(f"bpw, whole output         {est.bpw_output:.3f}")
    print(f"memory                    {fit.sentence()}")
    for warning in project.warnings:
        print(f"warning: {warning}")
    return 0
