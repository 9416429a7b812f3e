"""One decoder layer at a time: mlx-lm's own model classes, weights read from the source.

`Skeleton` instantiates the model class mlx-lm would load for the source's
config, lazily: its parameters are unevaluated random initialisers that hold
no memory. `load_layer(i)` reads layer i's units from the source (dequantized
with the converter's code), puts probes in place of its Linear and
SwitchLinear modules and loads everything else (norms, biases, router bias) in
float32; `free_layer(i)` drops it again. Only layer i's weights are ever in
memory, plus the embedding or head while those run.
"""

from __future__ import annotations

from collections import defaultdict

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten

from studio.core.calibration.probes import LinearProbe, SwitchProbe, is_linear, is_switch
from studio.core.errors import StudioError
from studio.core.project import Project
from studio.core.model.unit_source import read_unit_rows, unit_values
from studio.core.model.unit import Unit


def _get(module, path: str):
    for part in path.split("."):
        module = module[int(part)] if isinstance(module, list) else getattr(module, part)
    return module


def _set(module, path: str, value) -> None:
    parent, _, leaf = path.rpartition(".")
    owner = _get(module, parent) if parent else module
    if isinstance(owner, list):
        owner[int(leaf)] = value
    else:
        setattr(owner, leaf, value)


def _rows(unit: Unit) -> int:
    return unit.shape[0] if len(unit.shape) >= 2 else 1


class Skeleton:
    def __init__(self, project: Project):
        from mlx_lm.utils import _get_classes

        self.project = project
        inventory = project.inventory
        config = dict(inventory.config)
        try:
            model_class, args_class = _get_classes(config)
            self.model = model_class(args_class.from_dict(config))
        except Exception as exc:  # an architecture mlx-lm does not know
            raise StudioError(f"mlx-lm cannot build a {inventory.model_type or 'model'} of this config to "
                              f"calibrate ({exc}).") from None
        self.reader = inventory.source.reader()
        units = project.units
        embedding = [u for u in units if u.role == "embedding" and u.kind == "module"]
        if not embedding:
            raise StudioError("calibration needs the model's token embedding; this model has none.")
        self.embedding = embedding[0]
        self.prefix = self.embedding.path.rpartition(".")[0]  # e.g. language_model.model
        self.text = _get(self.model, self.prefix)
        heads = [u for u in units if u.role == "lm_head" and u.kind == "module"]
        self.head = heads[0] if heads else None
        self.num_layers = project.num_layers
        self.by_layer: dict[int, list[Unit]] = defaultdict(list)
        for unit in units:
            if unit.layer is not None and unit.layer < self.num_layers and \
                    unit.path.startswith(f"{self.prefix}.layers.{unit.layer}."):
                self.by_layer[unit.layer].append(unit)
        self.probes: dict[str, LinearProbe | SwitchProbe] = {}

    def values(self, unit: Unit) -> mx.array:
        """The whole unit's values, dequantized, in the source's float dtype."""
        return unit_values(unit, read_unit_rows(self.reader, self.project.inventory, unit, 0, _rows(unit)))

    # ------------------------------------------------------------------ ends

    def embed(self, tokens: mx.array) -> mx.array:
        table = self.values(self.embedding)
        self.text.embed_tokens.weight = table
        h = self.text.embed_tokens(tokens).astype(mx.float32)
        mx.eval(h)
        self.text.embed_tokens.weight = mx.zeros((1, 1))
        return h

    def final_norm(self, h: mx.array) -> mx.array:
        name = f"{self.prefix}.norm.weight"
        for unit in self.project.units:
            if unit.path == name:
                self.text.norm.weight = self.values(unit).astype(mx.float32)
        return self.text.norm(h)

    # ------------------------------------------------------------------ layers

    def layer(self, index: int):
        return self.text.layers[index]

    def load_layer(self, index: int) -> dict[str, LinearProbe | SwitchProbe]:
        """Install layer `index`'s weights and probes; returns its probes by unit path."""
        layer = self.layer(index)
        base = f"{self.prefix}.layers.{index}."
        units = self.by_layer.get(index, [])
        biases = {u.path[: -len(".bias")]: u for u in units if u.kind == "tensor" and u.path.endswith(".bias")}
        probes: dict[str, LinearProbe | SwitchProbe] = {}
        plain: list[tuple[str, mx.array]] = []
        consumed: set[str] = set()
        for unit in units:
            if unit.kind != "module":
                continue
            rel = unit.path[len(base):]
            try:
                module = _get(layer, rel)
            except (AttributeError, IndexError, KeyError, ValueError):
                module = None
            bias_unit = biases.get(unit.path)
            if is_linear(module) or is_switch(module):
                bias = self.values(bias_unit) if bias_unit is not None else None
                consumed |= {bias_unit.path} if bias_unit is not None else set()
                if is_linear(module):
                    probe = LinearProbe(unit, self.values(unit), bias)
                else:
                    parts = [read_unit_rows(self.reader, self.project.inventory, unit, e, e + 1)
                             for e in range(unit.shape[0])]
                    probe = SwitchProbe(unit, parts, bias)
                _set(layer, rel, probe)
                probes[unit.path] = probe
            else:  # a module kind the probes do not cover: loaded as it is, measured by nobody
                plain.append((f"{rel}.weight", self.values(unit).astype(mx.float32)))
        for unit in units:
            if unit.kind == "tensor" and unit.path not in consumed:
                value = self.values(unit)
                if mx.issubdtype(value.dtype, mx.floating):
                    value = value.astype(mx.float32)
                plain.append((unit.path[len(base):], value))
        layer.update(tree_unflatten(plain), strict=False)
        mx.eval(layer.parameters())
        self.probes.update(probes)
        return probes

    def free_layer(self, index: int) -> None:
        self.text.layers[index] = nn.Module()
        self.probes = {}
        mx.clear_cache()

    def head_weight(self) -> mx.array:
        if self.head is not None:
            return self.values(self.head)
        return self.values(self.embedding)  # tied
