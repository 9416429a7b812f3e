"""Group tensors into the units MLX quantizes, under the names mlx-lm expects.

MLX quantizes modules, not tensors: one unit per Linear or Embedding, one per
projection of all experts of a layer (they become one stacked SwitchLinear),
and whatever a model class's `sanitize` splits or renames. Everything else
(norms, biases, routing bias, vision tensors) is a plain tensor unit that can
only be kept or dropped.
"""

from __future__ import annotations

import math

import re
from collections import defaultdict
from dataclasses import dataclass

from studio.core.architectures import Architecture, architecture_for
from studio.core.inventory import Inventory
from studio.core.roles import ROLE_BY_KEY, classify

_EXPERT = re.compile(r"^(?P<owner>.*)\.experts\.(?P<index>\d+)\.(?P<proj>[A-Za-z0-9_]+)\.(?P<leaf>weight|bias)$")


@dataclass(slots=True)
class Unit:
    """One thing the converter writes: a quantizable module or a plain tensor.

    `path` is the module path as mlx-lm's model class names it after sanitize
    (for a plain tensor, the tensor's full output name). `shape` is the output
    weight's logical shape: (out, in), (experts, out, in), or any shape for a
    plain tensor. `sources` are the logical source tensors in stacking order;
    `transform` says how they become the output.
    """

    path: str
    role: str
    layer: int | None
    kind: str  # "module" (quantizable weight) or "tensor"
    shape: tuple[int, ...]
    sources: tuple[str, ...]
    source_dtype: str
    transform: str = "copy"  # copy | stack | kv_b_embed_q | kv_b_unembed_out | split_gate | split_up | transpose

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def weight_name(self) -> str:
        return f"{self.path}.weight" if self.kind == "module" else self.path

    @property
    def in_features(self) -> int:
        return self.shape[-1]

    @property
    def experts(self) -> int:
        return self.shape[0] if self.kind == "module" and len(self.shape) == 3 else 1

    def quantizable(self, group_size: int) -> bool:
        # mlx-lm's rule: a module whose input dim the group size does not divide stays as it is.
        return self.kind == "module" and self.in_features % group_size == 0


def _is_module(role: str, shape: tuple[int, ...], leaf: str) -> bool:
    if leaf != "weight" or len(shape) not in (2, 3):
        return False
    return ROLE_BY_KEY[role].quantizable and role not in ("vision", "other")


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

    for (owner, proj, leaf), members in experts.items():
        members.sort()
        first = inventory.by_name[members[0][1]]
        role, layer = classify(members[0][1], num_layers)
        out_owner = arch.rename(owner)
        path = f"{out_owner}.{arch.expert_module}.{arch.expert_proj.get(proj, proj)}"
        shape = (len(members), *first.shape)
        kind = "module" if _is_module(role, first.shape, leaf) else "tensor"
        name = path if kind == "module" else f"{path}.{leaf}"
        units.append(Unit(name, role, layer, kind, shape, tuple(n for _, n in members), first.dtype, "stack"))

    units.sort(key=_sort_key)
    return units, arch
