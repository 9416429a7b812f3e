"""Group tensors into the units MLX quantizes, under the names mlx-lm expects.

MLX quantizes modules, not tensors: one unit per Linear or Embedding, one per
projection of all experts of a layer (they become one stacked SwitchLinear),
and whatever a model class's `sanitize` splits or renames. Everything else
(norms, biases, routing bias, vision tensors) is a plain tensor unit that can
only be kept or dropped.
"""

from __future__ import annotations

import re
from collections import defaultdict

from studio.core.model.architectures import Architecture, architecture_for
from studio.core.model.inventory import Inventory
from studio.core.model.roles import classify
from studio.core.model.unit import Unit, is_module
from studio.core.validation.tensors import check_expert_stack, expected_experts

_EXPERT = re.compile(r"^(?P<owner>.*)\.experts\.(?P<index>\d+)\.(?P<proj>[A-Za-z0-9_]+)\.(?P<leaf>weight|bias)$")


def _sort_key(unit: Unit):
    if unit.layer is None:
        order = -1 if unit.role == "embedding" else 10**9
        return (order, 0, unit.path)
    return (unit.layer, 1, unit.path)


def build_units(inventory: Inventory) -> tuple[list[Unit], Architecture]:
    """Every tensor of the inventory, in exactly one unit, with mlx-lm's output names."""
    arch = architecture_for(inventory)
    num_layers = inventory.text_config.get("num_hidden_layers")
    units: list[Unit] = []
    experts: dict[tuple[str, str, str], list[tuple[int, str]]] = defaultdict(list)

    for tensor in inventory.tensors:
        match = _EXPERT.match(tensor.name)
        if match and arch.stacks_experts:
            key = (match["owner"], match["proj"], match["leaf"])
            experts[key].append((int(match["index"]), tensor.name))
            continue
        units.extend(arch.units_for(tensor, classify(arch.rename(tensor.name), num_layers), inventory))

    expected = expected_experts(inventory.text_config)
    for (owner, proj, leaf), members in experts.items():
        members.sort()
        first = inventory.by_name[members[0][1]]
        role, layer = classify(members[0][1], num_layers)
        out_owner = arch.rename(owner)
        path = f"{out_owner}.{arch.expert_module}.{arch.expert_proj.get(proj, proj)}"
        check_expert_stack(path, members, inventory.by_name, expected)
        shape = (len(members), *first.shape)
        kind = "module" if is_module(role, first.shape, leaf) else "tensor"
        name = path if kind == "module" else f"{path}.{leaf}"
        units.append(Unit(name, role, layer, kind, shape, tuple(n for _, n in members), first.dtype, "stack"))

    units.sort(key=_sort_key)
    return units, arch
