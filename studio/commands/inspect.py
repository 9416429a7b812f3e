"""`configi-studio inspect MODEL`: the inventory by layer and role, source format, warnings."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from studio.core.formatting import human_bytes, table
from studio.core.model.inventory import SOURCE_FORMATS
from studio.core.project import Project
from studio.core.model.roles import ROLE_BY_KEY, classify


def configure_parser(parser):
    parser.add_argument("model", help="a model folder (Hugging Face style or MLX) or a Hub repo org/name[@revision]")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--tensors", action="store_true", help="list every tensor too")


def summary(project: Project) -> dict:
    inv = project.inventory
    num_layers = project.num_layers
    by_role: dict[str, dict] = defaultdict(lambda: {"tensors": 0, "bytes": 0, "elements": 0})
    by_layer: dict[str, int] = Counter()
    for tensor in inv.tensors:
        role, layer = classify(project.architecture.rename(tensor.name), num_layers)
        entry = by_role[role]
        entry["tensors"] += 1
        entry["bytes"] += tensor.nbytes
        entry["elements"] += tensor.elements
        by_layer["none" if layer is None else str(layer)] += tensor.nbytes
    return {
        "path": inv.source.label,
        "model_type": inv.model_type,
        "architecture_known": project.architecture.known,
        "source_format": inv.source_format,
        "shards": len(inv.shards),
        "tensors": len(inv.tensors),
        "header_entries": sum(1 + len(t.companions) for t in inv.tensors),
        "units": len(project.units),
        "layers": num_layers,
        "total_bytes": inv.total_bytes,
        "parameters": inv.total_elements,
        "by_role": dict(by_role),
        "by_layer": dict(by_layer),
        "warnings": project.warnings,
    }


def run(args) -> int:
    project = Project.open(args.model)
    info = summary(project)
    if args.json:
        if args.tensors:
            info["tensor_list"] = [
                {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "encoding": t.encoding,
                 "bytes": t.nbytes, "shard": t.shard}
                for t in project.inventory.tensors
            ]
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['path']}")
    print(f"  architecture  {info['model_type'] or '(none)'}{'' if info['architecture_known'] else ' (unknown)'}")
    print(f"  source format {SOURCE_FORMATS[info['source_format']]}")
    print(f"  tensors       {info['tensors']:,} ({info['header_entries']:,} header entries, scales with their "
          f"weights) in {info['shards']} shard(s), {info['units']:,} units, "
          f"{info['layers']} layers")
    print(f"  size          {human_bytes(info['total_bytes'])}, {info['parameters'] / 1e9:.2f}B parameters\n")
    rows = [[ROLE_BY_KEY[k].label, f"{v['tensors']:,}", f"{v['elements'] / 1e6:,.1f}M", human_bytes(v["bytes"])]
            for k, v in sorted(info["by_role"].items(), key=lambda kv: -kv[1]["bytes"])]
    print(table(["role", "tensors", "parameters", "bytes"], rows))
    layer_rows = [[k, human_bytes(v)] for k, v in sorted(info["by_layer"].items(),
                                                          key=lambda kv: (kv[0] == "none", int(kv[0]) if kv[0] != "none" else 0))]
    print()
    print(table(["layer", "bytes"], layer_rows))
    if args.tensors:
        print()
        print(table(["name", "shape", "dtype", "bytes", "shard"],
                    [[t.name, "x".join(map(str, t.shape)), t.dtype, human_bytes(t.nbytes), t.shard]
                     for t in project.inventory.tensors], right={3}))
    for warning in info["warnings"]:
        print(f"\nwarning: {warning}")
    return 0
